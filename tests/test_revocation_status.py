"""The revocation-status rules, one comparison each, on small hand-built tables (no network, no servers)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scanner.core.records import FINDING_CODES, FINDING_COLUMNS, empty_frame, frame_from_rows
from scanner.detect.revocation_status import (
    TIME_TOLERANCE,
    Answer,
    Listed,
    answers_by_certificate,
    crl_missing_revoked_finding,
    crl_problem_findings,
    crl_view,
    detect_revocation_status,
    freshness_finding,
    good_but_revoked_finding,
    ocsp_findings,
    primary_answer,
    revocation_time_mismatch_finding,
    signature_finding,
    status_finding,
    variant_disagreement_finding,
)
from scanner.enrich.revocation.tables import CRL_TABLE_COLUMNS, OCSP_RESULT_COLUMNS, REVOCATION_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
NOW = pd.Timestamp("2025-03-01T12:00:00Z")
RESPONDER = "http://ocsp.example/"
CRL_URL = "http://crl.example/ca.crl"


def answer_rows(*overrides: dict[str, Any], sha: str = "aa") -> pd.DataFrame:
    """OCSP result rows for one certificate: SHA-1/GET first, then SHA-256/POST, each good unless overridden."""
    rows = []
    for (hash_name, method), extra in zip((("sha1", "GET"), ("sha256", "POST")), overrides):
        rows.append({"sha256": sha, "serial": "0a", "responder": RESPONDER, "method": method, "hash": hash_name,
                     "status": "good", "http_status": 200, "latency_ms": 12.34,
                     "this_update": NOW - pd.Timedelta(hours=1), "next_update": NOW + pd.Timedelta(days=3),
                     "signature": "ok", "signer": "issuer", "freshness": "ok", "error": "", "notes": "", **extra})
    return frame_from_rows(rows, OCSP_RESULT_COLUMNS)


def answers(*overrides: dict[str, Any]) -> list[Answer]:
    return answers_by_certificate(answer_rows(*overrides))["aa"]


def cert(**extra: Any) -> dict[str, Any]:
    row = {"sha256": "aa", "serial": "0a", "issuer_dn": "CN=Test CA", "issuer_key_id": "k1",
           "not_before": NOW - pd.Timedelta(days=30), "not_after": NOW + pd.Timedelta(days=300),
           "crl_distribution_points": [CRL_URL], "ocsp_urls": [RESPONDER], "revoked_at": pd.NaT,
           "revocation_source": ""}
    row.update(extra)
    return row


def crl_table(**extra: Any) -> pd.DataFrame:
    row = {"url": CRL_URL, "status": "ok", "issuer_dn": "CN=Test CA", "issuer_key_id": "k1",
           "this_update": NOW - pd.Timedelta(hours=6), "next_update": NOW + pd.Timedelta(days=6), "entries": 0,
           "signature": "ok", "error": "", "source": "certificates"}
    row.update(extra)
    return frame_from_rows([row], CRL_TABLE_COLUMNS)


def codes(findings: list) -> list[str]:
    return [f.code for f in findings]


# --- which answer counts -----------------------------------------------------------------------


def test_the_get_answer_is_read_first_and_the_post_one_stands_in_when_get_got_none():
    assert primary_answer(answers({}, {"status": "revoked"})).method == "GET"
    assert primary_answer(answers({"status": "unreachable"}, {"status": "revoked"})).method == "POST"
    assert primary_answer(answers({"status": "unreachable"}, {"status": "malformed"})).method == "GET"


def test_missing_values_of_a_result_row_become_none_and_the_detail_says_null():
    r = answers({"status": "unreachable", "http_status": None, "latency_ms": None, "this_update": None,
                 "error": "refused"})[0]
    assert (r.http_status, r.latency_ms, r.this_update) == (None, None, None)
    detail = json.loads(status_finding(r)[0].detail)
    assert detail == {"responder": RESPONDER, "method": "GET", "hash": "sha1", "http_status": None,
                      "latency_ms": None, "error": "refused"}


# --- one rule each -----------------------------------------------------------------------------


def test_an_answer_that_is_neither_good_nor_revoked_is_named_by_its_status():
    assert status_finding(answers({})[0]) == []
    for status, code in (("unknown", "ocsp_unknown"), ("tryLater", "ocsp_try_later"),
                         ("sigRequired", "ocsp_error_status"), ("unreachable", "ocsp_unreachable")):
        [f] = status_finding(answers({"status": status, "error": "why"})[0])
        assert f.code == code and f.name == RESPONDER
        assert f.evidence == f"{RESPONDER} (GET, sha1 CertID) answered {status} for this unexpired certificate: why"


def test_a_status_finding_is_the_only_finding_even_when_the_variants_disagree():
    found = ocsp_findings(cert(), answers({"status": "unknown"}, {"status": "revoked"}), Listed(), crl_table())
    assert codes(found) == ["ocsp_unknown"]


def test_a_bad_or_unauthorised_signature_is_flagged_with_the_signer():
    assert signature_finding(answers({})[0]) == []
    [f] = signature_finding(answers({"signature": "unauthorised_signer", "signer": "unknown"})[0])
    assert f.code == "ocsp_bad_signature" and "signature unauthorised signer; signer unknown" in f.evidence


def test_stale_and_future_answers_carry_the_note_and_both_times_in_iso():
    assert freshness_finding(answers({})[0]) == []
    [f] = freshness_finding(answers({"freshness": "stale", "notes": "nextUpdate 2025-02-20T00:00:00Z has passed"})[0])
    assert f.code == "ocsp_stale" and f.evidence.endswith(": nextUpdate 2025-02-20T00:00:00Z has passed")
    assert json.loads(f.detail)["this_update"] == "2025-03-01T11:00:00Z"
    assert codes(freshness_finding(answers({"freshness": "future"})[0])) == ["ocsp_future"]


def test_good_while_a_fetched_crl_lists_it_is_good_but_revoked_with_the_lag():
    revoked = NOW - pd.Timedelta(days=2)
    [f] = good_but_revoked_finding(answers({})[0], Listed(crl_time=revoked, crl_url=CRL_URL))
    assert f.code == "ocsp_good_but_revoked"
    assert f.evidence == (f"{RESPONDER} (GET, sha1 CertID) says good (thisUpdate 2025-03-01T11:00:00Z, signed after "
                          f"the revocation) but the CRL {CRL_URL} says revoked at 2025-02-27T12:00:00Z")
    detail = json.loads(f.detail)
    assert detail["revocation_source"] == "crl" and detail["lag_seconds"] == 47 * 3600


def test_good_while_crtsh_says_revoked_names_crtsh_and_an_answer_older_than_the_revocation_says_so():
    listed = Listed(listed_time=NOW - pd.Timedelta(minutes=10), listed_source="crtsh")
    [f] = good_but_revoked_finding(answers({})[0], listed)
    assert "made before the revocation and still served) but crtsh says revoked" in f.evidence
    assert json.loads(f.detail)["revocation_source"] == "crtsh"


def test_good_with_no_revocation_anywhere_or_a_revoked_answer_is_not_good_but_revoked():
    assert good_but_revoked_finding(answers({})[0], Listed()) == []
    assert good_but_revoked_finding(answers({"status": "revoked"})[0], Listed(crl_time=NOW, crl_url=CRL_URL)) == []


def test_revocation_times_further_apart_than_the_tolerance_are_a_mismatch():
    when = NOW - pd.Timedelta(days=1)
    r = answers({"status": "revoked", "revocation_time": when})[0]
    assert revocation_time_mismatch_finding(r, Listed(crl_time=when + TIME_TOLERANCE, crl_url=CRL_URL)) == []
    [f] = revocation_time_mismatch_finding(r, Listed(crl_time=when + pd.Timedelta(hours=1), crl_url=CRL_URL))
    assert f.code == "revocation_time_mismatch" and f.evidence.endswith("(3600 s apart)")
    assert json.loads(f.detail)["crl_revocation_time"] == "2025-02-28T13:00:00Z"


def test_a_time_mismatch_is_judged_against_crtsh_but_not_against_an_input_of_unknown_origin():
    when = NOW - pd.Timedelta(days=1)
    r = answers({"status": "revoked", "revocation_time": when})[0]
    later = when + pd.Timedelta(hours=2)
    assert codes(revocation_time_mismatch_finding(r, Listed(listed_time=later, listed_source="crtsh"))) == [
        "revocation_time_mismatch"]
    assert revocation_time_mismatch_finding(r, Listed(listed_time=later, listed_source="")) == []


def test_only_a_crl_made_after_the_revocation_is_blamed_for_not_listing_it():
    r = answers({"status": "revoked", "revocation_time": NOW - pd.Timedelta(days=1)})[0]
    [f] = crl_missing_revoked_finding(r, Listed(), cert(), crl_table())
    assert f.code == "crl_missing_revoked" and f"the CRL {CRL_URL} (thisUpdate 2025-03-01T06:00:00Z)" in f.evidence
    assert f.evidence.endswith("does not list serial 0a")
    recent = answers({"status": "revoked", "revocation_time": NOW - pd.Timedelta(hours=1)})[0]
    assert crl_missing_revoked_finding(recent, Listed(), cert(), crl_table()) == []


def test_a_crl_of_another_issuer_or_one_that_lists_it_is_not_missing_the_revocation():
    r = answers({"status": "revoked", "revocation_time": NOW - pd.Timedelta(days=1)})[0]
    other = crl_table(issuer_dn="CN=Other CA", issuer_key_id="k2")
    assert crl_missing_revoked_finding(r, Listed(), cert(), other) == []
    assert crl_missing_revoked_finding(r, Listed(crl_time=NOW, crl_url=CRL_URL), cert(), crl_table()) == []
    assert crl_missing_revoked_finding(r, Listed(), cert(), crl_table(status="bad_signature")) == []


def test_good_over_get_and_revoked_over_post_is_a_variant_disagreement():
    pair = answers({}, {"status": "revoked"})
    [f] = variant_disagreement_finding(pair[0], pair)
    assert f.evidence == "GET/sha1: good; POST/sha256: revoked"
    assert json.loads(f.detail)["answers"] == {"GET/sha1": "good", "POST/sha256": "revoked"}
    same = answers({}, {"status": "unknown"})
    assert variant_disagreement_finding(same[0], same) == []


def test_an_unusable_crl_is_a_finding_on_each_certificate_pointing_at_it():
    bad = {CRL_URL: {"url": CRL_URL, "status": "stale", "error": "nextUpdate 2025-02-01T00:00:00Z has passed"}}
    [f] = crl_problem_findings(cert(), bad)
    assert (f.code, f.name) == ("crl_stale", CRL_URL)
    assert f.evidence == f"The CRL this certificate points at ({CRL_URL}) is stale: nextUpdate 2025-02-01T00:00:00Z has passed"
    assert json.loads(f.detail) == {"crl": CRL_URL, "status": "stale"}
    assert crl_problem_findings(cert(crl_distribution_points=["http://elsewhere/x.crl"]), bad) == []
    # the same cell as a shared tuple, or as the array a table read back from Parquet holds
    for cell in ((CRL_URL,), np.array([CRL_URL], dtype=object)):
        assert [x.code for x in crl_problem_findings(cert(crl_distribution_points=cell), bad)] == ["crl_stale"]


def test_crl_view_finds_the_fetched_revocation_of_a_certificate_by_issuer_key_and_serial():
    certs = pd.DataFrame([cert(), cert(sha256="bb", serial="0b")])
    revs = frame_from_rows([{"issuer_dn": "CN=Test CA", "issuer_key_id": "k1", "serial": "0a",
                             "revoked_at": NOW - pd.Timedelta(days=2), "revocation_reason": "", "crl": CRL_URL}],
                           REVOCATION_COLUMNS)
    assert crl_view(certs, revs) == {"aa": (NOW - pd.Timedelta(days=2), CRL_URL, "")}


# --- the whole detector ------------------------------------------------------------------------


def test_the_detector_judges_only_unexpired_certificates_and_returns_the_findings_columns():
    certs = pd.DataFrame([cert(crl_distribution_points=[]),
                          cert(sha256="bb", not_after=NOW - pd.Timedelta(days=1), crl_distribution_points=[])])
    results = pd.concat([answer_rows({"status": "unknown"}), answer_rows({"status": "unknown"}, sha="bb")])
    found = detect_revocation_status(certs, results, empty_frame(CRL_TABLE_COLUMNS), empty_frame(REVOCATION_COLUMNS),
                                     NOW.to_pydatetime())
    assert list(found.columns) == list(FINDING_COLUMNS)
    assert found[["sha256", "code"]].values.tolist() == [["aa", "ocsp_unknown"]]
    assert found.iloc[0]["severity"] == FINDING_CODES["ocsp_unknown"].severity


def test_the_detector_puts_crl_problems_first_and_compares_ocsp_with_the_fetched_crl():
    certs = pd.DataFrame([cert(), cert(sha256="bb", serial="0b", crl_distribution_points=["http://crl.example/old"])])
    crls = pd.concat([crl_table(), crl_table(url="http://crl.example/old", status="unreachable", error="refused")])
    revs = frame_from_rows([{"issuer_dn": "CN=Test CA", "issuer_key_id": "k1", "serial": "0a",
                             "revoked_at": NOW - pd.Timedelta(days=2), "revocation_reason": "", "crl": CRL_URL}],
                           REVOCATION_COLUMNS)
    found = detect_revocation_status(certs, answer_rows({}, {}), crls, revs, NOW.to_pydatetime())
    assert found[["sha256", "code"]].values.tolist() == [["bb", "crl_unreachable"], ["aa", "ocsp_good_but_revoked"]]


def test_empty_tables_give_an_empty_findings_table():
    found = detect_revocation_status(pd.DataFrame(), empty_frame(OCSP_RESULT_COLUMNS), empty_frame(CRL_TABLE_COLUMNS),
                                     empty_frame(REVOCATION_COLUMNS), NOW.to_pydatetime())
    assert found.empty and list(found.columns) == list(FINDING_COLUMNS)


def test_the_detector_imports_no_http_client_nor_the_fetching_modules():
    code = ("import sys\nimport scanner.detect.revocation_status\n"
            "print(sorted(m for m in ('requests', 'urllib3', 'scanner.core.net', 'scanner.enrich.revocation.fetch',"
            " 'scanner.enrich.revocation.ocsp', 'scanner.enrich.revocation.crl_fetch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
