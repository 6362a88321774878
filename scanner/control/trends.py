"""Trends across scans: the rates of scanner.detect.rates put side by side (pure, pandas)."""

from __future__ import annotations

import pandas as pd

from scanner.detect.rates import ALL


def long_rates(table: pd.DataFrame) -> pd.DataFrame:
    """A rates table (one row per period) as one row per period and metric: period, metric, value."""
    long = table.melt(id_vars="period", var_name="metric", value_name="value")
    return long.astype({"period": "object", "metric": "object", "value": "float64"})


def side_by_side(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Two scans' rates tables as period, metric, old, new, change; the whole scan first, then months in order."""
    both = long_rates(old).merge(long_rates(new), on=["period", "metric"], how="outer", suffixes=("_old", "_new"))
    both = both.rename(columns={"value_old": "old", "value_new": "new"})
    issued = both[both["metric"] == "issued"].set_index("period")
    for side in ("old", "new"):
        # a code one scan did not find is 0 per 1,000 where it issued anything; empty where it issued nothing
        some = both["period"].map(issued[side]).fillna(0.0) > 0
        both.loc[some, side] = both.loc[some, side].fillna(0.0)
        both[side] = both[side].where(both["metric"].str.endswith("_per_1000"), both[side].fillna(0.0))
    both["change"] = both["new"] - both["old"]
    order = list(dict.fromkeys(list(old.columns[1:]) + list(new.columns[1:])))
    both["_period"] = both["period"].map(lambda p: "" if p == ALL else p)
    both["_metric"] = both["metric"].map(order.index)
    return both.sort_values(["_period", "_metric"]).drop(columns=["_period", "_metric"]).reset_index(drop=True)
