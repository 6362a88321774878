"""write_reports: every report file of a scan, written atomically into one directory."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, is_dataclass
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import pandas as pd

from scanner.core.atomic import write_text_atomic
from scanner.core.records import ERROR_COLUMNS, FINDING_COLUMNS, REGISTRATION_COLUMNS, coerce
from scanner.core.times import iso as format_time
from scanner.report.appendix import GUIDELINES, write_appendix
from scanner.report.csv_report import write_frame
from scanner.report.problems import (
    certificate_facts,
    code_table,
    now_utc,
    problem_stats,
    suspect_frame,
)
from scanner.report.xlsx_report import XLSX_MAX_ROWS, write_xlsx


def write_reports(
    out_dir: Path,
    suspects: pd.DataFrame,
    certs: pd.DataFrame,
    findings: pd.DataFrame,
    errors: pd.DataFrame,
    registrations: pd.DataFrame,
    summary: dict[str, Any],
    *,
    now: datetime | None = None,
    extra_tables: dict[str, tuple[str, pd.DataFrame]] | None = None,
    xlsx_max_rows: int = XLSX_MAX_ROWS,
) -> dict[str, Path]:
    """Write suspects.csv/.xlsx, errors.csv, registrations.csv, appendix/ and summary.json; name -> path.

    now is the reference time for "expired" versus "still valid" (default: the current UTC time).
    extra_tables maps a CSV file name to (sheet title, frame), e.g. the OCSP responder table.
    xlsx_max_rows: rows per XLSX sheet, the first of each list; the CSVs keep every row, and summary.json
    (xlsx_sheets_cut) and the sheet itself say which sheets were cut.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = now_utc(now)
    suspects = suspect_frame(suspects)
    findings = coerce(findings, FINDING_COLUMNS)
    errors = coerce(errors, ERROR_COLUMNS)
    registrations = coerce(registrations, REGISTRATION_COLUMNS)
    # The lists and their statistics look only at certificates with a finding: at a million certificates,
    # facts for all of them were a fifth of the report writing.
    named = findings["sha256"].dropna()
    facts = certificate_facts(certs[certs["sha256"].isin(named)] if len(certs) else certs, suspects)
    stats = problem_stats(findings, facts, ref)

    files: dict[str, Path] = {
        "suspects.csv": write_frame(out_dir / "suspects.csv", suspects),
        "errors.csv": write_frame(out_dir / "errors.csv", errors),
        "registrations.csv": write_frame(out_dir / "registrations.csv", registrations),
    }
    extra = extra_tables or {}
    for filename, (_, frame) in extra.items():
        files[filename] = write_frame(out_dir / filename, frame)
    appendix = write_appendix(out_dir, stats, findings, facts, suspects, ref)
    files.update(appendix)
    # write_appendix writes one CSV per problem, in the order of stats
    problem_files = dict(zip(stats["code"], (name for name in appendix if name.endswith(".csv"))))
    cut: dict[str, dict[str, Any]] = {}
    files["suspects.xlsx"] = write_xlsx(
        out_dir / "suspects.xlsx",
        summary={"appendix_format": GUIDELINES, **summary},
        stats=stats,
        problem_table=lambda code: code_table(code, findings, suspects),
        suspects=suspects,
        registrations=registrations,
        errors=errors,
        now=ref.to_pydatetime(),
        extra_sheets=[(title, frame, filename) for filename, (title, frame) in extra.items()],
        max_rows=xlsx_max_rows,
        problem_files=problem_files,
        cut=cut,
    )
    files["summary.json"] = out_dir / "summary.json"
    document = dict(summary)
    document["report_as_of"] = format_time(ref)
    document["appendix_format"] = GUIDELINES
    document["problems"] = stats.to_dict("records")
    if cut:
        document["xlsx_sheets_cut"] = {
            "note": f"suspects.xlsx holds at most {xlsx_max_rows:,} rows per sheet, the first of each list "
                    "(suspects highest score first); the CSV files have every row",
            "sheets": cut,
        }
    document["report_files"] = sorted(files)  # paths relative to out_dir
    text = json.dumps(_jsonable(document), indent=2, allow_nan=False, default=_json_default)
    write_text_atomic(files["summary.json"], text + "\n")
    return files


def _jsonable(value: Any) -> Any:
    """value with NaN/NaT/NA turned into None throughout, so summary.json is strict JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (datetime, pd.Timestamp)):
        return _jsonable(value.item())
    return value


def _json_default(value: Any) -> Any:
    """Make the values a summary may hold (times, numpy numbers, paths, enums, sets) JSON-able."""
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return str(value)
