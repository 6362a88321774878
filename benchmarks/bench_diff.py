"""Benchmark: `diff_scans` of two 1,000,000-certificate scans — wall time and peak RSS, against a bare merge.

Run:  python benchmarks/bench_diff.py [--certs 1000000] [--seed 5]

A child process builds both scans' tables directly as DataFrames with the record schemas (no parsing)
and writes them with scanner.scale.columnar, so this process starts small. The new scan drops 1% of the
old selection, adds 5% new certificates, revokes 0.5% more, and loses or gains a share of the findings.
Then, in this process: the baseline (the two sha256 columns read from Parquet and merged with pandas,
the least any diff by certificate must do), then diff_scans and write_diff. Prints each wall time, the
ratio, and the peak RSS after each (ru_maxrss, so the diff's peak includes the baseline's, which is lower).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scanner.control.diff import diff_scans, write_diff
from scanner.core.records import CERT_COLUMNS, FINDING_CODES, FINDING_COLUMNS, coerce
from scanner.scale.columnar import write_tables

_CODES = ["typo_neighbour", "unregistered_domain", "early_revocation", "revoke_reissue", "internal_name", "ip_san"]


def rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _hashes(n: int) -> list[str]:
    text = os.urandom(32 * n).hex()
    return [text[i * 64:(i + 1) * 64] for i in range(n)]


def _certs(sha: list[str], rng: np.random.Generator) -> pd.DataFrame:
    n = len(sha)
    start = pd.Timestamp("2022-01-01", tz="UTC")
    not_before = start + pd.to_timedelta(rng.integers(0, 3 * 365 * 86400, size=n), unit="s")
    orgs = np.array([f"Subscriber {i} S.L." for i in range(max(1, n // 10))], dtype=object)
    org = orgs[rng.integers(0, len(orgs), size=n)]
    names = [f"www{i}.example-{i % 50_000}.com" for i in range(n)]
    revoked = rng.random(n) < 0.02
    revoked_at = pd.Series(not_before + pd.to_timedelta(rng.integers(60, 30 * 86400, size=n), unit="s"))
    frame = pd.DataFrame({
        "sha256": sha, "cert_sha256": sha, "precert_sha256": "", "is_precert": False,
        "serial": [h[:32] for h in sha], "issuer_dn": "CN=Bench Issuing CA,O=ctscan,C=XX",
        "subject_o": org, "subject_cn": names, "san_dns": [[x] for x in names],
        "not_before": not_before, "not_after": not_before + pd.Timedelta(days=365),
        "revoked_at": revoked_at.where(revoked), "source": "files", "provenance": "bench",
    })
    return coerce(frame, CERT_COLUMNS)


def _findings(sha: list[str], rng: np.random.Generator, share: float) -> pd.DataFrame:
    picked = rng.choice(len(sha), size=int(len(sha) * share), replace=False)
    codes = rng.choice(_CODES, size=len(picked))
    frame = pd.DataFrame({"sha256": [sha[i] for i in picked], "code": codes,
                          "severity": [FINDING_CODES[c].severity for c in codes],
                          "name": "", "related_sha256": "", "evidence": "a bench finding", "detail": ""})
    return coerce(frame, FINDING_COLUMNS)


def build(root: Path, count: int, seed: int) -> None:
    """Write the old and new scans' tables and summary.json under root/old and root/new."""
    rng = np.random.default_rng(seed)
    old_sha = _hashes(count)
    old = _certs(old_sha, rng)
    old_findings = _findings(old_sha, rng, 0.03)
    kept = old[rng.random(count) >= 0.01]
    added = _certs(_hashes(int(count * 0.05)), rng)
    new = pd.concat([kept, added], ignore_index=True)
    newly = new["revoked_at"].isna() & (rng.random(len(new)) < 0.005)
    new.loc[newly, "revoked_at"] = new.loc[newly, "not_before"] + pd.Timedelta(hours=10)
    kept_findings = old_findings[old_findings["sha256"].isin(set(kept["sha256"])) & (rng.random(len(old_findings))
                                                                                    >= 0.1)]
    new_findings = pd.concat([kept_findings, _findings(new["sha256"].tolist(), rng, 0.005)], ignore_index=True)
    for name, certs, findings, as_of in (("old", old, old_findings, "2026-11-24T00:00:00Z"),
                                         ("new", new, new_findings, "2026-12-01T00:00:00Z")):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        write_tables(folder, {"certs.parquet": certs, "findings.parquet": findings})
        (folder / "summary.json").write_text(json.dumps({"report_as_of": as_of, "partial_reasons": []}))


def baseline(root: Path) -> int:
    """The bare merge: both scans' sha256 columns from Parquet, outer-merged with pandas; rows that differ."""
    sides = [pq.read_table(root / s / "certs.parquet", columns=["sha256"]).to_pandas() for s in ("old", "new")]
    merged = sides[0].merge(sides[1], on="sha256", how="outer", indicator=True)
    return int((merged["_merge"] != "both").sum())


def main() -> None:
    """Build the tables in a child, then time the baseline and the diff here."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)  # the child's job
    args = parser.parse_args()
    if args.build:
        build(args.build, args.certs, args.seed)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--build", str(root), "--certs", str(args.certs),
                        "--seed", str(args.seed)], check=True)
        print(f"built two scans of {args.certs:,} certificates in {time.perf_counter() - t0:.1f} s "
              f"(child process); RSS here {rss_mb():.0f} MiB")
        t0 = time.perf_counter()
        differ = baseline(root)
        base = time.perf_counter() - t0
        base_rss = rss_mb()
        print(f"baseline (bare pandas merge of the sha256 columns): {base:.2f} s, {differ:,} certificates differ, "
              f"peak RSS {base_rss:.0f} MiB")
        t0 = time.perf_counter()
        diff = diff_scans(root / "old", root / "new")
        compared = time.perf_counter() - t0
        compared_rss = rss_mb()
        t0 = time.perf_counter()
        write_diff(diff, root / "diff")
        written = time.perf_counter() - t0
        counts = diff.changes["kind"].value_counts().to_dict()
        print(f"diff_scans: {compared:.2f} s ({compared / base:.1f}x the baseline), peak RSS {compared_rss:.0f} MiB; "
              f"changes {counts}")
        print(f"write_diff (diff.csv, diff.xlsx, diff.md; {len(diff.changes):,} rows): {written:.2f} s, "
              f"peak RSS {rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()
