"""`ctscan scan --registration off` over N single-certificate PEM files: wall, peak RSS and the stage split.

Target (issue 17): N = 1,000,000 files (30% of certificates with their precertificate kept, about
400,000 subscribers): peak RSS <= 2 GB and wall <= 120 s on a 2-core machine; 100,000 files in at
most 1/10.5 of that. Also from the store (--source store) and from 100 PEM bundles (--sources).
The corpus is generated once per N into a cache folder (CTSCAN_BENCH_CACHE, default the temp dir)
and reused. Machine load varies, so every run prints a calibration (a bare cryptography parse loop
timed in this process) and, with several N, the ratio of each to the first.
Usage: python benchmarks/bench_million.py [N ...] [--sources files,bundles,store] [--workers K]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from corpus import random_label  # noqa: E402
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from measure import measured  # noqa: E402

from tests.synth import TestCA, der, new_key, pem, utc  # noqa: E402

PRECERT_SHARE = 0.3
SUBSCRIBERS_PER_FILE = 0.4  # 1,000,000 files: about 400,000 registrable domains
FILES_PER_FOLDER = 1000
SPREAD_DAYS = 900  # notBefore spread evenly over this many days from 2023-01-01, whatever N
CA_NAME = "ctscan Million CA"


def _domains(n: int) -> list[str]:
    rng = random.Random(17)
    tlds = ["com", "net", "org", "es", "de", "co.uk", "fr", "io"]
    return [f"r{random_label(rng)}.{rng.choice(tlds)}" for _ in range(n)]


def _write_range(folder: str, ca_key_pem: bytes, n_certs: int, n_domains: int, lo: int, hi: int) -> list:
    """Certificates lo..hi-1 (and their kept precertificates) as PEM files; their revocations."""
    key = serialization.load_pem_private_key(ca_key_pem, None)
    ca = TestCA(name=CA_NAME, key=key)
    leaf_keys = [new_key() for _ in range(16)]
    domains = _domains(n_domains)
    start, step = utc("2023-01-01T00:00"), timedelta(days=SPREAD_DAYS) / n_certs
    revoked = []
    for i in range(lo, hi):
        rng = random.Random(i)
        dom = domains[i] if i < n_domains else domains[rng.randrange(n_domains)]
        names = [dom, "www." + dom] + (["mail." + domains[rng.randrange(n_domains)]] if rng.random() < 0.05 else [])
        nb = start + step * i
        kinds = (False, True) if rng.random() < PRECERT_SHARE else (False,)
        for precert in kinds:
            cert = ca.issue(serial=0x100000 + i, not_before=nb, days=90, cn=names[0], precert=precert,
                            org=dom.split(".")[0].upper() + " S.L.", dns=names, key=leaf_keys[i % len(leaf_keys)])
            j = 2 * i + precert
            path = Path(folder) / f"{j // (2 * FILES_PER_FOLDER):05d}" / f"{j}.pem"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(pem(cert))
        if rng.random() < 0.02:
            revoked.append((0x100000 + i, nb + timedelta(hours=rng.randint(1, 400)), None))
    return revoked


def corpus(n_files: int, cache: Path) -> Path:
    """The corpus folder of n_files PEM files (pem/), its CRL (ca.crl); generated once, then reused."""
    base = cache / f"ctscan-million-{n_files}"
    if (base / "done").exists():
        return base
    t = time.perf_counter()
    n_certs = round(n_files / (1 + PRECERT_SHARE))  # about; the precertificates are drawn at random
    n_domains = int(n_files * SUBSCRIBERS_PER_FILE)
    (base / "pem").mkdir(parents=True, exist_ok=True)
    ca = TestCA(name=CA_NAME)
    key_pem = ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    step = 20_000
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        parts = pool.map(_write_range, *zip(*[(str(base / "pem"), key_pem, n_certs, n_domains, lo,
                                                min(lo + step, n_certs)) for lo in range(0, n_certs, step)]))
        revoked = [r for part in parts for r in part]
    crl = ca.crl(revoked, this_update=utc("2023-01-01T00:00") + timedelta(days=SPREAD_DAYS + 1))
    (base / "ca.crl").write_bytes(der(crl))
    files = sum(1 for _ in (base / "pem").rglob("*.pem"))
    (base / "done").write_text(json.dumps({"files": files, "certificates": n_certs, "domains": n_domains}))
    print(f"corpus: {files:,} PEM files ({n_certs:,} certificates, {n_domains:,} subscribers) written to {base} "
          f"in {time.perf_counter() - t:.0f} s")
    return base


def bundles(base: Path, count: int = 100) -> Path:
    """The corpus's PEM files concatenated into `count` bundles (made once)."""
    out, done = base / f"bundles-{count}", base / f"bundles-{count}.done"  # the marker outside: it would be read
    if done.exists():
        return out
    out.mkdir(exist_ok=True)
    files = sorted((base / "pem").rglob("*.pem"))
    per = -(-len(files) // count)
    for k in range(0, len(files), per):
        (out / f"bundle-{k // per:03d}.pem").write_bytes(b"".join(p.read_bytes() for p in files[k:k + per]))
    done.write_text("")
    return out


def store(base: Path) -> Path:
    """The corpus read into a certificate store (made once)."""
    from scanner.sources.base import RawCert
    from scanner.sources.files import read_files
    from scanner.sources.store import CertStore

    path = base / "store.sqlite3"
    if (base / "store.done").exists():
        return path
    path.unlink(missing_ok=True)
    with CertStore(path) as db:
        batch: list[RawCert] = []
        for item in read_files([base / "pem"]):
            if isinstance(item, RawCert):
                batch.append(item)
            if len(batch) >= 10_000:
                db.put_many(batch)
                batch = []
        db.put_many(batch)
    (base / "store.done").write_text("")
    return path


def calibration(base: Path, n: int = 5000) -> float:
    """Certificates per second of a bare cryptography load loop over the corpus, in this process (machine load)."""
    ders = [x509.load_pem_x509_certificate(p.read_bytes()).public_bytes(serialization.Encoding.DER)
            for p in sorted((base / "pem" / "00000").glob("*.pem"))[:n]]
    t = time.perf_counter()
    for d in ders:
        c = x509.load_der_x509_certificate(d)
        c.subject.rfc4514_string()
        c.extensions  # noqa: B018
    return len(ders) / (time.perf_counter() - t)


def scan(label: str, source_args: list[str], crl: Path, workers: int | None) -> dict:
    """One scan; prints its wall, peak RSS and stage split; returns the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        extra = ["--workers", str(workers)] if workers else []
        wall, rss = measured(["scan", *source_args, "--crl", str(crl), "--registration", "off", "--cache",
                              str(Path(tmp) / "cache"), "--no-progress", "-q", "--out", str(out), *extra])
        summary = json.loads((out / "summary.json").read_text())
    stages = summary.get("stage_seconds", {})
    stage_rss = summary.get("stage_rss_mib", {})
    split = ", ".join(f"{k} {v:.1f} s" + (f" / {stage_rss[k]:.0f} MiB" if k in stage_rss else "")
                      for k, v in stages.items())
    print(f"{label}: {wall:.1f} s wall (goal at 1M <= 120), peak RSS {rss:.0f} MiB (goal <= 2048); "
          f"{summary['read']:,} read, {summary['certificates']:,} certificates, "
          f"{summary['precertificate_pairs_merged']:,} pairs merged, {sum(summary['findings'].values()):,} findings")
    print(f"  stages (wall / peak RSS of the main process): {split}")
    return {"wall": wall, "rss": rss, "stages": stages, "stage_rss": stage_rss}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("n", nargs="*", type=int, default=[100_000], help="PEM files in the corpus (several: compared)")
    p.add_argument("--sources", default="files", help="comma-separated: files, bundles, store")
    p.add_argument("--workers", type=int, default=None, help="--workers for the scan (default: its own)")
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("CTSCAN_BENCH_CACHE", tempfile.gettempdir())))
    args = p.parse_args()
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} cores")
    first: dict | None = None
    for n in args.n:
        base = corpus(n, args.cache)
        rate = calibration(base)
        print(f"N = {n:,}: calibration, bare cryptography loop in this process: {rate:,.0f} certs/s")
        for source in args.sources.split(","):
            if source == "files":
                src = ["--source", "files", str(base / "pem")]
            elif source == "bundles":
                src = ["--source", "files", str(bundles(base))]
            elif source == "store":
                src = ["--source", "store", "--store", str(store(base))]
            else:
                raise SystemExit(f"unknown source {source!r}: files, bundles or store")
            got = scan(f"N = {n:,}, {source}", src, base / "ca.crl", args.workers)
            if source == "files":
                if first is None:
                    first = {**got, "n": n, "rate": rate}
                elif n != first["n"]:
                    scale = got["wall"] / first["wall"]
                    print(f"  scaling: {scale:.2f} x the wall of N = {first['n']:,} for {n / first['n']:.0f} x "
                          f"the files (goal <= 10.5 for 10 x); calibration ratio {rate / first['rate']:.2f}; "
                          f"RSS {got['rss'] / first['rss']:.2f} x")
    print(f"load average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
