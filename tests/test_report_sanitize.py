"""Cell sanitising and per-problem figures, unit by unit."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest

from scanner.core.records import CERT_COLUMNS, FINDING_COLUMNS, Finding, frame_from_rows
from scanner.report.problems import certificate_facts, crtsh_url, problem_stats, revocation_states
from scanner.report.sanitize import (
    EXCEL_CELL_LIMIT,
    clean_control_chars,
    safe_text,
    truncate,
    unescape_formula,
)


@pytest.mark.parametrize(
    "value", ["=1+1", "+1", "-foo.example", "@SUM(A1)", "\t=1", "\r=1", "\uff1dSUM(A1)", '=HYPERLINK("x")']
)
def test_values_a_spreadsheet_would_evaluate_get_a_leading_quote(value):
    assert safe_text(value) == "'" + value


@pytest.mark.parametrize("value", ["mail.cualtis.net", "CN=x,O=y", "1-2", "", "a=b"])
def test_ordinary_values_are_left_alone(value):
    assert safe_text(value) == value


@pytest.mark.parametrize("value", ["=1+1", "'=1+1", "''", "'", "plain", "-x", "'plain"])
def test_the_formula_escape_is_undone_exactly(value):
    assert unescape_formula(safe_text(value)) == value


def test_xml_illegal_characters_become_replacement_characters_but_tab_and_newlines_stay():
    assert (
        clean_control_chars("a\x00b\x08c\x0bd\x1fe\x7ff\ud800g\uffff")
        == "a\ufffdb\ufffdc\ufffdd\ufffde\ufffdf\ufffdg\ufffd"
    )
    assert clean_control_chars("one\ttwo\nthree\rfour") == "one\ttwo\nthree\rfour"


def test_a_control_character_cannot_hide_a_formula_behind_it():
    assert safe_text("\x00=1+1") == "\ufffd=1+1"  # no longer starts with "=", so not a formula


def test_truncation_stays_within_excels_limit_and_says_how_much_was_cut():
    text = "x" * 100_000
    cut = truncate(text)
    assert len(cut) <= EXCEL_CELL_LIMIT
    kept = len(cut) - len(cut.lstrip("x"))
    assert f"truncated {100_000 - kept:,} characters" in cut
    assert truncate("short") == "short"


def test_crtsh_links_are_uppercase_and_only_for_real_sha256_hashes():
    assert crtsh_url("ab" * 32) == "https://crt.sh/?sha256=" + "AB" * 32
    assert crtsh_url("javascript:alert(1)") == ""
    assert crtsh_url("ab" * 31) == ""


def test_revocation_state_is_revoked_then_expired_then_valid_with_unknown_expiry_counted_valid():
    certs = frame_from_rows(
        [
            {"sha256": "r", "not_after": "2020-01-01T00:00:00Z", "revoked_at": "2019-06-01T00:00:00Z"},
            {"sha256": "e", "not_after": "2020-01-01T00:00:00Z"},
            {"sha256": "v", "not_after": "2030-01-01T00:00:00Z"},
            {"sha256": "u"},
        ],
        CERT_COLUMNS,
    )
    facts = certificate_facts(certs, pd.DataFrame())
    states = revocation_states(facts, datetime(2025, 1, 1, tzinfo=timezone.utc))
    assert states.to_dict() == {"r": "revoked", "e": "expired", "v": "valid", "u": "valid"}


def test_problem_figures_count_each_certificate_once_however_many_findings_it_has():
    certs = frame_from_rows(
        [
            {"sha256": "a", "not_before": "2020-01-01T00:00:00Z", "not_after": "2030-01-01T00:00:00Z"},
            {"sha256": "b", "not_before": "2021-01-01T00:00:00Z", "not_after": "2022-01-01T00:00:00Z"},
        ],
        CERT_COLUMNS,
    )
    findings = frame_from_rows(
        [
            Finding("a", "unregistered_domain", "x", name="x.example").as_row(),
            Finding("a", "unregistered_domain", "y", name="y.example").as_row(),
            Finding("b", "unregistered_domain", "z", name="z.example").as_row(),
            Finding("b", "early_revocation", "e").as_row(),
        ],
        FINDING_COLUMNS,
    )
    stats = problem_stats(
        findings, certificate_facts(certs, pd.DataFrame()), datetime(2025, 1, 1, tzinfo=timezone.utc)
    )
    assert stats["code"].tolist() == ["unregistered_domain", "early_revocation"]  # high severity first
    row = stats.iloc[0]
    assert (row.certificates, row.revoked, row.expired, row.valid) == (2, 0, 1, 1)
    assert row.first_not_before == pd.Timestamp("2020-01-01T00:00:00Z")
    assert row.last_not_before == pd.Timestamp("2021-01-01T00:00:00Z")
