"""`ctscan watch --once` rounds with nothing new over a store of N certificates, and the alert ledger at 1M pairs.

Target (issue 15): a round with nothing new over a store of 1,000,000 certificates in under 10 s and 1 GB.
Prints, for N certificates read from the store (--source store, no network): a plain `ctscan scan` of the
same store (the baseline, in the same run), the first watch round (alerts everything to a no-op hook),
and a second round with nothing new, as wall seconds, peak RSS and the ratio to the scan; then the alert
bookkeeping alone (recording and looking up pending pairs) for PAIRS pairs, already all delivered.
Usage: python benchmarks/bench_watch.py [N_CERTS] [PAIRS] [--no-scan]   (--no-scan: the first round is the baseline)
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from corpus import make_corpus  # noqa: E402
from measure import measured  # noqa: E402

from scanner.sources.base import RawCert  # noqa: E402
from scanner.sources.store import CertStore  # noqa: E402
from tests.synth import der  # noqa: E402


def build_store(path: Path, crl_path: Path, n: int) -> None:
    """A store of n corpus certificates and the corpus CRL (made once per n, then reused)."""
    if path.exists() and crl_path.exists():
        return
    t = time.perf_counter()
    _, ders, crl = make_corpus(n, int(n * 0.6))
    with CertStore(path) as store:
        for start in range(0, n, 10_000):
            store.put_many(RawCert(d, "files", f"corpus#{start + i}") for i, d in enumerate(ders[start:start + 10_000]))
    crl_path.write_bytes(der(crl))
    print(f"store: {n:,} certificates written in {time.perf_counter() - t:.1f} s")


def ledger(pairs: int) -> None:
    """The alert bookkeeping of a round with nothing new over `pairs` pairs already delivered."""
    findings = [{"sha256": f"{i:064x}", "crtsh_url": "", "code": "early_revocation", "severity": "low",
                 "evidence": "Revoked 20.2 hours after notBefore.", "related_sha256": ""} for i in range(pairs)]
    with tempfile.TemporaryDirectory() as tmp, CertStore(Path(tmp) / "store.sqlite3") as store:
        t = time.perf_counter()
        store.alert_record("exec:true", "2026-12-01T14:00:00Z", "first", findings)
        first = time.perf_counter() - t
        store.alert_delivered("first")
        t = time.perf_counter()
        new = store.alert_record("exec:true", "2026-12-01T15:00:00Z", "second", findings)
        pending = store.alert_pending("exec:true")
        again = time.perf_counter() - t
    assert new == 0 and not pending
    print(f"alert ledger, {pairs:,} pairs: first round records them in {first:.1f} s; a round with nothing new "
          f"checks them all and finds nothing pending in {again:.1f} s; "
          f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    skip_scan = "--no-scan" in sys.argv  # at 1M the plain scan costs what the first round costs: skip it
    n = int(args[0]) if args else 50_000
    pairs = int(args[1]) if len(args) > 1 else 1_000_000
    base = Path(tempfile.gettempdir()) / f"ctscan-bench-watch-{n}"
    base.mkdir(exist_ok=True)
    store, crl = base / "store.sqlite3", base / "ca.crl"
    build_store(store, crl, n)
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--source", "store", "--store", str(store), "--crl", str(crl), "--registration", "off",
                  "--cache", str(Path(tmp) / "cache"), "--no-progress", "-q"]
        scan = 0.0
        if not skip_scan:
            scan, scan_rss = measured(["scan", *common, "--out", str(Path(tmp) / "scan")])
            print(f"scan of the store: {scan:.1f} s wall, peak RSS {scan_rss:.0f} MiB (the baseline)")
        watch = ["watch", "--once", *common, "--out", str(Path(tmp) / "rounds"), "--alert-exec", "true"]
        for label in ("first round (alerts everything)", "round with nothing new", "another round with nothing new"):
            wall, rss = measured(watch)
            scan = scan or wall  # without the plain scan, the first round is the baseline
            print(f"{label}: {wall:.1f} s wall ({wall / scan:.3f} x the {'scan' if not skip_scan else 'first round'}), "
                  f"peak RSS {rss:.0f} MiB (goal at 1,000,000 certificates: under 10 s and 1024 MiB)")
            latest = json.loads((Path(tmp) / "rounds" / "latest" / "summary.json").read_text())
            stages = ", ".join(f"{k} {v:.1f} s" for k, v in latest.get("stage_seconds", {}).items())
            print(f"  in the pipeline: {latest.get('wall_seconds', 0):.1f} s ({stages}); reused: "
                  f"{latest.get('reused_from') is not None}, parsed now: {latest.get('round', {}).get('parsed_now')}")
        latest = json.loads((Path(tmp) / "rounds" / "latest" / "alerts.json").read_text())
        print(f"last round: {latest['alerting_findings']:,} alerting findings, new pairs {latest['new_pairs']}")
    ledger(pairs)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
