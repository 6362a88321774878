"""The report writers, end to end: write_reports into a temp dir, then read every file back."""

from __future__ import annotations

import csv
import json
import re
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType

import openpyxl
import pandas as pd
import pytest

from scanner.core import records
from scanner.core.records import (
    CERT_COLUMNS,
    ERROR_COLUMNS,
    FINDING_CODES,
    FINDING_COLUMNS,
    REGISTRATION_COLUMNS,
    Finding,
    FindingCode,
    Registration,
    RegistrationStatus,
    empty_frame,
    frame_from_rows,
)
from scanner.detect.score import build_suspects
from scanner.report import write_reports, xlsx_report
from scanner.report.appendix import APPENDIX_COLUMNS
from scanner.report.csv_report import read_frame
from scanner.report.problems import SUSPECT_COLUMNS

NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)
TYPO, FIXED, EXPIRED, VALID = "a1" * 32, "b2" * 32, "c3" * 32, "d4" * 32
PRE_TYPO = "e5" * 32
FORMULA_SAN = '=HYPERLINK("http://evil.example","click")'


def crtsh(sha: str) -> str:
    """The crt.sh link as crt.sh and the scorer spell it (upper-case hex)."""
    return "https://crt.sh/?sha256=" + sha.upper()


def cert(sha: str, **fields: object) -> dict[str, object]:
    """A certificate row with plausible defaults."""
    row: dict[str, object] = {
        "sha256": sha,
        "cert_sha256": sha,
        "serial": sha[:16],
        "issuer_dn": "CN=AC Camerfirma for Websites - 2016,O=AC Camerfirma S.A.,C=ES",
        "subject_dn": "CN=mail.cualtis.net,O=CUALTIS S.L.U,C=ES",
        "subject_cn": "mail.cualtis.net",
        "subject_o": "CUALTIS S.L.U",
        "san_dns": ["mail.cualtis.net"],
        "not_before": "2019-11-12T12:17:00Z",
        "not_after": "2026-11-12T12:17:00Z",
    }
    row.update(fields)
    return row


def suspect_rows(certs: pd.DataFrame, findings: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """The suspects frame as the scoring stage hands it over: one row per certificate, ranked."""
    rows = []
    for sha in order:
        c = certs.set_index("sha256").loc[sha]
        f = findings[findings["sha256"] == sha]
        codes = list(dict.fromkeys(f["code"]))
        rows.append(
            {
                "sha256": sha,
                "crtsh_url": crtsh(sha),
                "serial": c["serial"],
                "subject_o": c["subject_o"],
                "subject_cn": c["subject_cn"],
                "sans": ";".join(c["san_dns"]),
                "not_before": c["not_before"],
                "not_after": c["not_after"],
                "revoked_at": c["revoked_at"],
                "signals": ";".join(codes),
                "score": sum(FINDING_CODES[code].weight for code in codes),
                "evidence": " | ".join(f["evidence"]),
                "cert_sha256": c["cert_sha256"],
                "precert_sha256": c["precert_sha256"],
                "issuer_dn": c["issuer_dn"],
                "subject_dn": c["subject_dn"],
                "revocation_reason": c["revocation_reason"],
                "provenance": f"crtsh:{len(rows) + 1}",
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture
def scan() -> dict[str, pd.DataFrame]:
    """The Camerfirma cuatis/cualtis case plus an expired and a still-valid unregistered-domain cert."""
    certs = frame_from_rows(
        [
            cert(
                TYPO,
                precert_sha256=PRE_TYPO,
                subject_dn="CN=mail.cuatis.net,O=CUALTIS S.L.U,C=ES",
                subject_cn="mail.cuatis.net",
                subject_o="=1+1",
                san_dns=["mail.cuatis.net", "-foo.cuatis.net", FORMULA_SAN],
                not_before="2019-11-12T12:17:00Z",
                not_after="2020-11-12T12:17:00Z",
                revoked_at="2019-11-12T16:47:00Z",
                revocation_reason="superseded",
            ),
            cert(FIXED, not_before="2019-11-12T17:10:00Z"),
            cert(
                EXPIRED,
                subject_o="@SUM(A1:A9)",
                subject_dn="CN=old.example,O=Bad\x00Org\x1b\x07",
                san_dns=["old.nxdomain-test.example"],
                not_before="2021-01-01T00:00:00Z",
                not_after="2022-01-01T00:00:00Z",
            ),
            cert(VALID, san_dns=["\tnew.nxdomain-test.example"], not_before="2025-01-01T00:00:00Z"),
        ],
        CERT_COLUMNS,
    )
    findings = frame_from_rows(
        [
            Finding(
                TYPO, "unregistered_domain", "cuatis.net is not registered (RDAP 404)", name="mail.cuatis.net"
            ).as_row(),
            Finding(
                TYPO, "typo_neighbour", "cuatis.net is one omission from cualtis.net", name="mail.cuatis.net"
            ).as_row(),
            Finding(
                TYPO,
                "revoke_reissue",
                "revoked 4.5 h after issue, reissued 23 min later",
                related_sha256=FIXED,
            ).as_row(),
            Finding(
                EXPIRED,
                "unregistered_domain",
                "nxdomain-test.example is not registered",
                name="old.nxdomain-test.example",
            ).as_row(),
            Finding(
                VALID,
                "unregistered_domain",
                "nxdomain-test.example is not registered",
                name="new.nxdomain-test.example",
            ).as_row(),
        ],
        FINDING_COLUMNS,
    )
    registrations = frame_from_rows(
        [
            Registration(
                "cuatis.net",
                RegistrationStatus.UNREGISTERED,
                "rdap",
                "https://rdap.verisign.com/net/v1/",
                "404 Not Found",
                datetime(2025, 5, 1, tzinfo=timezone.utc),
                None,
                1,
            ).as_row(),
            Registration(
                "-foo.example",
                RegistrationStatus.UNKNOWN,
                "whois",
                "whois.example:43",
                "'quoted reply",
                None,
                None,
                2,
            ).as_row(),
        ],
        REGISTRATION_COLUMNS,
    )
    errors = frame_from_rows(
        [
            {
                "stage": "parse",
                "source": "files",
                "provenance": "certs/bad.pem#2",
                "error": "=cmd|' /C calc'!A0",
            }
        ],
        ERROR_COLUMNS,
    )
    suspects = suspect_rows(certs, findings, [TYPO, VALID, EXPIRED])
    return {
        "certs": certs,
        "findings": findings,
        "registrations": registrations,
        "errors": errors,
        "suspects": suspects,
    }


def write(out: Path, scan: dict[str, pd.DataFrame], summary: dict | None = None) -> dict[str, Path]:
    return write_reports(
        out,
        scan["suspects"],
        scan["certs"],
        scan["findings"],
        scan["errors"],
        scan["registrations"],
        summary
        if summary is not None
        else {"read": 4, "parsed": 4, "errors": 1, "notices": ["crt.sh was slow"]},
        now=NOW,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def csv_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        return next(csv.reader(fh))


def all_cells(path: Path) -> list[tuple[str, str, object]]:
    book = openpyxl.load_workbook(path)
    return [(ws.title, c.data_type, c.value) for ws in book for row in ws.iter_rows() for c in row]


# --- suspects.csv ---------------------------------------------------------------------------


def test_suspects_csv_puts_the_suspect_columns_first_in_rank_order_with_iso_utc_times(tmp_path, scan):
    scan["suspects"].insert(0, "reviewer_note", "checked")  # an extra column, given first
    write(tmp_path, scan)
    header = csv_header(tmp_path / "suspects.csv")
    rows = read_csv(tmp_path / "suspects.csv")
    assert header[:12] == [
        "sha256",
        "crtsh_url",
        "serial",
        "subject_o",
        "subject_cn",
        "sans",
        "not_before",
        "not_after",
        "revoked_at",
        "signals",
        "score",
        "evidence",
    ]
    assert header == [*SUSPECT_COLUMNS, "reviewer_note"]
    assert [r["sha256"] for r in rows] == [TYPO, VALID, EXPIRED]
    assert rows[0]["not_before"] == "2019-11-12T12:17:00Z"
    assert rows[0]["revoked_at"] == "2019-11-12T16:47:00Z"
    assert rows[1]["revoked_at"] == ""
    assert float(rows[0]["score"]) == 85.0


def test_formula_like_values_are_quoted_in_the_csvs(tmp_path, scan):
    write(tmp_path, scan)
    rows = read_csv(tmp_path / "suspects.csv")
    by_sha = {r["sha256"]: r for r in rows}
    assert by_sha[TYPO]["subject_o"] == "'=1+1"
    assert by_sha[EXPIRED]["subject_o"] == "'@SUM(A1:A9)"
    assert by_sha[VALID]["sans"] == "'\tnew.nxdomain-test.example"
    errors = read_csv(tmp_path / "errors.csv")
    assert errors[0]["error"] == "'=cmd|' /C calc'!A0"
    for path in tmp_path.rglob("*.csv"):
        for row in csv.reader(path.open(encoding="utf-8", newline="")):
            for value in row:
                assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (path.name, value)


def test_control_characters_become_visible_replacement_characters_in_the_csv(tmp_path, scan):
    write(tmp_path, scan)
    rows = read_csv(tmp_path / "suspects.csv")
    subject = {r["sha256"]: r for r in rows}[EXPIRED]["subject_dn"]
    assert subject == "CN=old.example,O=Bad\ufffdOrg\ufffd\ufffd"


# --- suspects.xlsx --------------------------------------------------------------------------


def test_xlsx_has_summary_then_one_sheet_per_problem_then_the_full_lists(tmp_path, scan):
    write(tmp_path, scan)
    book = openpyxl.load_workbook(tmp_path / "suspects.xlsx")
    assert book.sheetnames == [
        "Summary",
        "unregistered_domain",
        "typo_neighbour",
        "revoke_reissue",
        "All suspects",
        "Registrations",
        "Errors",
    ]
    unregistered = book["unregistered_domain"]
    hashes = [row[0] for row in unregistered.iter_rows(min_row=2, values_only=True)]
    assert hashes == [TYPO, VALID, EXPIRED]
    header = [c.value for c in unregistered[1]]
    assert header[: len(SUSPECT_COLUMNS)][:6] == list(SUSPECT_COLUMNS)[:6]
    assert header[-4:] == ["name", "related_sha256", "finding_evidence", "finding_detail"]
    assert book["revoke_reissue"].cell(2, header.index("related_sha256") + 1).value == FIXED


def test_every_data_sheet_has_a_frozen_header_and_an_autofilter_over_its_rows(tmp_path, scan):
    write(tmp_path, scan)
    book = openpyxl.load_workbook(tmp_path / "suspects.xlsx")
    expected_rows = {
        "unregistered_domain": 3,
        "typo_neighbour": 1,
        "All suspects": 3,
        "Registrations": 2,
        "Errors": 1,
    }
    for name, rows in expected_rows.items():
        ws = book[name]
        assert ws.freeze_panes == "A2", name
        last_col = openpyxl.utils.get_column_letter(ws.max_column)
        assert ws.auto_filter.ref == f"A1:{last_col}{rows + 1}", name
        widths = [
            ws.column_dimensions[openpyxl.utils.get_column_letter(i)].width
            for i in range(1, ws.max_column + 1)
        ]
        assert all(8 <= w <= xlsx_report.MAX_COLUMN_WIDTH + 1 for w in widths), (name, widths)


def test_crtsh_cells_link_to_the_certificate_and_related_cells_to_the_paired_one(tmp_path, scan):
    write(tmp_path, scan)
    book = openpyxl.load_workbook(tmp_path / "suspects.xlsx")
    ws = book["All suspects"]
    header = [c.value for c in ws[1]]
    link = ws.cell(2, header.index("crtsh_url") + 1)
    assert link.hyperlink.target == crtsh(TYPO)
    pair = book["revoke_reissue"]
    header = [c.value for c in pair[1]]
    assert pair.cell(2, header.index("related_sha256") + 1).hyperlink.target == crtsh(FIXED)
    summary = book["Summary"]
    assert summary.cell(2, 2).value == "unregistered_domain"
    assert summary.cell(2, 2).hyperlink.location == "'unregistered_domain'!A1"


def test_formula_sans_and_organisations_are_stored_as_text_never_as_formulas(tmp_path, scan):
    scan["suspects"].loc[0, "sans"] = FORMULA_SAN
    write(tmp_path, scan)
    cells = all_cells(tmp_path / "suspects.xlsx")
    assert not [c for c in cells if c[1] == "f"]
    values = {c[2] for c in cells}
    assert "'" + FORMULA_SAN in values
    assert "'=1+1" in values
    assert "'@SUM(A1:A9)" in values
    with zipfile.ZipFile(tmp_path / "suspects.xlsx") as z:
        for name in z.namelist():
            if name.startswith("xl/worksheets/"):
                assert not re.search(rb"<f[ >]", z.read(name)), name


def test_xml_illegal_control_characters_leave_a_workbook_that_opens(tmp_path, scan):
    # (a lone surrogate cannot even enter a pandas string column; the sanitize unit tests cover it)
    scan["suspects"].loc[2, "subject_o"] = "Bad\x00Org\x1b\x0b\ufffe\uffff"
    write(tmp_path, scan)
    ws = openpyxl.load_workbook(tmp_path / "suspects.xlsx")["All suspects"]
    header = [c.value for c in ws[1]]
    assert ws.cell(4, header.index("subject_o") + 1).value == "Bad\ufffdOrg\ufffd\ufffd\ufffd\ufffd"
    assert ws.cell(4, header.index("subject_dn") + 1).value == "CN=old.example,O=Bad\ufffdOrg\ufffd\ufffd"


def test_times_are_real_excel_datetimes_in_utc_under_headers_that_say_utc(tmp_path, scan):
    write(tmp_path, scan)
    ws = openpyxl.load_workbook(tmp_path / "suspects.xlsx")["All suspects"]
    header = [c.value for c in ws[1]]
    assert {"not_before (UTC)", "not_after (UTC)", "revoked_at (UTC)"} <= set(header)
    cell = ws.cell(2, header.index("revoked_at (UTC)") + 1)
    assert cell.is_date
    assert cell.value == datetime(2019, 11, 12, 16, 47)
    score = ws.cell(2, header.index("score") + 1)
    assert score.data_type == "n" and score.value == 85


def test_a_san_list_longer_than_excel_allows_is_cut_visibly_in_xlsx_and_kept_whole_in_csv(tmp_path, scan):
    sans = ";".join(f"host{i:05d}.cuatis.net" for i in range(3000))  # about 60,000 characters
    scan["suspects"].loc[0, "sans"] = sans
    write(tmp_path, scan)
    ws = openpyxl.load_workbook(tmp_path / "suspects.xlsx")["All suspects"]
    value = ws.cell(2, list(SUSPECT_COLUMNS).index("sans") + 1).value
    assert len(value) <= 32_767
    assert value.startswith("host00000.cuatis.net;")
    assert "truncated" in value[-100:]
    assert read_csv(tmp_path / "suspects.csv")[0]["sans"] == sans


def test_links_past_excels_per_sheet_cap_are_written_as_plain_text(tmp_path, scan, monkeypatch):
    monkeypatch.setattr(xlsx_report, "MAX_LINKS_PER_SHEET", 2)
    write(tmp_path, scan)
    ws = openpyxl.load_workbook(tmp_path / "suspects.xlsx")["All suspects"]
    col = list(SUSPECT_COLUMNS).index("crtsh_url") + 1
    assert [ws.cell(r, col).hyperlink is not None for r in (2, 3, 4)] == [True, True, False]
    assert ws.cell(4, col).value == crtsh(EXPIRED)


def test_the_summary_sheet_shows_the_run_figures(tmp_path, scan):
    write(tmp_path, scan, {"read": 4, "lookups": {"rdap": {"registered": 7}}, "notices": ["=crt.sh slow"]})
    ws = openpyxl.load_workbook(tmp_path / "suspects.xlsx")["Summary"]
    pairs = {row[0]: row[1] for row in ws.iter_rows(min_row=2, values_only=True) if row[0]}
    assert pairs["read"] == 4
    assert pairs["lookups.rdap.registered"] == 7
    assert pairs["notices[1]"] == "'=crt.sh slow"
    assert pairs["Figures counted as of (UTC)"] == datetime(2025, 6, 1)


def test_sheet_names_for_odd_finding_codes_are_legal_short_and_unique(tmp_path, scan, monkeypatch):
    odd = ["ocsp/unauthorized:[responder]*?", "a" * 40 + "_x", "a" * 40 + "_y", "summary", "it's odd"]
    extra_codes = {code: FindingCode(code, "low", 1.0, f"odd {code}", "An odd code.") for code in odd}
    monkeypatch.setattr(records, "FINDING_CODES", MappingProxyType({**FINDING_CODES, **extra_codes}))
    extra = frame_from_rows([Finding(TYPO, code, "odd").as_row() for code in odd], FINDING_COLUMNS)
    scan["findings"] = pd.concat([scan["findings"], extra], ignore_index=True)
    write(tmp_path, scan)
    book = openpyxl.load_workbook(tmp_path / "suspects.xlsx")
    names = book.sheetnames
    assert len({n.lower() for n in names}) == len(names) == 3 + len(odd) + 4
    for name in names:
        assert len(name) <= 31 and not re.search(r"[\[\]:*?/\\]", name), name
    assert (tmp_path / "appendix" / "ocsp_unauthorized__responder___.csv").exists()
    summary = book["Summary"]
    link = next(c.hyperlink for c in summary["B"] if c.value == "it's odd")
    assert link.location == "'it''s odd'!A1"


# --- appendix -------------------------------------------------------------------------------


def test_appendix_starts_with_exactly_the_ccadb_columns_and_ours_come_after_revocation_reason(tmp_path, scan):
    write(tmp_path, scan)
    header = csv_header(tmp_path / "appendix" / "unregistered_domain.csv")
    assert header[:11] == [
        "Precertificate SHA-256 hash",
        "Certificate SHA-256 hash",
        "Subject",
        "Issuer",
        "Not before",
        "Not after",
        "Serial #",
        "dNSNames",
        "Is revoked?",
        "Revocation date",
        "Revocation reason",
    ]
    assert header[:11] == list(APPENDIX_COLUMNS)
    assert set(header[11:]) >= {"Signals", "Score", "Evidence", "crt.sh URL"}


def test_is_revoked_says_yes_for_revoked_na_for_expired_and_planned_for_valid(tmp_path, scan):
    write(tmp_path, scan)
    rows = {
        r["Certificate SHA-256 hash"]: r for r in read_csv(tmp_path / "appendix" / "unregistered_domain.csv")
    }
    assert rows[TYPO]["Is revoked?"] == "Yes"
    assert rows[TYPO]["Revocation date"] == "2019-11-12T16:47:00Z"
    assert rows[TYPO]["Revocation reason"] == "superseded"
    assert rows[TYPO]["Precertificate SHA-256 hash"] == PRE_TYPO
    assert rows[TYPO]["Subject"] == "CN=mail.cuatis.net,O=CUALTIS S.L.U,C=ES"
    assert rows[TYPO]["dNSNames"] == "mail.cuatis.net;-foo.cuatis.net;" + FORMULA_SAN
    assert rows[EXPIRED]["Is revoked?"] == "N/A"
    assert (rows[EXPIRED]["Revocation date"], rows[EXPIRED]["Revocation reason"]) == ("N/A", "")
    assert rows[VALID]["Is revoked?"] == "Planned"
    assert rows[VALID]["Not after"] == "2026-11-12T12:17:00Z"


def test_the_same_certificate_becomes_expired_once_now_passes_its_not_after(tmp_path, scan):
    write_reports(
        tmp_path,
        scan["suspects"],
        scan["certs"],
        scan["findings"],
        scan["errors"],
        scan["registrations"],
        {},
        now=datetime(2027, 1, 1, tzinfo=timezone.utc),
    )
    rows = {
        r["Certificate SHA-256 hash"]: r for r in read_csv(tmp_path / "appendix" / "unregistered_domain.csv")
    }
    assert rows[VALID]["Is revoked?"] == "N/A"


def test_crtsh_lists_hold_one_uppercase_link_per_certificate(tmp_path, scan):
    write(tmp_path, scan)
    lines = (tmp_path / "appendix" / "unregistered_domain.crtsh.txt").read_text().splitlines()
    assert lines == [crtsh(h) for h in (TYPO, VALID, EXPIRED)]
    typo = (tmp_path / "appendix" / "typo_neighbour.crtsh.txt").read_text()
    assert typo == crtsh(TYPO) + "\n"


def test_incident_summary_figures_match_the_xlsx_summary_sheet(tmp_path, scan):
    write(tmp_path, scan)
    md = (tmp_path / "appendix" / "incident-summary.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ") and "`" in line]
    md_rows = {
        cells[1].strip("`"): cells
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in table)
    }
    assert md_rows["unregistered_domain"][2:8] == [
        "3",
        "2019-11-12T12:17:00Z",
        "2025-01-01T00:00:00Z",
        "1",
        "1",
        "1",
    ]
    ws = openpyxl.load_workbook(tmp_path / "suspects.xlsx")["Summary"]
    for row in ws.iter_rows(min_row=2, max_row=4, values_only=True):
        title, code, _severity, count, first, last, revoked, expired, valid, short_lived = row
        cells = md_rows[code]
        assert cells[0] == title
        assert [int(cells[2]), cells[3], cells[4], int(cells[5]), int(cells[6]), int(cells[7]), int(cells[8])] == [
            count,
            first.strftime("%Y-%m-%dT%H:%M:%SZ"),
            last.strftime("%Y-%m-%dT%H:%M:%SZ"),
            revoked,
            expired,
            valid,
            short_lived,
        ]
    problems = json.loads((tmp_path / "summary.json").read_text())["problems"]
    assert {p["code"]: p["certificates"] for p in problems} == {
        "unregistered_domain": 3,
        "typo_neighbour": 1,
        "revoke_reissue": 1,
    }


# --- the other files ------------------------------------------------------------------------


def test_registrations_csv_reads_back_as_the_same_recorded_answers(tmp_path, scan):
    write(tmp_path, scan)
    path = tmp_path / "registrations.csv"
    assert csv_header(path) == list(REGISTRATION_COLUMNS)
    assert read_csv(path)[1]["domain"] == "'-foo.example"
    back = read_frame(path, REGISTRATION_COLUMNS)
    pd.testing.assert_frame_equal(back, scan["registrations"], check_dtype=True)


def test_errors_csv_has_exactly_the_error_columns(tmp_path, scan):
    write(tmp_path, scan)
    assert csv_header(tmp_path / "errors.csv") == list(ERROR_COLUMNS)
    assert read_csv(tmp_path / "errors.csv")[0]["provenance"] == "certs/bad.pem#2"


def test_summary_json_keeps_the_run_figures_and_lists_every_report_file(tmp_path, scan):
    files = write(
        tmp_path, scan, {"read": 4, "wall_time_seconds": 1.5, "notices": ["x"], "ratio": float("nan")}
    )
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert (doc["read"], doc["wall_time_seconds"], doc["notices"], doc["ratio"]) == (4, 1.5, ["x"], None)
    assert sorted(doc["report_files"]) == sorted(files)
    for name, path in files.items():
        assert path == tmp_path / name and path.is_file(), name
    assert {"suspects.csv", "suspects.xlsx", "errors.csv", "registrations.csv", "summary.json"} <= set(files)


def test_writing_leaves_no_tmp_files_behind(tmp_path, scan):
    write(tmp_path / "out" / "nested", scan)
    write(tmp_path / "out" / "nested", scan)  # overwriting the same reports works too
    assert not list(tmp_path.rglob("*.tmp"))
    assert (tmp_path / "out" / "nested" / "suspects.xlsx").is_file()


def test_a_failed_xlsx_write_keeps_the_previous_file_and_leaves_no_tmp(tmp_path, scan, monkeypatch):
    write(tmp_path, scan)
    before = (tmp_path / "suspects.xlsx").read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(xlsx_report, "_write_summary", broken)
    with pytest.raises(RuntimeError):
        write(tmp_path, scan)
    assert (tmp_path / "suspects.xlsx").read_bytes() == before
    assert not list(tmp_path.rglob("*.tmp"))


def test_an_empty_scan_still_writes_every_file_with_headers(tmp_path):
    files = write_reports(
        tmp_path,
        pd.DataFrame(),
        empty_frame(CERT_COLUMNS),
        empty_frame(FINDING_COLUMNS),
        empty_frame(ERROR_COLUMNS),
        empty_frame(REGISTRATION_COLUMNS),
        {"read": 0},
        now=NOW,
    )
    assert csv_header(tmp_path / "suspects.csv") == list(SUSPECT_COLUMNS)
    assert read_csv(tmp_path / "suspects.csv") == []
    assert csv_header(tmp_path / "registrations.csv") == list(REGISTRATION_COLUMNS)
    assert csv_header(tmp_path / "errors.csv") == list(ERROR_COLUMNS)
    book = openpyxl.load_workbook(tmp_path / "suspects.xlsx")
    assert book.sheetnames == ["Summary", "All suspects", "Registrations", "Errors"]
    assert [c.value for c in book["All suspects"][1]][:3] == ["sha256", "crtsh_url", "serial"]
    assert "No problematic certificates" in (tmp_path / "appendix" / "incident-summary.md").read_text()
    assert json.loads((tmp_path / "summary.json").read_text())["problems"] == []
    assert set(files) == {
        "suspects.csv",
        "suspects.xlsx",
        "errors.csv",
        "registrations.csv",
        "summary.json",
        "appendix/incident-summary.md",
    }


def test_suspects_built_by_the_real_scorer_are_written_first_with_iso_times_and_links(tmp_path, scan):
    scan["suspects"] = build_suspects(scan["certs"], scan["findings"])
    write(tmp_path, scan)
    assert csv_header(tmp_path / "suspects.csv") == list(SUSPECT_COLUMNS)
    first = read_csv(tmp_path / "suspects.csv")[0]
    assert (first["sha256"], first["crtsh_url"], first["not_before"]) == (
        TYPO,
        crtsh(TYPO),
        "2019-11-12T12:17:00Z",
    )
    assert first["subject_o"] == "'=1+1"
    ws = openpyxl.load_workbook(tmp_path / "suspects.xlsx")["All suspects"]
    assert ws.cell(2, list(SUSPECT_COLUMNS).index("crtsh_url") + 1).hyperlink.target == crtsh(TYPO)
    appendix = read_csv(tmp_path / "appendix" / "revoke_reissue.csv")
    assert [r["Certificate SHA-256 hash"] for r in appendix] == [TYPO]
    assert set(appendix[0]["Signals"].split(";")) == {
        "unregistered_domain",
        "typo_neighbour",
        "revoke_reissue",
    }


def test_workbook_lists_only_unconfirmed_registrations_while_the_csv_keeps_every_domain(tmp_path, scan):
    extra = frame_from_rows([
        Registration("cualtis.net", RegistrationStatus.REGISTERED, "rdap", "https://rdap.verisign.com/net/v1/",
                     "200", datetime(2025, 5, 1, tzinfo=timezone.utc), None, 1).as_row(),
        Registration("notasked.example", RegistrationStatus.UNKNOWN, "none", "", "lookups off",
                     datetime(2025, 5, 1, tzinfo=timezone.utc), None, 0).as_row(),
    ], REGISTRATION_COLUMNS)
    scan = dict(scan, registrations=pd.concat([scan["registrations"], extra], ignore_index=True))
    write(tmp_path, scan)
    sheet = openpyxl.load_workbook(tmp_path / "suspects.xlsx")["Registrations"]
    in_sheet = {row[0] for row in sheet.iter_rows(min_row=2, values_only=True)}
    with open(tmp_path / "registrations.csv", newline="") as fh:
        in_csv = {row["domain"] for row in csv.DictReader(fh)}
    assert "cuatis.net" in in_sheet and "cualtis.net" not in in_sheet and "notasked.example" not in in_sheet
    assert {"cuatis.net", "cualtis.net", "notasked.example"} <= in_csv
