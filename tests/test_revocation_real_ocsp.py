"""OCSP answers as real responders send them: several SingleResponses, and one about another CA's certificate."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from scanner.core.net import new_session
from scanner.enrich.revocation.ocsp import OcspResult, classify, issuer_hashes, query
from tests.synth import TestCA, der_children, tlv

NOW = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
SERIAL = 0x0A1B2C


@pytest.fixture(scope="module")
def cas() -> tuple[TestCA, TestCA]:
    return TestCA(name="ctscan OCSP Asked CA"), TestCA(name="ctscan OCSP Other CA")


def _single(ca: TestCA, issuer: TestCA, serial: int, status: ocsp.OCSPCertStatus) -> bytes:
    """One SingleResponse (DER) about `issuer`'s serial, cut out of a response the builder wrote."""
    name_hash, key_hash = issuer_hashes(issuer.cert, "sha1")
    revoked = NOW - timedelta(days=2) if status == ocsp.OCSPCertStatus.REVOKED else None
    reason = x509.ReasonFlags.key_compromise if revoked else None
    built = (ocsp.OCSPResponseBuilder()
             .add_response_by_hash(name_hash, key_hash, serial, hashes.SHA1(), status, NOW - timedelta(hours=1),
                                   NOW + timedelta(days=3), revoked, reason)
             .responder_id(ocsp.OCSPResponderEncoding.HASH, ca.cert)
             .sign(ca.key, hashes.SHA256()))
    tbs = der_children(built.tbs_response_bytes)
    return der_children(tbs[-1] if tbs[-1][0] == 0x30 else tbs[-2])[0]


def multi_response(ca: TestCA, singles: list[bytes]) -> bytes:
    """A successful BasicOCSPResponse signed by `ca`, carrying these SingleResponses in this order."""
    template = (ocsp.OCSPResponseBuilder()
                .add_response_by_hash(b"\0" * 20, b"\0" * 20, 1, hashes.SHA1(), ocsp.OCSPCertStatus.GOOD,
                                      NOW, NOW + timedelta(days=1), None, None)
                .responder_id(ocsp.OCSPResponderEncoding.HASH, ca.cert).sign(ca.key, hashes.SHA256()))
    parts = der_children(template.tbs_response_bytes)  # responderID, producedAt, responses (no extensions)
    tbs = tlv(0x30, parts[0] + parts[1] + tlv(0x30, b"".join(singles)))
    signature = ca.key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    sig_alg = tlv(0x30, tlv(0x06, bytes.fromhex("2a8648ce3d040302")))  # ecdsa-with-SHA256
    basic = tlv(0x30, tbs + sig_alg + tlv(0x03, b"\0" + signature))
    response_bytes = tlv(0x30, tlv(0x06, bytes.fromhex("2b0601050507300101")) + tlv(0x04, basic))  # id-pkix-ocsp-basic
    return tlv(0x30, tlv(0x0A, b"\0") + tlv(0xA0, response_bytes))


def test_of_several_single_responses_the_one_for_the_asked_issuer_is_read_not_the_first_with_its_serial(cas):
    asked, other = cas
    body = multi_response(asked, [_single(asked, other, SERIAL, ocsp.OCSPCertStatus.GOOD),
                                  _single(asked, asked, SERIAL, ocsp.OCSPCertStatus.REVOKED)])
    assert [s.serial_number for s in ocsp.load_der_ocsp_response(body).responses] == [SERIAL, SERIAL]
    result = classify(body, SERIAL, asked.cert, NOW)
    assert (result.status, result.signature, result.revocation_reason) == ("revoked", "ok", "keyCompromise")


def test_an_answer_only_about_another_cas_certificate_with_the_same_serial_is_not_taken_as_good(cas):
    asked, other = cas
    body = multi_response(asked, [_single(asked, other, SERIAL, ocsp.OCSPCertStatus.GOOD)])
    result = classify(body, SERIAL, asked.cert, NOW)
    assert result.status == "malformed"
    assert "another issuer" in result.error


class _Fixed(BaseHTTPRequestHandler):
    body = b""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/ocsp-response")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


def ask_server_serving(body: bytes, issuer: x509.Certificate) -> OcspResult:
    """Ask a loopback responder that answers every GET with these bytes about SERIAL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Fixed,), {"body": body}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/ocsp"
        return query(new_session(), url, SERIAL, issuer, retries=0, timeout=5, now=NOW)
    finally:
        server.shutdown()
        server.server_close()


def test_a_responder_that_serves_another_cas_answer_over_http_gives_no_status(cas):
    asked, other = cas
    result = ask_server_serving(multi_response(asked, [_single(asked, other, SERIAL, ocsp.OCSPCertStatus.GOOD)]),
                                asked.cert)
    assert (result.status, result.http_status) == ("malformed", 200)
    assert "another issuer" in result.error


def _without_next_update(ca: TestCA, this_update: datetime) -> bytes:
    name_hash, key_hash = issuer_hashes(ca.cert, "sha1")
    return (ocsp.OCSPResponseBuilder()
            .add_response_by_hash(name_hash, key_hash, SERIAL, hashes.SHA1(), ocsp.OCSPCertStatus.GOOD, this_update,
                                  None, None, None)
            .responder_id(ocsp.OCSPResponderEncoding.HASH, ca.cert).sign(ca.key, hashes.SHA256())
            .public_bytes(serialization.Encoding.DER))


def test_an_answer_without_next_update_is_stale_once_a_day_old_and_fresh_before(cas):
    asked, _ = cas
    old = ask_server_serving(_without_next_update(asked, NOW - timedelta(days=3)), asked.cert)
    assert (old.status, old.next_update, old.freshness) == ("good", None, "stale")
    assert old.notes == ["no nextUpdate, and thisUpdate 2026-02-26T12:00:00Z is older than a day (how long a "
                         "response without one is trusted)"]
    recent = ask_server_serving(_without_next_update(asked, NOW - timedelta(hours=2)), asked.cert)
    assert (recent.status, recent.freshness, recent.signature) == ("good", "ok", "ok")


def test_the_real_multi_response_reply_still_answers_for_each_serial_with_no_issuer_known():
    from tests.test_ocsp import real

    data = real("ocsp-army.deps.mil-resp.der")
    singles = list(ocsp.load_der_ocsp_response(data).responses)
    assert len(singles) > 1
    assert classify(data, singles[1].serial_number, None, datetime(2020, 2, 23, tzinfo=timezone.utc)).answered

