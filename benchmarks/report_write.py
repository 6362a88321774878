"""How long write_reports takes for a large scan, file by file, against plain pandas to_csv of the same suspects.

Run: python benchmarks/report_write.py [--rows 100000] [--xlsx-rows CAP] [--profile]
Prints seconds per report file, rows per second and the ratio to the baseline measured in this same
process (machine load varies: compare ratios, and the load averages printed before and after).
--xlsx-rows: the XLSX row cap per sheet (default the writer's own; 0 for Excel's limit, as before the cap).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from scanner.core.records import (
    CERT_COLUMNS,
    ERROR_COLUMNS,
    FINDING_CODES,
    FINDING_COLUMNS,
    REGISTRATION_COLUMNS,
    coerce,
    empty_frame,
)
from scanner.report import csv_report, write_reports, xlsx_report


def synthetic_scan(rows: int, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """certs, findings and suspects frames shaped like a real scan's, with about 1.3 findings per cert."""
    rng = np.random.default_rng(seed)
    codes = np.array(list(FINDING_CODES))
    weights = np.array([FINDING_CODES[c].weight for c in codes])
    severities = np.array([FINDING_CODES[c].severity for c in codes])
    sha = [bytes(b).hex() for b in rng.integers(0, 256, size=(rows, 32), dtype=np.uint8)]
    pre = [bytes(b).hex() for b in rng.integers(0, 256, size=(rows, 32), dtype=np.uint8)]
    serial = [bytes(b).hex() for b in rng.integers(0, 256, size=(rows, 16), dtype=np.uint8)]
    n_sans = rng.integers(1, 6, size=rows)
    sans = [[f"host{j}.customer{i}.example" for j in range(k)] for i, k in enumerate(n_sans.tolist())]
    base = pd.Timestamp("2019-01-01T00:00:00Z")
    not_before = base + pd.to_timedelta(rng.integers(0, 3_000_000, size=rows), unit="min")
    revoked = pd.Series(not_before + pd.to_timedelta(rng.integers(1, 200, size=rows), unit="h"))
    revoked[rng.random(rows) >= 0.2] = pd.NaT
    org = [f"Customer {i}" if i % 50 else f'=HYPERLINK("x{i}")' for i in range(rows)]
    first = [names[0] for names in sans]
    certs = coerce(pd.DataFrame({
        "sha256": sha, "cert_sha256": sha, "precert_sha256": pre, "serial": serial,
        "issuer_dn": "CN=Example Issuing CA,O=Example CA,C=ES",
        "subject_dn": [f"CN={n},O={o}" for n, o in zip(first, org)], "subject_cn": first, "subject_o": org,
        "san_dns": sans, "not_before": not_before, "not_after": not_before + pd.Timedelta(days=397),
        "revoked_at": revoked, "revocation_reason": np.where(revoked.notna(), "superseded", None),
    }), CERT_COLUMNS)
    # one finding per certificate, a second for a third of them
    first_code = rng.integers(0, len(codes), size=rows)
    second = rng.random(rows) < 1 / 3
    second_code = (first_code + rng.integers(1, len(codes), size=rows)) % len(codes)
    cert_of = np.concatenate([np.arange(rows), np.flatnonzero(second)])
    code_of = np.concatenate([first_code, second_code[second]])
    names = np.array(first, dtype=object)[cert_of]
    findings = coerce(pd.DataFrame({
        "sha256": np.array(sha, dtype=object)[cert_of], "code": codes[code_of], "severity": severities[code_of],
        "name": names, "evidence": [f"{c} on {n}" for c, n in zip(codes[code_of], names)],
    }), FINDING_COLUMNS)
    signals = [f"{codes[a]};{codes[b]}" if two else str(codes[a])
               for a, b, two in zip(first_code, second_code, second)]
    suspects = pd.DataFrame({
        "sha256": sha, "crtsh_url": [f"https://crt.sh/?sha256={s.upper()}" for s in sha], "serial": serial,
        "subject_o": org, "subject_cn": first, "sans": [";".join(s) for s in sans],
        "not_before": not_before, "not_after": not_before + pd.Timedelta(days=397), "revoked_at": revoked,
        "signals": signals, "score": weights[first_code] + np.where(second, weights[second_code], 0.0),
        "evidence": [s.replace(";", " | ") for s in signals],
    }).sort_values("score", ascending=False, kind="stable")
    return certs, findings, suspects


def _timed(label: str, fn, rows: int, baseline: float | None = None) -> float:
    start = time.perf_counter()
    fn()
    took = time.perf_counter() - start
    ratio = f"; {took / baseline:.2f}x the baseline" if baseline else ""
    print(f"  {label}: {took:.2f} s ({rows / took:,.0f} rows/s){ratio}", flush=True)
    return took


def main() -> None:
    """Build a synthetic scan, time the baseline and each report file, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--xlsx-rows", type=int, default=None, help="XLSX rows per sheet (0: Excel's limit)")
    parser.add_argument("--profile", action="store_true", help="cProfile write_reports, print the top calls")
    args = parser.parse_args()
    print("load average " + " ".join(f"{v:.2f}" for v in os.getloadavg()) + f"; {os.cpu_count()} cores")
    start = time.perf_counter()
    certs, findings, suspects = synthetic_scan(args.rows)
    print(f"rows (suspect certificates): {len(suspects):,}; findings: {len(findings):,} "
          f"(built in {time.perf_counter() - start:.0f} s)")
    cap = xlsx_report.EXCEL_MAX_ROWS - 1 if args.xlsx_rows == 0 else args.xlsx_rows
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        baseline = _timed("baseline, pandas to_csv of the suspects", lambda: suspects.to_csv(
            out / "baseline.csv", index=False), len(suspects))
        frame = suspects.reset_index(drop=True)
        _timed("suspects.csv alone (write_frame)", lambda: csv_report.write_frame(out / "s.csv", frame),
               len(suspects), baseline)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        profile = cProfile.Profile() if args.profile else None
        files: dict[str, Path] = {}

        def write() -> None:
            if profile:
                profile.enable()
            options = {} if cap is None else {"xlsx_max_rows": cap}
            files.update(write_reports(out / "reports", suspects, certs, findings, empty_frame(ERROR_COLUMNS),
                                       empty_frame(REGISTRATION_COLUMNS), {"read": len(certs)}, **options))
            if profile:
                profile.disable()

        _timed("write_reports, every file", write, len(suspects), baseline)
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        size = sum(p.stat().st_size for p in files.values())
        xlsx = files["suspects.xlsx"].stat().st_size
    print(f"  {len(files)} files, {size / 1e6:.1f} MB, of which suspects.xlsx {xlsx / 1e6:.1f} MB "
          f"(rows per sheet: {'the writer default' if cap is None else f'{cap:,}'})")
    print(f"  peak RSS grew by {(rss_after - rss_before) / 1024:.0f} MiB during write_reports")
    if profile:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
    print("load average at the end " + " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()
