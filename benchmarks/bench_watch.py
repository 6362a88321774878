"""`ctscan watch --once` rounds with nothing new over a store of N certificates, and the alert ledger at 1M pairs.

Target (issue 15): a round with nothing new over a store of 1,000,000 certificates in under 10 s and 1 GB.
The store holds bench_million's corpus of N entries (certificates, 30% with their precertificate, 90-day
validity, 2% revoked: about 1% of certificates suspect, as at a real CA), read with --source store, no
network. Prints a plain `ctscan scan` of the same store (the baseline, in the same run), the first watch
round (alerts everything to a no-op hook) and two rounds with nothing new, as wall seconds, peak RSS and
the ratio to the scan; then the alert bookkeeping alone (recording and looking up pending pairs) for
PAIRS pairs, already all delivered.
With --keep-rounds the rounds folder is kept beside the corpus and a later run starts from its latest
round (only rounds with nothing new are measured then, against the first round's recorded wall).
Usage: python benchmarks/bench_watch.py [N] [PAIRS] [--no-scan] [--keep-rounds]
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench_million import corpus, store  # noqa: E402
from measure import measured  # noqa: E402

from scanner.sources.store import CertStore  # noqa: E402


def ledger(pairs: int) -> None:
    """The alert bookkeeping of a round with nothing new over `pairs` pairs already delivered."""
    findings = [{"sha256": f"{i:064x}", "crtsh_url": "", "code": "early_revocation", "severity": "low",
                 "evidence": "Revoked 20.2 hours after notBefore.", "related_sha256": ""} for i in range(pairs)]
    with tempfile.TemporaryDirectory() as tmp, CertStore(Path(tmp) / "store.sqlite3") as db:
        t = time.perf_counter()
        db.alert_record("exec:true", "2026-12-01T14:00:00Z", "first", findings)
        first = time.perf_counter() - t
        db.alert_delivered("first")
        t = time.perf_counter()
        new = db.alert_record("exec:true", "2026-12-01T15:00:00Z", "second", findings)
        pending = db.alert_pending("exec:true")
        again = time.perf_counter() - t
    assert new == 0 and not pending
    print(f"alert ledger, {pairs:,} pairs: first round records them in {first:.1f} s; a round with nothing new "
          f"checks them all and finds nothing pending in {again:.1f} s; "
          f"peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    skip_scan = "--no-scan" in sys.argv  # at 1M the plain scan costs what the first round costs: skip it
    keep = "--keep-rounds" in sys.argv
    n = int(args[0]) if args else 50_000
    pairs = int(args[1]) if len(args) > 1 else 1_000_000
    cache = Path(os.environ.get("CTSCAN_BENCH_CACHE", tempfile.gettempdir()))
    base = corpus(n, cache)
    db, crl = store(base), base / "ca.crl"
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        if not keep:  # the rounds' alert ledger lives in the store: a fresh copy alerts everything again
            db = Path(shutil.copy2(db, Path(tmp) / "store.sqlite3"))
        rounds = base / "watch-rounds" if keep else Path(tmp) / "rounds"
        first_wall = base / "watch-first-round.json"
        common = ["--source", "store", "--store", str(db), "--crl", str(crl), "--registration", "off",
                  "--cache", str((base if keep else Path(tmp)) / "watch-cache"), "--no-progress", "-q"]
        scan = 0.0
        if not skip_scan:
            scan, scan_rss = measured(["scan", *common, "--out", str(Path(tmp) / "scan")])
            print(f"scan of the store: {scan:.1f} s wall, peak RSS {scan_rss:.0f} MiB (the baseline)")
        watch = ["watch", "--once", *common, "--out", str(rounds), "--alert-exec", "true"]
        labels = ["first round (alerts everything)", "round with nothing new", "another round with nothing new"]
        if keep and (rounds / "latest").exists() and first_wall.exists():
            scan = scan or json.loads(first_wall.read_text())["wall"]
            labels = labels[1:]
            print(f"rounds kept in {rounds}: the first round took {scan:.1f} s")
        for label in labels:
            wall, rss = measured(watch)
            if not scan:  # without the plain scan, the first round is the baseline
                scan = wall
                if keep:
                    first_wall.write_text(json.dumps({"wall": wall, "rss": rss}))
            print(f"{label}: {wall:.1f} s wall ({wall / scan:.3f} x the {'scan' if not skip_scan else 'first round'}), "
                  f"peak RSS {rss:.0f} MiB (goal at 1,000,000 certificates: under 10 s and 1024 MiB)")
            latest = json.loads((rounds / "latest" / "summary.json").read_text())
            stages = ", ".join(f"{k} {v:.1f} s" for k, v in latest.get("stage_seconds", {}).items())
            print(f"  in the pipeline: {latest.get('wall_seconds', 0):.1f} s ({stages}); reused: "
                  f"{latest.get('reused_from') is not None}, parsed now: {latest.get('round', {}).get('parsed_now')}")
        latest = json.loads((rounds / "latest" / "alerts.json").read_text())
        print(f"last round: {latest['alerting_findings']:,} alerting findings, new pairs {latest['new_pairs']}")
    ledger(pairs)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
