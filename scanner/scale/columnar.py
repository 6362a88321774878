"""Parquet copies of a scan's tables, so detectors and notebooks can reload them without re-parsing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from scanner.core.atomic import atomic_path
from scanner.core.records import (
    CERT_COLUMNS,
    ERROR_COLUMNS,
    FINDING_COLUMNS,
    LIST_COLUMNS,
    REGISTRATION_COLUMNS,
    coerce,
)

#: File name in the report folder -> the schema of the table it holds.
TABLES: dict[str, dict[str, str]] = {
    "certs.parquet": CERT_COLUMNS,
    "findings.parquet": FINDING_COLUMNS,
    "registrations.parquet": REGISTRATION_COLUMNS,
    "errors.parquet": ERROR_COLUMNS,
}


#: Rows per Parquet row group, converted to Arrow one group at a time: a million-row table is never
#: held a second time as a whole Arrow table (that copy was the peak memory of a million-certificate scan).
ROW_GROUP = 100_000


def write_parquet(df: pd.DataFrame, path: Path, columns: dict[str, str]) -> Path:
    """Write one table atomically (list columns as Arrow list<string>), ROW_GROUP rows at a time."""
    frame = coerce(df, columns)
    fields = []
    for name, dtype in columns.items():
        if name in LIST_COLUMNS:
            fields.append(pa.field(name, pa.list_(pa.string())))
        elif dtype == "Int64":
            fields.append(pa.field(name, pa.int64()))
        elif dtype == "bool":
            fields.append(pa.field(name, pa.bool_()))
        elif dtype.startswith("datetime64"):
            fields.append(pa.field(name, pa.timestamp("us", tz="UTC")))
        else:
            fields.append(pa.field(name, pa.string()))
    schema = pa.schema(fields)
    # A file object, not a path: pyarrow cannot open a path whose bytes are not UTF-8.
    with atomic_path(path) as tmp, open(tmp, "wb") as fh, pq.ParquetWriter(fh, schema, compression="zstd") as out:
        for start in range(0, max(len(frame), 1), ROW_GROUP):
            part = frame.iloc[start:start + ROW_GROUP]
            out.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False))
    return path


def read_parquet(path: Path, columns: dict[str, str], *, filters: Any = None) -> pd.DataFrame:
    """Read a table written by write_parquet back with the schema's dtypes (list columns as lists).

    Only the schema's columns are read (a subset of a table's schema reads a subset of its columns);
    filters: a pyarrow expression the rows must match, applied batch by batch as they are read.
    """
    with open(path, "rb") as fh:
        present = set(pq.ParquetFile(fh).schema_arrow.names)
        fh.seek(0)
        table = pq.read_table(fh, columns=[c for c in columns if c in present], filters=filters)
    lists = [name for name in LIST_COLUMNS if name in table.column_names]
    frame = table.drop_columns(lists).to_pandas()
    for name in lists:
        # Arrow builds the Python lists itself, faster than converting pandas' arrays one by one.
        frame[name] = [v if v is not None else [] for v in table.column(name).to_pylist()]
    return coerce(frame, columns)


def write_tables(out_dir: Path, tables: dict[str, pd.DataFrame]) -> dict[str, Path]:
    """Write the scan's tables (keys of TABLES) into out_dir."""
    return {name: write_parquet(df, Path(out_dir) / name, TABLES[name]) for name, df in tables.items()}


def read_tables(out_dir: Path) -> dict[str, pd.DataFrame]:
    """Every table of TABLES found in out_dir, by file name."""
    out = {}
    for name, columns in TABLES.items():
        path = Path(out_dir) / name
        if path.exists():
            out[name] = read_parquet(path, columns)
    return out
