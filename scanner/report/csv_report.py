"""CSV rendering: UTF-8 (no BOM), a header row, LF line ends, ISO 8601 UTC times, safe text cells."""

from __future__ import annotations

import csv
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from scanner.records import coerce
from scanner.report.atomic import atomic_path
from scanner.report.sanitize import safe_text, unescape_formula

#: How every CSV spells a time: ISO 8601, UTC, whole seconds, e.g. 2019-11-12T12:17:00Z.
ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"

#: What joins list values (SAN lists) inside one cell.
LIST_SEPARATOR = ";"


def format_time(value: datetime) -> str:
    """A datetime as ISO 8601 UTC with a Z; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime(ISO_UTC)


def is_missing(value: Any) -> bool:
    """True for None, NaN, NaT and pd.NA (but not for lists, which pd.isna cannot judge)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def format_cell(value: Any) -> str:
    """One value as CSV text: empty for missing, ISO UTC for times, joined lists, safe strings."""
    if is_missing(value):
        return ""
    if isinstance(value, datetime):
        return "" if pd.isna(value) else format_time(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        # Numbers are never escaped: a sign is part of the number, not the start of a formula.
        return str(value.item() if hasattr(value, "item") else value)
    if isinstance(value, (list, tuple, set)):
        return safe_text(LIST_SEPARATOR.join(str(v) for v in value))
    return safe_text(str(value))


def column_cells(series: pd.Series) -> list[str]:
    """A whole column as CSV text (vectorised for times, which dominate large tables)."""
    if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(series.dtype):
        utc = pd.to_datetime(series, utc=True)
        return utc.dt.strftime(ISO_UTC).fillna("").tolist()
    return [format_cell(v) for v in series.tolist()]


def write_frame(path: Path, frame: pd.DataFrame, chunk_rows: int = 10_000) -> Path:
    """Write a DataFrame as CSV to path atomically, every cell made safe, a chunk of rows at a time."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        # With an LF line end, Python's csv leaves a field holding a bare CR unquoted, and readers then
        # split the row there (and a "=..." after the CR starts a new row unescaped): quote such rows.
        quoted = csv.writer(fh, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow([safe_text(str(c)) for c in frame.columns])
        for start in range(0, len(frame), chunk_rows):
            chunk = frame.iloc[start : start + chunk_rows]
            columns = [column_cells(chunk[c]) for c in chunk.columns]
            if not any("\r" in "".join(cells) for cells in columns):
                writer.writerows(zip(*columns))
                continue
            for row in zip(*columns):
                (quoted if any("\r" in cell for cell in row) else writer).writerow(row)
    return path


def read_frame(path: Path, columns: dict[str, str]) -> pd.DataFrame:
    """Read a CSV this module wrote back into a frame with the schema's columns and dtypes.

    Undoes the formula escape, so registrations.csv round-trips as recorded answers.
    """
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    frame = frame.map(unescape_formula).replace("", None)
    return coerce(frame, columns)
