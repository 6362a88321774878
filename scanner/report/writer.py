"""write_reports: every report file of a scan, written atomically into one directory."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, is_dataclass
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any

import pandas as pd

from scanner.core.atomic import write_text_atomic
from scanner.core.records import ERROR_COLUMNS, FINDING_COLUMNS, REGISTRATION_COLUMNS, coerce
from scanner.core.times import iso as format_time
from scanner.report.appendix import GUIDELINES, appendix_files, write_appendix
from scanner.report.csv_report import write_frame
from scanner.report.problems import (
    certificate_facts,
    code_table,
    now_utc,
    problem_stats,
    suspect_frame,
)
from scanner.report.xlsx_report import XLSX_MAX_ROWS, write_xlsx

log = logging.getLogger(__name__)

# Rows in the sheets from which a second process writes suspects.xlsx: starting one costs about a
# second, what a workbook of a few thousand rows takes to write.
XLSX_PROCESS_FROM = 5_000


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
    xlsx_process_from: int = XLSX_PROCESS_FROM,
) -> dict[str, Path]:
    """Write suspects.csv/.xlsx, errors.csv, registrations.csv, appendix/ and summary.json; name -> path.

    now is the reference time for "expired" versus "still valid" (default: the current UTC time).
    extra_tables maps a CSV file name to (sheet title, frame), e.g. the OCSP responder table.
    xlsx_max_rows: rows per XLSX sheet, the first of each list; the CSVs keep every row, and summary.json
    (xlsx_sheets_cut) and the sheet itself say which sheets were cut.
    xlsx_process_from: with this many rows in the sheets or more, suspects.xlsx is written by a second process.
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

    extra = extra_tables or {}
    xlsx = dict(
        summary={"appendix_format": GUIDELINES, **summary},
        stats=stats,
        suspects=suspects,
        registrations=registrations,
        errors=errors,
        now=ref.to_pydatetime(),
        extra_sheets=[(title, frame, filename) for filename, (title, frame) in extra.items()],
        max_rows=xlsx_max_rows,
        problem_files=appendix_files(stats["code"]),
    )
    sheet_rows = len(suspects) + len(findings) + len(registrations) + len(errors)
    # The workbook is the slowest report and all Python: a large one is written by a second process
    # while this one writes the CSVs and the appendix.
    pending = _xlsx_in_process(out_dir / "suspects.xlsx", findings, xlsx) if sheet_rows >= xlsx_process_from else None
    try:
        files: dict[str, Path] = {
            "suspects.csv": write_frame(out_dir / "suspects.csv", suspects),
            "errors.csv": write_frame(out_dir / "errors.csv", errors),
            "registrations.csv": write_frame(out_dir / "registrations.csv", registrations),
        }
        for filename, (_, frame) in extra.items():
            files[filename] = write_frame(out_dir / filename, frame)
        files.update(write_appendix(out_dir, stats, findings, facts, suspects, ref))
        cut = _finish_xlsx(pending[1]) if pending is not None else None
    finally:
        if pending is not None:
            pending[0].shutdown()
    if cut is None:  # a small workbook, or the second process could not be had
        cut = _write_xlsx(out_dir / "suspects.xlsx", findings, xlsx)
    files["suspects.xlsx"] = out_dir / "suspects.xlsx"
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


def _write_xlsx(path: Path, findings: pd.DataFrame, xlsx: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """suspects.xlsx from write_reports' arguments; the sheets that were cut (see write_xlsx)."""
    cut: dict[str, dict[str, Any]] = {}
    suspects = xlsx["suspects"]
    write_xlsx(path, problem_table=lambda code: code_table(code, findings, suspects), cut=cut, **xlsx)
    return cut


def _xlsx_job(path: Path, findings: pd.DataFrame, xlsx: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """_write_xlsx in the second process, with what it logged (for the scan's own log to say)."""
    said: list[tuple[str, int, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append((record.name, record.levelno, record.getMessage()))

    root = logging.getLogger()
    root.addHandler(Keep(logging.INFO))
    root.setLevel(logging.INFO)
    return _write_xlsx(path, findings, xlsx), said


def _xlsx_in_process(path: Path, findings: pd.DataFrame,
                     xlsx: dict[str, Any]) -> tuple[ProcessPoolExecutor, Future[Any]] | None:
    """_write_xlsx started in a process of its own; None when no process can be started."""
    # spawn, not fork: the scan has threads (the Parquet writer, progress bars) a fork would copy mid-step
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        return pool, pool.submit(_xlsx_job, path, findings, xlsx)
    except (OSError, RuntimeError, BrokenProcessPool) as exc:
        log.warning("writing suspects.xlsx in this process: no second process (%s)", exc)
        pool.shutdown(wait=False, cancel_futures=True)
        return None


def _finish_xlsx(future: Future[Any]) -> dict[str, dict[str, Any]] | None:
    """The cut sheets the second process's workbook reports; None when that process died (written here then)."""
    try:
        cut, said = future.result()
    except BrokenProcessPool as exc:
        log.warning("writing suspects.xlsx in this process: its process failed (%s)", exc)
        return None
    for name, level, message in said:
        logging.getLogger(name).log(level, "%s", message)
    return cut


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
