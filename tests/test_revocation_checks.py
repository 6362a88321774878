"""check_revocation end to end: a real OCSP responder and CRL server on loopback, certificates that disagree."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from cryptography import x509

from scanner.core.config import Config
from scanner.core.records import FINDING_CODES, FINDING_COLUMNS
from scanner.enrich.revocation.crl import apply_revocations
from scanner.enrich.revocation.issuers import issuers_by_key_id
from scanner.enrich.revocation.tables import REVOCATION_COLUMNS
from scanner.parse.certs import parse_der
from scanner.pipeline import check_revocation
from tests.loopback import ocsp_server as srv
from tests.loopback.registry_servers import free_port
from tests.synth import TestCA, der

NOW = datetime.now(timezone.utc).replace(microsecond=0)
T_CRL = NOW - timedelta(days=2)  # when serial 2 and 5 were revoked per the CRL
T_OCSP_5 = T_CRL + timedelta(hours=1)  # the OCSP responder's (different) time for serial 5
T_OCSP_6 = NOW - timedelta(days=3)  # revoked per OCSP, before the CRL was made, yet not on it


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA(name="ctscan Revocation Check CA")


@pytest.fixture(scope="module")
def server(ca):
    behaviour = {
        2: srv.Answer(srv.GOOD),
        3: srv.Answer(srv.GOOD),
        4: srv.Answer(srv.UNAUTHORIZED),
        5: srv.Answer(srv.REVOKED, revoked_at=T_OCSP_5),
        6: srv.Answer(srv.REVOKED, revoked_at=T_OCSP_6),
        7: srv.Answer(srv.UNKNOWN),
        8: srv.Answer(srv.GOOD, post=srv.REVOKED),
        9: srv.Answer(srv.UNAUTHORIZED),
        10: srv.Answer(srv.STALE),
        11: srv.Answer(srv.FOREIGN_SIGNER),
        12: srv.Answer(srv.TRY_LATER),
    }
    crl = ca.crl([(2, T_CRL, x509.ReasonFlags.key_compromise), (5, T_CRL, None)], this_update=NOW - timedelta(hours=6))
    stale = ca.crl([], this_update=NOW - timedelta(days=30), next_update=NOW - timedelta(days=20))
    with srv.OcspServer(ca.cert, ca.key, behaviour, files={"/ca.crl": der(crl), "/old.crl": der(stale)}) as s:
        yield s


def cert_row(ca, serial, *, ocsp_url, crl_url, days=365, start=None, **extra):
    cert = ca.issue(serial=serial, not_before=start or NOW - timedelta(days=30), days=days, dns=[f"s{serial}.example"],
                    ocsp_url=ocsp_url, crl_url=crl_url)
    row = parse_der(der(cert), source="files", provenance=f"serial {serial}")
    row.update(extra)
    return row


def config(**kw) -> Config:
    return Config(out_dir=Path("/tmp/unused"), check_revocation=True, timeout=5, retries=1,
                  ocsp_rate=0, **kw)


@pytest.fixture(scope="module")
def outcome(ca, server):
    crl_url = server.file_url("/ca.crl")
    rows = [cert_row(ca, s, ocsp_url=server.url, crl_url=crl_url) for s in (1, 2, 4, 5, 6, 7, 8, 10, 11, 12)]
    rows.append(cert_row(ca, 3, ocsp_url=server.url, crl_url=crl_url, revoked_at=NOW - timedelta(days=1),
                         revocation_source="crtsh"))
    rows.append(cert_row(ca, 9, ocsp_url=server.url, crl_url=crl_url, start=NOW - timedelta(days=400)))  # expired
    rows.append(cert_row(ca, 20, ocsp_url=server.url, crl_url=server.file_url("/old.crl")))
    dead = f"http://127.0.0.1:{free_port()}/ocsp"
    rows.append(cert_row(ca, 21, ocsp_url=dead, crl_url=None))
    other = TestCA(name="ctscan Unknown Issuer CA")
    rows.append(cert_row(other, 22, ocsp_url=server.url, crl_url=None))
    certs = pd.DataFrame(rows)
    result = check_revocation(certs, config(), issuers=issuers_by_key_id([ca.cert]), now=NOW, backoff_base=0.01)
    by_serial = {r["sha256"]: r["serial"] for r in rows}
    codes: dict[str, set[str]] = {}
    for f in result.findings.itertuples():
        codes.setdefault(by_serial[f.sha256], set()).add(f.code)
    return result, codes, dead


def test_findings_have_the_shared_columns_and_registered_codes(outcome):
    result, _, _ = outcome
    assert list(result.findings.columns) == list(FINDING_COLUMNS)
    assert set(result.findings["code"]) <= set(FINDING_CODES)


def test_a_consistent_good_certificate_has_no_finding(outcome):
    assert "01" not in outcome[1]


def test_ocsp_good_while_the_fetched_crl_lists_it_is_good_but_revoked_with_both_times(outcome):
    result, codes, _ = outcome
    assert "ocsp_good_but_revoked" in codes["02"]
    f = result.findings[(result.findings["code"] == "ocsp_good_but_revoked")]
    detail = [json.loads(d) for d in f["detail"]]
    crl_case = next(d for d in detail if d["revocation_source"] == "crl")
    assert crl_case["revoked_at"] == T_CRL.strftime("%Y-%m-%dT%H:%M:%SZ") and crl_case["this_update"]


def test_ocsp_good_while_crtsh_says_revoked_is_good_but_revoked_naming_crtsh(outcome):
    result, codes, _ = outcome
    assert "ocsp_good_but_revoked" in codes["03"]
    ev = result.findings[result.findings["code"] == "ocsp_good_but_revoked"]["evidence"].str.contains("crtsh")
    assert ev.any()


def test_unauthorized_unknown_try_later_are_named_findings(outcome):
    codes = outcome[1]
    assert "ocsp_unauthorized" in codes["04"]
    assert "ocsp_unknown" in codes["07"]
    assert "ocsp_try_later" in codes["0c"]


def test_an_expired_certificate_is_not_asked_about(outcome, server):
    assert "09" not in outcome[1]
    assert server.count(9) == 0


def test_different_ocsp_and_crl_revocation_times_are_a_mismatch(outcome):
    assert outcome[1]["05"] == {"revocation_time_mismatch"}


def test_revoked_per_ocsp_before_the_crl_was_made_but_absent_from_it_is_crl_missing_revoked(outcome):
    assert "crl_missing_revoked" in outcome[1]["06"]


def test_get_good_and_post_revoked_is_a_variant_disagreement(outcome):
    assert "ocsp_variant_disagrees" in outcome[1]["08"]


def test_stale_and_forged_answers_are_flagged(outcome):
    assert "ocsp_stale" in outcome[1]["0a"]
    assert "ocsp_bad_signature" in outcome[1]["0b"]


def test_a_stale_crl_is_a_finding_on_the_certificates_pointing_at_it_and_a_row_in_the_crl_table(outcome, server):
    result, codes, _ = outcome
    assert "crl_stale" in codes["14"]
    status = dict(zip(result.crls["url"], result.crls["status"]))
    assert status == {server.file_url("/ca.crl"): "ok", server.file_url("/old.crl"): "stale"}


def test_an_unreachable_responder_completes_the_run_and_is_named(outcome):
    result, codes, dead = outcome
    assert codes["15"] == {"ocsp_unreachable"}
    row = result.responders.set_index("responder").loc[dead]
    assert row["unreachable"] == 2 and row["good"] == 0
    assert any(dead in e["error"] for e in result.errors)


def test_unknown_issuer_is_an_error_row_not_a_crash(outcome):
    result, codes, _ = outcome
    assert "16" not in codes
    assert any("ctscan Unknown Issuer CA" in e["error"] and "--issuer-cert" in e["error"] for e in result.errors)


def test_responder_table_counts_answers_by_status_and_latency(outcome, server):
    result, _, _ = outcome
    row = result.responders.set_index("responder").loc[server.url]
    assert row["certificates"] == 12  # every unexpired certificate of the known issuer pointing here
    assert row["requests"] == 24  # SHA-1 GET and SHA-256 POST each
    assert row["unauthorized"] == 2 and row["unknown"] == 2
    assert row["median_latency_ms"] > 0


def test_fetched_crl_revocations_feed_apply_revocations(outcome, ca):
    result, _, _ = outcome
    assert list(result.revocations.columns) == list(REVOCATION_COLUMNS)
    certs = pd.DataFrame([parse_der(der(ca.issue(serial=2, not_before=NOW - timedelta(days=30))))])
    applied = apply_revocations(certs, result.revocations)
    assert applied.iloc[0]["revoked_at"] == pd.Timestamp(T_CRL)


def test_ocsp_sample_limits_requests_per_responder_and_asks_revoked_certificates_first(ca):
    behaviour = {s: srv.Answer(srv.GOOD) for s in range(1, 6)}
    with srv.OcspServer(ca.cert, ca.key, behaviour) as s:
        rows = [cert_row(ca, n, ocsp_url=s.url, crl_url=None) for n in range(1, 6)]
        rows[3].update(revoked_at=NOW - timedelta(days=1), revocation_source="crtsh")
        result = check_revocation(pd.DataFrame(rows), config(ocsp_sample=2), issuers=issuers_by_key_id([ca.cert]),
                                  now=NOW, backoff_base=0.01)
        assert s.count() == 4
        assert s.count(4) == 2  # the known-revoked certificate is in the sample
    assert set(result.findings["code"]) == {"ocsp_good_but_revoked"}


def test_an_empty_certificate_table_gives_empty_tables_with_the_right_columns():
    result = check_revocation(pd.DataFrame(), config())
    assert list(result.findings.columns) == list(FINDING_COLUMNS)
    assert result.responders.empty and result.crls.empty and result.revocations.empty and not result.errors
