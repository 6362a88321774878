"""The XLSX holds the first rows of each list, says so in the sheet and in summary.json; the CSVs hold every row."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone

import openpyxl
import pandas as pd

from scanner.core.records import (
    CERT_COLUMNS,
    ERROR_COLUMNS,
    FINDING_COLUMNS,
    REGISTRATION_COLUMNS,
    Finding,
    empty_frame,
    frame_from_rows,
)
from scanner.detect.score import build_suspects
from scanner.report import write_reports
from scanner.report.xlsx_report import XLSX_MAX_ROWS

NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)


def _scan(n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """n certificates, each with an internal name; every third also with an IP SAN (so scores differ)."""
    certs = frame_from_rows([{
        "sha256": f"{i:064x}", "cert_sha256": f"{i:064x}", "serial": f"{i:04x}",
        "issuer_dn": "CN=Cap CA,C=ES", "subject_dn": f"CN=host{i}.corp", "subject_cn": f"host{i}.corp",
        "san_dns": [f"host{i}.corp"], "not_before": "2024-01-01T00:00:00Z", "not_after": "2024-03-01T00:00:00Z",
    } for i in range(1, n + 1)], CERT_COLUMNS)
    rows = [Finding(f"{i:064x}", "internal_name", f"host{i}.corp has no public suffix", name=f"host{i}.corp").as_row()
            for i in range(1, n + 1)]
    rows += [Finding(f"{i:064x}", "ip_san", "an IP address SAN", name="10.0.0.1").as_row() for i in range(3, n + 1, 3)]
    return certs, frame_from_rows(rows, FINDING_COLUMNS)


def _write(tmp_path, n: int, **options):
    certs, findings = _scan(n)
    suspects = build_suspects(certs, findings)
    files = write_reports(tmp_path, suspects, certs, findings, empty_frame(ERROR_COLUMNS),
                          empty_frame(REGISTRATION_COLUMNS), {"read": n}, now=NOW, **options)
    return files, suspects


def test_a_sheet_over_the_cap_keeps_the_best_scored_rows_and_says_the_csv_has_them_all(tmp_path):
    files, suspects = _write(tmp_path, 7, xlsx_max_rows=3)
    book = openpyxl.load_workbook(files["suspects.xlsx"], read_only=True)
    sheet = [list(r) for r in book["All suspects"].iter_rows(values_only=True)]
    header, body = sheet[0], sheet[1:]
    note = [v for v in header[len(suspects.columns):] if v]
    assert note == ["Only the first 3 of 7 rows are in this sheet (in the order of the list: suspects highest "
                    "score first); suspects.csv has every row."]
    assert len(body) == 3
    sha = header.index("sha256")
    assert [r[sha] for r in body] == suspects["sha256"].head(3).tolist()  # the ranked list's first rows
    assert {r[sha] for r in body[:2]} == {f"{3:064x}", f"{6:064x}"}  # the two with both signals rank first
    problem = [list(r) for r in book["internal_name"].iter_rows(values_only=True)]
    assert len(problem) == 4 and "appendix/internal_name.csv has every row." in problem[0][-1]
    assert len(list(book["ip_san"].iter_rows())) == 3  # two rows and the header: not cut, no note
    assert all(v is None or "Only the first" not in str(v) for v in next(book["ip_san"].iter_rows(values_only=True)))

    with open(files["suspects.csv"], newline="", encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == 7
    with open(files["appendix/internal_name.csv"], newline="", encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == 7
    doc = json.loads(files["summary.json"].read_text())
    assert doc["xlsx_sheets_cut"]["sheets"] == {
        "internal_name": {"rows": 7, "shown": 3, "every_row_in": "appendix/internal_name.csv"},
        "All suspects": {"rows": 7, "shown": 3, "every_row_in": "suspects.csv"},
    }
    assert "at most 3 rows per sheet" in doc["xlsx_sheets_cut"]["note"]
    figures = {r[0]: r[1] for r in book["Summary"].iter_rows(values_only=True) if r and r[0]}
    assert figures["Rows per sheet at most (the first of each list; the CSV files have every row)"] == 3


def test_sheets_within_the_cap_are_whole_and_summary_json_says_nothing_was_cut(tmp_path):
    files, _ = _write(tmp_path, 4)
    assert XLSX_MAX_ROWS == 100_000
    book = openpyxl.load_workbook(files["suspects.xlsx"], read_only=True)
    assert len(list(book["All suspects"].iter_rows())) == 5
    assert "xlsx_sheets_cut" not in json.loads(files["summary.json"].read_text())


def _sheets(path) -> dict[str, list[list[object]]]:
    book = openpyxl.load_workbook(path, read_only=True)
    return {ws.title: [list(r) for r in ws.iter_rows(values_only=True)] for ws in book.worksheets}


def test_a_large_workbook_written_by_a_second_process_is_the_one_written_here_and_says_what_it_cut(tmp_path, caplog):
    here, _ = _write(tmp_path / "here", 7, xlsx_max_rows=3, xlsx_process_from=10**9)
    with caplog.at_level("WARNING"):
        there, _ = _write(tmp_path / "there", 7, xlsx_max_rows=3, xlsx_process_from=0)
    assert _sheets(there["suspects.xlsx"]) == _sheets(here["suspects.xlsx"])
    assert json.loads(there["summary.json"].read_text()) == json.loads(here["summary.json"].read_text())
    # the cut sheets' warnings reach this process's log, as when the workbook is written here
    assert any("sheet All suspects: 7 rows, the first 3 written" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in (tmp_path / "there").iterdir()) == sorted(p.name for p in (tmp_path / "here").iterdir())
