"""Every way ctscan writes a time as text: ISO 8601 UTC with a Z for people, fixed width for the store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd

#: Reports, evidence and logs: second precision, UTC, a Z (what crt.sh and the CCADB reports show).
ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"
#: The store's text columns: fixed width, so that text order is time order.
STORE_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def utc(value: datetime) -> datetime:
    """value as an aware UTC datetime; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def iso(value: Any) -> str:
    """A datetime, pandas Timestamp or ISO text as ISO 8601 UTC with a Z; '' when missing (None, NaT)."""
    if value is None or value is pd.NaT:  # NaT is a datetime too, and its strftime raises
        return ""
    if isinstance(value, datetime) and not isinstance(value, pd.Timestamp):
        return _iso_text(utc(value))
    if pd.isna(value):
        return ""
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return _iso_text(ts)


def _iso_text(d: datetime) -> str:
    # not strftime: glibc writes the year 999 as "999", pandas (and iso_column) as "0999"
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}Z"


def iso_column(values: pd.Series) -> list[str]:
    """iso() of a whole column at once ('' for missing values)."""
    stamps = pd.to_datetime(values, utc=True, errors="coerce", format="mixed")
    return stamps.dt.strftime(ISO_UTC).fillna("").tolist()


def store_text(value: datetime | None) -> str | None:
    """A datetime as the store's fixed-width UTC text (naive values are taken as UTC); None stays None."""
    if value is None:
        return None
    return utc(value).replace(tzinfo=None).strftime(STORE_FORMAT)


def human_duration(delta: pd.Timedelta | timedelta) -> str:
    """'4.6 hours', '23 minutes', '3.0 days' (signed): the unit a reader of an incident report expects."""
    return _duration(delta.total_seconds(), ("minutes", "hours", "days"), signed=True)


def duration_text(hours: float) -> str:
    """The short form for labels and summaries: '23 min', '4.6 h', '3.2 days' (unsigned)."""
    return _duration(float(hours) * 3600, ("min", "h", "days"), signed=False)


def _duration(seconds: float, units: tuple[str, str, str], *, signed: bool) -> str:
    sign = "-" if signed and seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 3600:
        return f"{sign}{seconds / 60:.0f} {units[0]}"
    if seconds < 48 * 3600:
        return f"{sign}{seconds / 3600:.1f} {units[1]}"
    return f"{sign}{seconds / 86400:.1f} {units[2]}"
