"""Time the BR rules detectors (detect/rules.py) on a large certificate table, against early_revocation.

Run:  python benchmarks/bench_rules.py [--certs 1000000] [--seed 3]

The table holds only the columns the detectors read (notBefore spread over 2019-2030, validity 7 to
400 days, so a quarter exceed their day's limit: a stress case; 3% revoked with a mix of reasons), so the figures are the detectors' own cost. Prints the
seconds of each rules detector, of detect_early_revocation on the same table (the baseline: an
existing per-certificate detector over the same revoked rows), their ratios, and the peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scanner.detect.revocation import detect_early_revocation
from scanner.detect.rules import (
    detect_crl_reason_forbidden,
    detect_crl_reason_missing,
    detect_validity_exceeds_limit,
    is_short_lived,
)

_REASONS = np.array(["", "unspecified", "keyCompromise", "superseded", "certificateHold", "privilegeWithdrawn"])


def table(n: int, seed: int) -> pd.DataFrame:
    """n certificates with notBefore, notAfter and, for 3%, a revocation with a reason."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2019-01-01", tz="UTC")
    nb = start + pd.to_timedelta(rng.integers(0, 11 * 365 * 86400, n), unit="s")
    na = nb + pd.to_timedelta(rng.integers(7 * 86400, 400 * 86400, n), unit="s")
    revoked = rng.random(n) < 0.03
    revoked_at = pd.Series(nb + pd.to_timedelta(rng.integers(0, 30 * 86400, n), unit="s")).where(revoked)
    return pd.DataFrame({
        "sha256": pd.Series([f"{i:064x}" for i in range(n)], dtype="string"),
        "serial": pd.Series([f"{i:x}" for i in range(n)], dtype="string"),
        "not_before": nb, "not_after": na, "revoked_at": revoked_at,
        "revocation_reason": pd.Series(_REASONS[rng.integers(0, len(_REASONS), n)], dtype="string").where(revoked),
        "revocation_source": pd.Series(["crl"] * n, dtype="string"),
    })


def timed(label: str, fn) -> float:  # noqa: ANN001
    """Run fn once, print its seconds and result size, return the seconds."""
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    per = f", {seconds / len(out) * 1e6:.0f} µs per row" if len(out) else ""
    print(f"{label:34s} {seconds:8.3f} s  ({len(out):,} rows{per})")
    return seconds


def main() -> None:
    """Build the table, time each detector, print ratios to the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--certs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    certs = table(args.certs, args.seed)
    print(f"{len(certs):,} certificates, {int(certs['revoked_at'].notna().sum()):,} revoked")
    base = timed("early_revocation (baseline)", lambda: detect_early_revocation(certs, timedelta(days=7)))
    reissues = pd.DataFrame({"sha256": certs["sha256"][:1000], "code": "revoke_reissue",
                             "related_sha256": certs["sha256"][1000:2000].to_numpy(),
                             "detail": '{"change":"san_typo_fixed"}'})
    for label, fn in (("validity_exceeds_limit", lambda: detect_validity_exceeds_limit(certs)),
                      ("crl_reason_forbidden", lambda: detect_crl_reason_forbidden(certs)),
                      ("crl_reason_missing (1,000 pairs)", lambda: detect_crl_reason_missing(certs, reissues)),
                      ("is_short_lived", lambda: is_short_lived(certs))):
        seconds = timed(label, fn)
        print(f"{'':34s} {seconds / base:8.2f} x the baseline")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
