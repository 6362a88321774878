"""Time the detect stage (detect.run.run_detectors) alone on certificate tables of several sizes.

Run:  python benchmarks/bench_detect.py [--sizes 100000 1000000] [--table certs.parquet ...] [--seed 5] [--as-scan]

Each table is detected in a fresh process, so each peak RSS is its own: the figures are the wall
seconds of run_detectors, the process's RSS before it, its peak during it (growth = peak - before)
and the findings per code. `--sizes` builds synthetic tables (make_table: the bench_million mix of
subscribers, plus revocations with and without a reissue, typo neighbours of the SANs, of the
subject O and of the suffix, IP, internal and invalid names, CN-only certificates, bundles,
over-long validity and forbidden CRL reasons), `--table` reads a scan's certs.parquet (e.g. one of
`ctscan scan --source files /tmp/ctscan-million-100000/pem ...`). With two sizes or more it prints
each one's ratio to the first: detect should grow about linearly. The load average and the CPU
seconds are printed with each figure, since other work on the machine skews the wall time.
`--as-scan` times detect as `ctscan scan --registration off` runs it: the names classified and the
name table built beforehand (the pipeline's registrable domains), outside the timing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_TLDS = ["com", "net", "org", "es", "de", "co.uk", "fr", "io", "com.es", "pt", "pl"]
_FORMS = ["S.L.", "SLU", "S.A.", "GmbH & Co. KG", "Ltd", "Inc.", "", "SAS"]
_REASONS = ["", "", "unspecified", "keyCompromise", "superseded", "certificateHold", "cessationOfOperation"]


def _typo(label: str, rng: random.Random) -> str:
    """label with one omission, substitution or adjacent transposition."""
    i = rng.randrange(len(label) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        return label[:i] + label[i + 1:]
    if kind == 1:
        return label[:i] + rng.choice(_LETTERS.replace(label[i], "")) + label[i + 1:]
    return label[:i] + label[i + 1] + label[i] + label[i + 2:] if label[i] != label[i + 1] else label[:i] + label[i + 1:]


def make_table(n: int, seed: int = 5) -> pd.DataFrame:
    """n certificates of about 0.4 n subscribers over 900 days, with every kind of finding in it (see the docstring)."""
    rng = random.Random(seed)
    subscribers = max(1, int(0.4 * n))
    labels = ["".join(rng.choice(_LETTERS) for _ in range(rng.randint(6, 14))) for _ in range(subscribers)]
    tlds = [rng.choice(_TLDS) for _ in range(subscribers)]
    start = pd.Timestamp("2023-01-01", tz="UTC").value // 1000
    span = 900 * 86_400_000_000
    rows = []
    for i in range(n):
        s = i if i < subscribers else rng.randrange(subscribers)
        label, tld = labels[s], tlds[s]
        dom = f"{label}.{tld}"
        names = [dom, "www." + dom]
        roll = rng.random()
        if roll < 0.01:
            names.append(f"mail.{_typo(label, rng)}.{tld}")  # a typo on the certificate itself
        elif roll < 0.015:
            names = [f"{_typo(label, rng)}.{tld}"]  # a typo alone: its O or the subscriber's other certificates say so
        elif roll < 0.02:
            names.append(f"{label}.{rng.choice(['ne', 'co', 'ec', 'pt', 'it'])}")  # suffix typos
        elif roll < 0.025:
            names.append("mail." + f"{labels[rng.randrange(subscribers)]}.{rng.choice(_TLDS)}")
        elif roll < 0.03:
            names.append(rng.choice(["intranet", "host.local", "exchange01", "bad_-name.com", "-x.com", "com"]))
        elif roll < 0.033:
            names.append(rng.choice(["*." + dom, dom.upper(), dom + ".", "xn--mnchen-3ya." + tld, "a.b.c." + dom]))
        elif roll < 0.034:
            names = [f"{labels[rng.randrange(subscribers)]}.{rng.choice(_TLDS)}" for _ in range(25)]  # a bundle
        ips = [f"10.{rng.randrange(256)}.{rng.randrange(256)}.1"] if rng.random() < 0.005 else []
        cn = names[0] if names else None
        if rng.random() < 0.01:
            names, cn = [], dom  # a legacy certificate: its host name only in the CN
        org = f"{label.upper()} {rng.choice(_FORMS)}".strip() if rng.random() < 0.9 else None
        nb = start + rng.randrange(span)
        days = rng.choice([90, 90, 90, 365, 398, 399, 800])
        revoked, reason = None, ""
        if rng.random() < (0.3 if roll < 0.015 else 0.02):  # typos get revoked (and corrected) more often
            revoked = nb + rng.randrange(1, 400) * 3_600_000_000
            reason = rng.choice(_REASONS)
        rows.append((f"{rng.getrandbits(256):064x}", f"{i:x}", cn, org, names, ips, nb, nb + days * 86_400_000_000,
                     revoked, reason, f"{rng.getrandbits(64):016x}"))
        if revoked is not None and rng.random() < 0.5:  # the reissue: the typo fixed, or the same names again
            fixed = [x for x in names if x.endswith(dom)] or [dom]
            rows.append((f"{rng.getrandbits(256):064x}", f"{i:x}r", fixed[0], org, fixed, [],
                         revoked + rng.randrange(-3, 24) * 3_600_000_000, revoked + 90 * 86_400_000_000, None, "",
                         f"{rng.getrandbits(64):016x}"))
    cols = ["sha256", "serial", "subject_cn", "subject_o", "san_dns", "san_ip", "not_before", "not_after",
            "revoked_at", "revocation_reason", "spki_sha256"]
    frame = pd.DataFrame(rows, columns=cols)
    for col in ("not_before", "not_after", "revoked_at"):
        frame[col] = pd.to_datetime(frame[col], unit="us", utc=True)
    frame["revocation_source"] = np.where(frame["revoked_at"].notna(), "crl", "")
    frame["subject_dn"] = "CN=" + frame["subject_cn"].fillna("") + ",O=" + frame["subject_o"].fillna("")
    frame["issuer_dn"] = "CN=Bench CA"
    frame["issuer_key_id"] = "00"
    frame["parse_note"] = ""
    from scanner.core.records import CERT_COLUMNS, coerce

    return coerce(frame, CERT_COLUMNS)


def _one(table: Path, as_scan: bool = False) -> dict:
    """Detect over one table in this process: the figures as a dict."""
    from scanner.core.config import Config
    from scanner.core.records import CERT_COLUMNS, REGISTRATION_COLUMNS, empty_frame
    from scanner.detect.run import run_detectors
    from scanner.parse.domains import classify_all, registrable_domains
    from scanner.scale.columnar import read_parquet

    certs = read_parquet(table, CERT_COLUMNS)
    config = Config(out_dir=Path(tempfile.gettempdir()))
    classified = None
    if as_scan:  # what the pipeline has done before detect (its registrable domains)
        classified = classify_all(certs)
        registrable_domains(certs, config.max_sans_per_cert, classified)
    before = _rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    findings = run_detectors(certs, empty_frame(REGISTRATION_COLUMNS), config, classified=classified)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": len(certs), "seconds": seconds, "cpu": cpu, "rss_before_mib": before, "peak_mib": peak,
            "findings": findings["code"].value_counts().to_dict(), "load": os.getloadavg()}


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    """Build or read each table, detect over each in a fresh process, print the figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--table", type=Path, nargs="*", default=[])
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--as-scan", action="store_true", help="names classified beforehand, as a scan does")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # the child process: one table
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_one(args.one, args.as_scan)))
        return
    from scanner.core.records import CERT_COLUMNS
    from scanner.scale.columnar import write_parquet

    with tempfile.TemporaryDirectory(prefix="ctscan-bench-detect-") as tmp:
        tables = list(args.table)
        for n in args.sizes:
            t0 = time.perf_counter()
            path = Path(tmp) / f"certs-{n}.parquet"
            write_parquet(make_table(n, args.seed), path, CERT_COLUMNS)
            print(f"built {n:,} synthetic certificates in {time.perf_counter() - t0:.1f} s", flush=True)
            tables.append(path)
        first = None
        for path in tables:
            out = subprocess.run([sys.executable, __file__, "--one", str(path), *(["--as-scan"] if args.as_scan else [])],
                                 check=True, capture_output=True, text=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            ratio = ""
            if first is None:
                first = r
            else:
                ratio = (f"  x{r['seconds'] / first['seconds']:.1f} time, x{r['rows'] / first['rows']:.1f} rows vs "
                         f"the first")
            print(f"{path.name}: {r['rows']:,} rows  detect {r['seconds']:.2f} s (CPU {r['cpu']:.2f} s)  RSS {r['rss_before_mib']:.0f} MiB "
                  f"before, peak {r['peak_mib']:.0f} MiB (+{r['peak_mib'] - r['rss_before_mib']:.0f})  "
                  f"load {r['load'][0]:.2f}{ratio}", flush=True)
            print(f"    findings {r['findings']}", flush=True)


if __name__ == "__main__":
    main()
