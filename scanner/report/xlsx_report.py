"""XLSX rendering with xlsxwriter: a summary sheet, one sheet per problem, then the full lists.

Every text cell is written with write_string after :func:`safe_text` and :func:`truncate`, and the
workbook turns off xlsxwriter's string-to-formula/URL/number guessing, so no certificate value can
become a formula or a link. Times are real Excel datetimes in UTC (timezone removed), and their
headers say "(UTC)". constant_memory keeps 100k-row sheets out of RAM; it needs rows written in
order, which is how every sheet here is written.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import xlsxwriter
from xlsxwriter.worksheet import Worksheet

from scanner.core.atomic import atomic_path
from scanner.core.records import LINT_PREFIX, is_lint_code
from scanner.core.times import iso as format_time
from scanner.report.csv_report import LIST_SEPARATOR, is_missing
from scanner.report.problems import PROBLEM_COLUMNS, crtsh_url
from scanner.report.sanitize import safe_text, truncate

log = logging.getLogger(__name__)

#: Excel ignores hyperlinks past this many in one worksheet; later link cells are written as text.
MAX_LINKS_PER_SHEET = 65_530
MAX_COLUMN_WIDTH = 60
MIN_COLUMN_WIDTH = 8
_WIDTH_SAMPLE_ROWS = 2_000
_CHUNK_ROWS = 10_000
_DATE_FORMAT = "yyyy-mm-dd hh:mm:ss"
_SHEET_NAME_BAD = re.compile(r"[\[\]:*?/\\]")
_SHEET_NAME_MAX = 31
#: Columns whose cells link to crt.sh: column -> which column holds the hash to link.
_LINK_COLUMNS = {"crtsh_url": "sha256", "related_sha256": "related_sha256"}
EXCEL_MAX_ROWS = 1_048_576  # per sheet, the header row included
#: Rows per sheet of suspects.xlsx, header aside: a compliance team reads the worst-scored first, and a
#: million-row workbook takes minutes to write and to open. Each CSV keeps every row.
XLSX_MAX_ROWS = 100_000
RESERVED_SHEETS = ("Summary", "All suspects", "Registrations", "Errors")
_PROBLEM_HEADERS = {
    "title": "Problem",
    "code": "Code",
    "severity": "Severity",
    "certificates": "Certificates",
    "first_not_before": "First notBefore",  # time columns get " (UTC)" from header_label
    "last_not_before": "Last notBefore",
    "revoked": "Revoked",
    "expired": "Expired (not revoked)",
    "valid": "Still valid (not revoked)",
    "short_lived": "Short-lived, not revoked (exempt)",
}


def sheet_name(wanted: str, used: set[str]) -> str:
    """A legal, unique (case-insensitively) Excel sheet name close to wanted; adds it to used."""
    base = _SHEET_NAME_BAD.sub("_", wanted).strip("'").strip() or "Sheet"
    base = base[:_SHEET_NAME_MAX]
    name, n = base, 1
    while name.lower() in used or name.lower() == "history":  # "History" is reserved by Excel
        n += 1
        suffix = f" ({n})"
        name = base[: _SHEET_NAME_MAX - len(suffix)] + suffix
    used.add(name.lower())
    return name


def _sheet_title(code: str) -> str:
    """A problem's sheet title: its code; a lint:<pkilint code> by its most specific part, so 31 characters tell
    one from another (the Summary sheet links each full code to its sheet)."""
    if is_lint_code(code):
        return "lint " + code.rsplit(".", 1)[-1].removeprefix(LINT_PREFIX)
    return code


def _safe_workbook(path: Path) -> xlsxwriter.Workbook:
    # No string guessing: a served subject or an evidence line must never become a formula or a link.
    return xlsxwriter.Workbook(str(path), {"constant_memory": True, "strings_to_formulas": False,
                                           "strings_to_urls": False, "strings_to_numbers": False,
                                           "remove_timezone": True})


def write_sheets_workbook(path: Path, sheets: Sequence[tuple[str, pd.DataFrame]],
                          links: dict[str, list[str]] | None = None) -> Path:
    """A workbook of one sheet per (title, frame), safe cells, written atomically.

    links: as write_table takes them (None: crt.sh links on the sha256 columns; {}: none).
    """
    used: set[str] = set()
    with atomic_path(path) as tmp:
        book = _safe_workbook(tmp)
        try:
            fmt = _Formats(book)
            for title, frame in sheets:
                write_table(book.add_worksheet(sheet_name(title, used)), fmt, frame, links=links)
        finally:
            book.close()
    return path


class _Formats:
    """The workbook's cell formats, created once."""

    def __init__(self, book: xlsxwriter.Workbook) -> None:
        self.header = book.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1})
        self.date = book.add_format({"num_format": _DATE_FORMAT})
        self.link = book.add_format({"font_color": "blue", "underline": 1})
        self.title = book.add_format({"bold": True, "font_size": 12})


def _is_time_column(series: pd.Series) -> bool:
    return isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(series.dtype)


def _naive_utc(series: pd.Series) -> list[Any]:
    utc = pd.to_datetime(series, utc=True).dt.tz_localize(None)
    return [None if pd.isna(v) else v.to_pydatetime() for v in utc]


def header_label(column: str, series: pd.Series) -> str:
    """A column header; time columns say they are UTC."""
    return f"{column} (UTC)" if _is_time_column(series) else column


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple, set)):
        value = LIST_SEPARATOR.join(str(v) for v in value)
    return truncate(safe_text(str(value)))


class _SheetWriter:
    """Writes cells of one worksheet by Python type, counting hyperlinks against Excel's cap."""

    def __init__(self, ws: Worksheet, fmt: _Formats) -> None:
        self.ws, self.fmt, self.links = ws, fmt, 0

    def cell(self, row: int, col: int, value: Any) -> None:
        """Write one value with the writer method its type calls for; missing or empty values stay blank."""
        if is_missing(value) or (isinstance(value, str) and not value):
            return
        if isinstance(value, datetime):
            if pd.isna(value):
                return
            if value.tzinfo is not None:
                value = pd.Timestamp(value).tz_convert("UTC").tz_localize(None).to_pydatetime()
            if value.year < 1900:  # Excel has no dates before 1900: keep the value readable as text
                self.ws.write_string(row, col, format_time(value))
            else:
                self.ws.write_datetime(row, col, value, self.fmt.date)
        elif isinstance(value, bool):
            self.ws.write_boolean(row, col, value)
        elif isinstance(value, (int, float)) or hasattr(value, "dtype"):
            number = float(value)
            if not math.isfinite(number):
                self.ws.write_string(row, col, str(number))
            else:
                self.ws.write_number(row, col, number)
        else:
            self.ws.write_string(row, col, _text(value))

    def link(self, row: int, col: int, url: str, text: Any) -> None:
        """A crt.sh hyperlink cell showing text; plain text once the sheet's link cap is reached."""
        shown = _text(text) if not is_missing(text) and str(text) else url
        if not shown:
            return
        if url and self.links < MAX_LINKS_PER_SHEET:
            self.ws.write_url(row, col, url, self.fmt.link, string=shown)
            self.links += 1
        else:
            self.ws.write_string(row, col, shown)


def _widths(frame: pd.DataFrame, headers: Sequence[str]) -> list[int]:
    widths = []
    sample = frame.head(_WIDTH_SAMPLE_ROWS)
    for col, header in zip(frame.columns, headers):
        series = sample[col]
        if _is_time_column(series):
            longest = 19
        else:
            lengths = series.map(
                lambda v: 0 if is_missing(v) else len(str(v)) if not isinstance(v, list) else 30
            )
            longest = int(lengths.max()) if len(lengths) else 0
        widths.append(max(MIN_COLUMN_WIDTH, min(MAX_COLUMN_WIDTH, max(longest, len(header)) + 2)))
    return widths


def crtsh_links(frame: pd.DataFrame) -> dict[str, list[str]]:
    """For each link column of frame, the crt.sh URL of every row (empty where the hash is not valid)."""
    links = {}
    for name, source in _LINK_COLUMNS.items():
        if name in frame.columns and source in frame.columns:
            links[name] = [crtsh_url("" if is_missing(v) else str(v)) for v in frame[source].tolist()]
    return links


def cut_note(shown: int, rows: int, complete_in: str) -> str:
    """What a sheet cut to its first rows says in its first row."""
    where = complete_in or "the CSV files"
    return (f"Only the first {shown:,} of {rows:,} rows are in this sheet (in the order of the list: suspects "
            f"highest score first); {where} has every row.")


def write_table(
    ws: Worksheet, fmt: _Formats, frame: pd.DataFrame, links: dict[str, list[str]] | None = None,
    *, max_rows: int | None = None, complete_in: str = "", cut: dict[str, dict[str, Any]] | None = None,
) -> int:
    """Write frame from A1 with a frozen header, an autofilter, links and capped widths; return next row.

    links maps a column to one URL per row; by default crt.sh links from :func:`crtsh_links`.
    max_rows: at most this many rows (Excel's own limit at most); a sheet cut says so right of its header,
    naming complete_in (the CSV with every row), and is recorded in cut (sheet -> rows, shown, every_row_in).
    Rows are written strictly in order, as constant_memory requires.
    """
    out = _SheetWriter(ws, fmt)
    limit = min(max_rows if max_rows is not None else EXCEL_MAX_ROWS - 1, EXCEL_MAX_ROWS - 1)
    rows = len(frame)
    if rows > limit:
        log.warning("sheet %s: %d rows, the first %d written; %s has them all", ws.name, rows, limit,
                    complete_in or "the CSV")
        frame = frame.iloc[:limit]
        if cut is not None:
            cut[ws.name] = {"rows": rows, "shown": limit, "every_row_in": complete_in or "the CSV files"}
    headers = [header_label(str(c), frame[c]) for c in frame.columns]
    for col, (header, width) in enumerate(zip(headers, _widths(frame, headers))):
        ws.set_column(col, col, width)
        ws.write_string(0, col, safe_text(header), fmt.header)
    if rows > limit:  # beside the header, one column apart, outside the autofilter: seen first, never filtered
        ws.write_string(0, len(frame.columns) + 1, cut_note(limit, rows, complete_in), fmt.title)
    links = crtsh_links(frame) if links is None else links
    by_col = {i: links[str(name)] for i, name in enumerate(frame.columns) if str(name) in links}
    # Chunks bound the Python objects alive at once; constant_memory already streams the XML.
    for start in range(0, len(frame), _CHUNK_ROWS):
        chunk = frame.iloc[start : start + _CHUNK_ROWS]
        values = [
            _naive_utc(chunk[c]) if _is_time_column(chunk[c]) else chunk[c].tolist() for c in chunk.columns
        ]
        for offset in range(len(chunk)):
            i = start + offset
            for col, column_values in enumerate(values):
                if col in by_col:
                    out.link(i + 1, col, by_col[col][i], column_values[offset])
                else:
                    out.cell(i + 1, col, column_values[offset])
    if out.links >= MAX_LINKS_PER_SHEET:
        log.warning("sheet %s: more than %d links; the rest are plain text", ws.name, MAX_LINKS_PER_SHEET)
    ws.freeze_panes(1, 0)
    ws.autofilter(0, 0, len(frame), max(len(frame.columns) - 1, 0))
    return 1 + len(frame)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts and lists as (dotted key, scalar) pairs: one summary-sheet row each."""
    if isinstance(value, dict):
        return [
            pair
            for key, sub in value.items()
            for pair in _flatten(sub, f"{prefix}.{key}" if prefix else str(key))
        ]
    if isinstance(value, (list, tuple)):
        if not value:
            return [(prefix, "")]
        return [pair for i, sub in enumerate(value, 1) for pair in _flatten(sub, f"{prefix}[{i}]")]
    return [(prefix, value)]


def _internal_link(sheet: str) -> str:
    """A link to cell A1 of a sheet; inside the quoted sheet name an apostrophe is written twice."""
    quoted = sheet.replace("'", "''")
    return f"internal:'{quoted}'!A1"


def _write_summary(
    ws: Worksheet,
    fmt: _Formats,
    summary: dict[str, Any],
    stats: pd.DataFrame,
    sheets: dict[str, str],
    now: datetime,
    max_rows: int,
) -> None:
    problems = stats[list(PROBLEM_COLUMNS)].rename(columns=_PROBLEM_HEADERS)
    code_links = [_internal_link(sheets[c]) if c in sheets else "" for c in stats["code"]]
    row = write_table(ws, fmt, problems, links={_PROBLEM_HEADERS["code"]: code_links}) + 1
    out = _SheetWriter(ws, fmt)
    ws.write_string(row, 0, "Run figures", fmt.title)
    row += 1
    ws.write_string(row, 0, "Figures counted as of (UTC)")
    out.cell(row, 1, now)
    row += 1
    ws.write_string(row, 0, "Rows per sheet at most (the first of each list; the CSV files have every row)")
    out.cell(row, 1, max_rows)
    for key, value in _flatten(summary):
        row += 1
        ws.write_string(row, 0, _text(key))
        out.cell(row, 1, value)


def _worth_a_row(registrations: pd.DataFrame) -> pd.DataFrame:
    """The registrations an auditor reads in the workbook: every answer but plain "registered" and "not asked".

    registrations.csv keeps every domain; a million "registered" rows would only bury the rest.
    """
    if registrations.empty:
        return registrations
    keep = (registrations["status"] != "registered") & (registrations["method"] != "none")
    return registrations[keep.fillna(True).to_numpy(dtype=bool)]


def write_xlsx(
    path: Path,
    *,
    summary: dict[str, Any],
    stats: pd.DataFrame,
    problem_table: Callable[[str], pd.DataFrame],
    suspects: pd.DataFrame,
    registrations: pd.DataFrame,
    errors: pd.DataFrame,
    now: datetime,
    extra_sheets: Sequence[tuple[str, pd.DataFrame, str]] = (),
    max_rows: int = XLSX_MAX_ROWS,
    problem_files: dict[str, str] | None = None,
    cut: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Write suspects.xlsx atomically: Summary, a sheet per problem, All suspects, Registrations, Errors.

    problem_table(code) builds one problem's list when its sheet is written, so only one is in memory.
    extra_sheets: (title, frame, the CSV holding it); max_rows: rows per sheet but Summary, the first ones
    (suspects are ranked); problem_files: code -> the appendix CSV listing it whole; cut is filled with the
    sheets that were cut (sheet -> rows, shown, every_row_in).
    """
    files = problem_files or {}

    def table(ws: Worksheet, frame: pd.DataFrame, complete_in: str) -> int:
        return write_table(ws, fmt, frame, max_rows=max_rows, complete_in=complete_in, cut=cut)

    used = {name.lower() for name in RESERVED_SHEETS}
    sheets = {code: sheet_name(_sheet_title(code), used) for code in stats["code"]}
    with atomic_path(path) as tmp:
        book = _safe_workbook(tmp)
        try:
            fmt = _Formats(book)
            jobs: list[tuple[str, Callable[[Worksheet], object]]] = [
                ("Summary", lambda ws: _write_summary(ws, fmt, summary, stats, sheets, now, max_rows))
            ]
            for code, name in sheets.items():
                jobs.append((name, lambda ws, c=code: table(ws, problem_table(c), files.get(c, "its appendix CSV"))))
            jobs += [
                ("All suspects", lambda ws: table(ws, suspects, "suspects.csv")),
                ("Registrations", lambda ws: table(ws, _worth_a_row(registrations), "registrations.csv")),
            ]
            for title, frame, csv_name in extra_sheets:
                jobs.append((sheet_name(title, used), lambda ws, f=frame, n=csv_name: table(ws, f, n)))
            jobs.append(("Errors", lambda ws: table(ws, errors, "errors.csv")))
            for name, job in jobs:
                job(book.add_worksheet(name))
        finally:
            book.close()
    return path
