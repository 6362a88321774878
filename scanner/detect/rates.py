"""Baselines: issuance, revocation and finding rates per scan and per month of notBefore (pure, pandas)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd

from scanner.core.records import FINDING_CODES

#: The period label of the row covering the whole scan; the other rows are "YYYY-MM" of notBefore.
ALL = "all"
#: The fixed latency thresholds (the Camerfirma promise was "less than a week"; the BRs' 24 h and 5 days).
DAY = timedelta(hours=24)
FIVE_DAYS = timedelta(days=5)
COUNT_COLUMNS = ("issued", "revoked", "revoked_within_24h", "revoked_within_5d", "revoked_within_window",
                 "reissue_pairs")


def per_1000_column(code: str) -> str:
    """The column of the rates table holding code's certificates per 1,000 issued."""
    return f"{code}_per_1000"


def rates_table(certs: pd.DataFrame, findings: pd.DataFrame, window: timedelta = timedelta(days=7)) -> pd.DataFrame:
    """One row for the whole scan ("all"), then one per notBefore month: counts and findings per 1,000 issued.

    A latency (revoked_at - not_before) counts as within a threshold when it is at most that long, so a
    certificate revoked exactly 24 h after notBefore is within 24 h; one revoked before its notBefore
    (backdated) is within every threshold. reissue_pairs counts certificates with a revoke_reissue finding;
    a code's rate counts each certificate once however many names carry it.
    """
    not_before = pd.to_datetime(certs["not_before"], utc=True)
    latency = pd.to_datetime(certs["revoked_at"], utc=True) - not_before
    revoked = latency.notna()
    # year * 100 + month as a number: grouping on it is many times faster than on Period or text labels
    month = (not_before.dt.year * 100 + not_before.dt.month).fillna(-1).astype("int64")
    base = pd.DataFrame({
        "period": month.to_numpy(),
        "issued": 1,
        "revoked": revoked.to_numpy(dtype=bool),
        "revoked_within_24h": (revoked & (latency <= DAY)).to_numpy(dtype=bool),
        "revoked_within_5d": (revoked & (latency <= FIVE_DAYS)).to_numpy(dtype=bool),
        "revoked_within_window": (revoked & (latency <= window)).to_numpy(dtype=bool),
    })
    pairs = findings[["sha256", "code"]].astype("object").drop_duplicates()
    present = set(pairs["code"])
    codes = [c for c in FINDING_CODES if c in present] + sorted(present - set(FINDING_CODES))
    sha = certs["sha256"].astype("object")
    by_code = pairs.groupby("code", sort=False)["sha256"]
    for code in codes:
        base[code] = sha.isin(set(by_code.get_group(code))).to_numpy()
    base["reissue_pairs"] = base["revoke_reissue"] if "revoke_reissue" in base else False
    sums = base.groupby("period", sort=True).sum(numeric_only=True)
    sums.index = [f"{p // 100:04d}-{p % 100:02d}" if p >= 0 else "unknown" for p in sums.index]
    sums.loc[ALL] = base.drop(columns="period").sum()
    sums = sums.reindex([ALL] + [p for p in sums.index if p != ALL]).astype("int64")
    out = sums[list(COUNT_COLUMNS)].copy()
    for code in codes:
        out[per_1000_column(code)] = (1000 * sums[code] / sums["issued"].where(sums["issued"] > 0)).round(3)
    out.index.name = "period"
    return out.reset_index()


def rates_summary(table: pd.DataFrame, window: timedelta) -> dict[str, Any]:
    """The rates as summary.json holds them: the window, the whole scan, and each month."""
    rows = {str(r["period"]): {k: (None if pd.isna(v) else v) for k, v in r.items() if k != "period"}
            for r in table.to_dict("records")}
    return {"window_hours": window.total_seconds() / 3600, "all": rows.pop(ALL, {}), "by_month": rows}
