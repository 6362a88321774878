"""CSV rendering: UTF-8 (no BOM), a header row, LF line ends, ISO 8601 UTC times, safe text cells."""

from __future__ import annotations

import csv
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from scanner.core.atomic import atomic_path
from scanner.core.records import coerce
from scanner.core.times import iso, iso_column
from scanner.report.sanitize import safe_text, unescape_formula

#: What joins list values (SAN lists) inside one cell.
LIST_SEPARATOR = ";"


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
        return iso(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        # Numbers are never escaped: a sign is part of the number, not the start of a formula.
        return str(value.item() if hasattr(value, "item") else value)
    if isinstance(value, (list, tuple, set)):
        return safe_text(LIST_SEPARATOR.join(str(v) for v in value))
    return safe_text(str(value))


def column_cells(series: pd.Series) -> list[str]:
    """A whole column as CSV text: format_cell of each cell, in Arrow for text and times (most of a table)."""
    if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(series.dtype):
        return iso_column(series)
    if isinstance(series.dtype, pd.StringDtype) and series.dtype.storage == "pyarrow":
        return safe_text_column(pa.array(series.array)).to_pylist()
    return [format_cell(v) for v in series.tolist()]


# safe_text in RE2 for Arrow: UTF-8 cannot hold the lone surrogates sanitize's pattern also replaces.
_ILLEGAL_RE2 = "[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f\\x{fffe}\\x{ffff}]"
_ESCAPE_RE2 = "^[=+\\-@\\t\\r\\x{ff1d}\\x{ff0b}\\x{ff0d}\\x{ff20}']"


def safe_text_column(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """safe_text of every string of an Arrow array, missing ones empty, without a Python call per cell."""
    text = pc.fill_null(values, "")
    text = pc.replace_substring_regex(text, _ILLEGAL_RE2, "\ufffd")
    quote, nothing = pa.scalar("'", type=text.type), pa.scalar("", type=text.type)
    return pc.if_else(pc.match_substring_regex(text, _ESCAPE_RE2), pc.binary_join_element_wise(quote, text, nothing),
                      text)


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
