"""How long write_reports takes for a large scan, against plain pandas to_csv + to_excel of the same suspects.

Run: python benchmarks/report_write.py [--rows 100000]
Prints seconds, rows per second and the ratio to the baseline measured in this same process.
"""

from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd

from scanner.core.records import (
    CERT_COLUMNS,
    ERROR_COLUMNS,
    FINDING_CODES,
    FINDING_COLUMNS,
    REGISTRATION_COLUMNS,
    empty_frame,
    frame_from_rows,
)
from scanner.report import write_reports


def synthetic_scan(rows: int, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """certs, findings and suspects frames shaped like a real scan's, with about 1.5 findings per cert."""
    rng = random.Random(seed)
    codes = list(FINDING_CODES)
    base = pd.Timestamp("2019-01-01T00:00:00Z")
    cert_rows, finding_rows, suspect_rows = [], [], []
    for i in range(rows):
        sha = f"{rng.getrandbits(256):064x}"
        nb = base + pd.Timedelta(minutes=rng.randrange(3_000_000))
        sans = [f"host{j}.customer{i}.example" for j in range(rng.randrange(1, 6))]
        revoked = nb + pd.Timedelta(hours=rng.randrange(1, 200)) if rng.random() < 0.2 else None
        cert_rows.append(
            {
                "sha256": sha,
                "cert_sha256": sha,
                "precert_sha256": f"{rng.getrandbits(256):064x}",
                "serial": f"{rng.getrandbits(128):032x}",
                "issuer_dn": "CN=Example Issuing CA,O=Example CA,C=ES",
                "subject_dn": f"CN={sans[0]},O=Customer {i}",
                "subject_cn": sans[0],
                "subject_o": f"Customer {i}" if i % 50 else f'=HYPERLINK("x{i}")',
                "san_dns": sans,
                "not_before": nb,
                "not_after": nb + pd.Timedelta(days=397),
                "revoked_at": revoked,
                "revocation_reason": "superseded" if revoked is not None else None,
            }
        )
        picked = rng.sample(codes, rng.choice((1, 1, 2)))
        for code in picked:
            finding_rows.append(
                {
                    "sha256": sha,
                    "code": code,
                    "severity": FINDING_CODES[code].severity,
                    "name": sans[0],
                    "evidence": f"{code} on {sans[0]}",
                }
            )
        suspect_rows.append(
            {
                "sha256": sha,
                "crtsh_url": f"https://crt.sh/?sha256={sha}",
                "serial": cert_rows[-1]["serial"],
                "subject_o": cert_rows[-1]["subject_o"],
                "subject_cn": sans[0],
                "sans": ";".join(sans),
                "not_before": nb,
                "not_after": nb + pd.Timedelta(days=397),
                "revoked_at": revoked,
                "signals": ";".join(picked),
                "score": sum(FINDING_CODES[c].weight for c in picked),
                "evidence": " | ".join(f"{c} on {sans[0]}" for c in picked),
            }
        )
    suspects = pd.DataFrame(suspect_rows).sort_values("score", ascending=False, kind="stable")
    return frame_from_rows(cert_rows, CERT_COLUMNS), frame_from_rows(finding_rows, FINDING_COLUMNS), suspects


def main() -> None:
    """Build a synthetic scan, time the baseline and write_reports, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    certs, findings, suspects = synthetic_scan(args.rows)
    print(f"rows (suspect certificates): {len(suspects):,}; findings: {len(findings):,}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        # pandas lets xlsxwriter turn the crt.sh URL strings into links and warn past Excel's cap
        warnings.filterwarnings("ignore", message="Ignoring URL")
        start = time.perf_counter()
        suspects.to_csv(out / "baseline.csv", index=False)
        with pd.ExcelWriter(out / "baseline.xlsx", engine="xlsxwriter") as xl:
            suspects.assign(
                not_before=suspects["not_before"].dt.tz_localize(None),
                not_after=suspects["not_after"].dt.tz_localize(None),
                revoked_at=pd.to_datetime(suspects["revoked_at"], utc=True).dt.tz_localize(None),
            ).to_excel(xl, sheet_name="All suspects", index=False)
        baseline = time.perf_counter() - start
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        files = write_reports(
            out / "reports",
            suspects,
            certs,
            findings,
            empty_frame(ERROR_COLUMNS),
            empty_frame(REGISTRATION_COLUMNS),
            {"read": len(certs)},
        )
        ours = time.perf_counter() - start
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        size = sum(p.stat().st_size for p in files.values())
        xlsx_rows = len(suspects) + len(findings)
    print(f"baseline (pandas to_csv + to_excel of the suspects only): {baseline:.2f} s")
    print(f"write_reports (all files, {len(files)} of them, {size / 1e6:.1f} MB): {ours:.2f} s")
    print(f"  XLSX rows (all suspects + per-problem sheets): {xlsx_rows:,} -> {xlsx_rows / ours:,.0f} rows/s")
    rows_ratio = xlsx_rows / len(suspects)
    print(f"ratio write_reports / baseline: {ours / baseline:.2f}x (ours writes {rows_ratio:.1f}x the rows)")
    print(f"peak RSS grew by {(rss_after - rss_before) / 1024:.0f} MiB during write_reports")


if __name__ == "__main__":
    main()
