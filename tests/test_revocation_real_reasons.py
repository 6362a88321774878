"""OCSP and the CRL giving different reasons for one revocation: a real responder and CRL on loopback."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from cryptography import x509

from scanner.core.config import Config
from scanner.enrich.revocation.issuers import issuers_by_key_id
from scanner.parse.certs import parse_der
from scanner.pipeline import check_revocation
from tests.loopback import ocsp_server as srv
from tests.synth import TestCA, der

NOW = datetime.now(timezone.utc).replace(microsecond=0)
WHEN = NOW - timedelta(days=2)
R = x509.ReasonFlags


@pytest.fixture(scope="module")
def outcome():
    ca = TestCA(name="ctscan Reason Check CA")
    ocsp_says = {0x61: R.key_compromise, 0x62: None, 0x63: R.key_compromise, 0x64: R.superseded}
    crl_says = {0x61: R.superseded, 0x62: R.unspecified, 0x63: R.key_compromise, 0x64: None}
    behaviour = {s: srv.Answer(srv.REVOKED, revoked_at=WHEN, reason=r) for s, r in ocsp_says.items()}
    crl = ca.crl([(s, WHEN, r) for s, r in crl_says.items()], this_update=NOW - timedelta(hours=3))
    with srv.OcspServer(ca.cert, ca.key, behaviour, files={"/ca.crl": der(crl)}) as server:
        rows = []
        for serial in ocsp_says:
            cert = ca.issue(serial=serial, not_before=NOW - timedelta(days=30), dns=[f"r{serial}.example"],
                            ocsp_url=server.url, crl_url=server.file_url("/ca.crl"))
            rows.append(parse_der(der(cert), source="files", provenance=f"serial {serial}"))
        config = Config(out_dir=Path("/tmp/unused"), check_revocation=True, timeout=5, retries=1, ocsp_rate=0)
        result = check_revocation(pd.DataFrame(rows), config, issuers=issuers_by_key_id([ca.cert]), now=NOW,
                                  backoff_base=0.01)
    serial_of = {r["sha256"]: r["serial"] for r in rows}
    return result, {(serial_of[f.sha256], f.code): f for f in result.findings.itertuples()}


def test_ocsp_key_compromise_against_a_crl_saying_superseded_is_a_reason_mismatch_naming_both(outcome):
    _, found = outcome
    f = found[("61", "revocation_reason_mismatch")]
    assert "says revoked for keyCompromise" in f.evidence and "says superseded" in f.evidence
    detail = json.loads(f.detail)
    assert (detail["ocsp_revocation_reason"], detail["crl_revocation_reason"]) == ("keyCompromise", "superseded")


def test_a_reason_given_on_one_side_only_is_a_mismatch_but_absent_and_unspecified_agree(outcome):
    _, found = outcome
    assert ("64", "revocation_reason_mismatch") in found  # superseded per OCSP, no reasonCode on the CRL
    assert not any(serial in ("62", "63") for serial, _ in found)


def test_agreeing_reasons_and_times_give_no_finding_at_all(outcome):
    result, found = outcome
    assert {code for _, code in found} == {"revocation_reason_mismatch"}
    assert set(result.revocations["revocation_reason"]) == {"superseded", "unspecified", "keyCompromise", ""}


def test_a_crl_reason_that_could_not_be_read_is_no_disagreement():
    from scanner.detect.revocation_status import Answer, Listed, revocation_reason_mismatch_finding

    r = Answer("aa", "http://ocsp.example/", "GET", "sha1", "revoked", revocation_time=pd.Timestamp(WHEN),
               revocation_reason="keyCompromise")
    unread = Listed(crl_time=pd.Timestamp(WHEN), crl_url="http://crl.example/", crl_reason="invalid (code 7)")
    assert revocation_reason_mismatch_finding(r, unread) == []
    crtsh = Listed(listed_time=pd.Timestamp(WHEN), listed_source="crtsh", listed_reason="cessationOfOperation")
    assert [f.code for f in revocation_reason_mismatch_finding(r, crtsh)] == ["revocation_reason_mismatch"]
