"""OCSP requests, transport and response classification: real recorded responses and a real loopback responder."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509 import ocsp as cocsp

from scanner.core.net import new_session
from scanner.enrich.revocation.ocsp import build_request, classify, get_url, query
from tests.loopback import ocsp_server as srv
from tests.synth import TestCA

OCSP_DIR = Path(__file__).resolve().parent / "fixtures" / "cryptography_vectors" / "ocsp"


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA(name="ctscan OCSP Test CA")


@pytest.fixture(scope="module")
def server(ca: TestCA):
    behaviour = {
        1: srv.Answer(srv.GOOD),
        2: srv.Answer(srv.REVOKED, revoked_at=datetime(2024, 11, 23, 18, 14, 49, tzinfo=timezone.utc),
                      reason=x509.ReasonFlags.key_compromise),
        3: srv.Answer(srv.UNKNOWN),
        4: srv.Answer(srv.UNAUTHORIZED),
        5: srv.Answer(srv.MALFORMED),
        6: srv.Answer(srv.STALE),
        7: srv.Answer(srv.FOREIGN_SIGNER),
        8: srv.Answer(srv.DELEGATED),
        9: srv.Answer(srv.DELEGATED_NO_EKU),
        10: srv.Answer(srv.TRY_LATER),
        11: srv.Answer(srv.INTERNAL_ERROR),
        12: srv.Answer(srv.FLAKY),
        13: srv.Answer(srv.HTTP_500),
        14: srv.Answer(srv.FUTURE),
        15: srv.Answer(srv.WRONG_SERIAL),
    }
    with srv.OcspServer(ca.cert, ca.key, behaviour) as s:
        yield s


def ask(server, ca, serial, **kw):
    return query(new_session(), server.url, serial, ca.cert, retries=kw.pop("retries", 1), timeout=5,
                 backoff_base=0.01, **kw)


def real(name: str) -> bytes:
    return (OCSP_DIR / name).read_bytes()


# --- real recorded responses ------------------------------------------------------------------


def test_the_real_five_byte_unauthorized_response_is_classified_unauthorized():
    data = real("resp-unauthorized.der")
    assert len(data) == 5
    assert classify(data, 1, None).status == "unauthorized"


def test_the_real_camerfirma_response_is_unknown_for_its_serial():
    data = real("resp-delegate-unknown-cert.der")
    serial = cocsp.load_der_ocsp_response(data).serial_number
    result = classify(data, serial, None, now=datetime(2018, 9, 1, 14, tzinfo=timezone.utc))
    assert result.status == "unknown"
    assert result.freshness == "ok"
    assert result.signature == "unchecked"  # no Camerfirma issuer certificate is bundled


def test_real_revoked_response_carries_its_revocation_time_and_reason():
    data = real("resp-revoked-reason.der")
    serial = cocsp.load_der_ocsp_response(data).serial_number
    result = classify(data, serial, None, now=datetime(2018, 9, 2, tzinfo=timezone.utc))
    assert result.status == "revoked"
    assert result.revocation_time == datetime(2018, 6, 27, 12, 30, 1, tzinfo=timezone.utc)
    assert result.revocation_reason


def test_a_real_good_response_read_years_later_is_stale():
    data = real("resp-sha256.der")
    serial = cocsp.load_der_ocsp_response(data).serial_number
    result = classify(data, serial, None, now=datetime(2025, 1, 1, tzinfo=timezone.utc))
    assert (result.status, result.freshness) == ("good", "stale")


def test_the_real_multi_response_dod_reply_finds_the_asked_serial_and_rejects_an_absent_one():
    data = real("ocsp-army.deps.mil-resp.der")
    now = datetime(2020, 2, 23, tzinfo=timezone.utc)
    assert classify(data, 233887, None, now).status == "revoked"
    assert classify(data, 0xDEADBEEF, None, now).status == "malformed"


def test_html_instead_of_ocsp_is_malformed_not_an_exception():
    assert classify(b"<html>hello</html>", 1, None).status == "malformed"


# --- requests ---------------------------------------------------------------------------------


def test_requests_carry_the_serial_and_the_asked_hash(ca):
    for name, cls in (("sha1", "SHA1"), ("sha256", "SHA256")):
        req = cocsp.load_der_ocsp_request(build_request(0x1234, ca.cert, name))
        assert req.serial_number == 0x1234
        assert type(req.hash_algorithm).__name__ == cls


def test_request_cert_id_matches_cryptographys_own_for_a_real_certificate(ca):
    leaf = ca.issue(serial=77, not_before=datetime(2024, 1, 1, tzinfo=timezone.utc), dns=["a.example"])
    ours = cocsp.load_der_ocsp_request(build_request(77, ca.cert, "sha1"))
    theirs = cocsp.OCSPRequestBuilder().add_certificate(leaf, ca.cert, ours.hash_algorithm).build()
    assert (ours.issuer_key_hash, ours.issuer_name_hash) == (theirs.issuer_key_hash, theirs.issuer_name_hash)


def test_get_url_is_url_encoded_base64_under_the_responder_path():
    url = get_url("http://ocsp.example/ocsp", b"\xfb\xff\xfe")
    assert url == "http://ocsp.example/ocsp/%2B%2F%2F%2B"  # base64 "+//+"


# --- a real responder on loopback -------------------------------------------------------------


@pytest.mark.parametrize("method,hash_name", [("GET", "sha1"), ("POST", "sha256")])
def test_good_answer_over_get_and_post_verifies_with_the_issuer(server, ca, method, hash_name):
    r = ask(server, ca, 1, method=method, hash_name=hash_name)
    assert (r.status, r.signature, r.signer, r.freshness) == ("good", "ok", "issuer", "ok")
    assert r.latency_ms is not None and r.latency_ms > 0


def test_revoked_answer_gives_the_time_and_reason(server, ca):
    r = ask(server, ca, 2)
    assert r.status == "revoked"
    assert r.revocation_time == datetime(2024, 11, 23, 18, 14, 49, tzinfo=timezone.utc)
    assert r.revocation_reason == "keyCompromise"


@pytest.mark.parametrize("serial,status", [(3, "unknown"), (4, "unauthorized"), (5, "malformed"),
                                           (10, "tryLater"), (11, "internalError"), (15, "malformed")])
def test_responder_failures_are_named(server, ca, serial, status):
    assert ask(server, ca, serial).status == status


def test_stale_and_future_dated_answers_are_flagged(server, ca):
    assert ask(server, ca, 6).freshness == "stale"
    assert ask(server, ca, 14).freshness == "future"


def test_answer_signed_by_a_foreign_key_is_an_unauthorised_signer(server, ca):
    r = ask(server, ca, 7)
    assert r.status == "good" and r.signature == "unauthorised_signer"


def test_delegated_responder_needs_the_ocsp_signing_eku(server, ca):
    assert ask(server, ca, 8).signature == "ok"
    r = ask(server, ca, 9)
    assert r.signature == "unauthorised_signer" and "EKU" in r.signer


def test_a_503_is_retried_and_then_answers(server, ca):
    before = server.count(12)
    assert ask(server, ca, 12, retries=2).status == "good"
    assert server.count(12) - before == 2


def test_a_responder_that_keeps_failing_is_unreachable_after_the_retries(server, ca):
    before = server.count(13)
    r = ask(server, ca, 13, retries=2)
    assert r.status == "unreachable" and "503" in r.error
    assert server.count(13) - before == 3


def test_a_closed_port_is_unreachable_with_the_url_named(ca):
    from tests.loopback.registry_servers import free_port

    url = f"http://127.0.0.1:{free_port()}/ocsp"
    r = query(new_session(), url, 1, ca.cert, retries=0, timeout=2)
    assert r.status == "unreachable" and url in r.error


def test_a_503_to_a_post_is_retried_by_the_same_policy_and_then_answers(ca):
    with srv.OcspServer(ca.cert, ca.key, {30: srv.Answer(srv.FLAKY)}) as fresh:
        r = ask(fresh, ca, 30, retries=2, method="POST", hash_name="sha256")
        assert (r.status, r.method) == ("good", "POST")
        assert [m for m, _, _ in fresh.requests] == ["POST", "POST"]


def test_an_unreachable_get_is_named_by_its_responder_not_by_the_encoded_request(server, ca):
    r = ask(server, ca, 13, retries=0)
    assert r.error.startswith(f"{server.url} answered 503")
