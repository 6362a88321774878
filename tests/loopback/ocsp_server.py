"""A real OCSP responder and CRL/caIssuers file server over HTTP on 127.0.0.1, for tests and benchmarks.

Responses are real DER built with cryptography's OCSPResponseBuilder, answering the CertID the
client sent (SHA-1 or SHA-256). `behaviour[serial]` picks the answer per certificate, so one
server can be right about some certificates and wrong, in every way we detect, about others.
"""

from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import ServedInThread

GOOD, REVOKED, UNKNOWN = "good", "revoked", "unknown"
UNAUTHORIZED, TRY_LATER, INTERNAL_ERROR = "unauthorized", "tryLater", "internalError"
MALFORMED = "malformed"  # 200 with bytes that are not an OCSP response
STALE, FUTURE = "stale", "future"  # good, but nextUpdate passed / thisUpdate in the future
FOREIGN_SIGNER = "foreign_signer"  # good, signed by a key the issuer never authorised
DELEGATED = "delegated"  # good, signed by a proper delegated responder (issued by the CA, OCSPSigning EKU)
DELEGATED_NO_EKU = "delegated_no_eku"
WRONG_SERIAL = "wrong_serial"  # good, but about another serial
FLAKY = "flaky"  # 503 on the first request for this serial, then good
HTTP_500 = "http500"  # always 503
SLOW = "slow"  # good after `slow_seconds`


@dataclass
class Answer:
    """How to answer for one serial; `post` overrides `kind` for POST requests (a CDN caching GETs)."""

    kind: str = GOOD
    revoked_at: datetime | None = None
    reason: x509.ReasonFlags | None = None
    post: str | None = None


def _responder_cert(ca_cert: x509.Certificate, ca_key, key, eku: bool) -> x509.Certificate:
    now = datetime.now(timezone.utc)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Loopback OCSP Responder")]))
         .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30)))
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
    return b.sign(ca_key, hashes.SHA256())


@dataclass
class OcspServer(ServedInThread):
    """OCSP at /ocsp (GET /ocsp/<b64> and POST /ocsp), files at any other path from `files`."""

    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    behaviour: dict[int, Answer] = field(default_factory=dict)
    default: Answer = field(default_factory=Answer)
    files: dict[str, bytes] = field(default_factory=dict)  # path -> body (CRLs, caIssuers certificates)
    slow_seconds: float = 0.5
    requests: list[tuple[str, str, int | None]] = field(default_factory=list)  # (method, path, serial)

    def __post_init__(self) -> None:
        self._seen: dict[int, int] = {}
        self._lock = threading.Lock()
        self._foreign_key = ec.generate_private_key(ec.SECP256R1())
        self._delegate_key = ec.generate_private_key(ec.SECP256R1())
        self._delegate = _responder_cert(self.ca_cert, self.ca_key, self._delegate_key, eku=True)
        self._delegate_no_eku = _responder_cert(self.ca_cert, self.ca_key, self._delegate_key, eku=False)
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                if self.path.startswith("/ocsp/"):
                    try:
                        der = base64.b64decode(unquote(self.path[len("/ocsp/"):]))
                    except ValueError:
                        der = b""
                    self._answer(*server.respond(der, "GET"))
                elif self.path in server.files:
                    self._answer(200, server.files[self.path], "application/pkix-crl")
                else:
                    self._answer(404, b"not found", "text/plain")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.rstrip("/") != "/ocsp":
                    self._answer(404, b"not found", "text/plain")
                    return
                self._answer(*server.respond(body, "POST"))

            def _answer(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._served = _Server(("127.0.0.1", 0), Handler)
        self._served.daemon_threads = True
        self.port = self._served.server_address[1]

    @property
    def url(self) -> str:
        """The responder URL to put in certificates' AIA."""
        return f"http://127.0.0.1:{self.port}/ocsp"

    def file_url(self, path: str) -> str:
        """The URL of a served file path such as /ca.crl."""
        return f"http://127.0.0.1:{self.port}{path}"

    def count(self, serial: int | None = None) -> int:
        """How many OCSP requests came in (for one serial, or all)."""
        return sum(1 for _, _, s in self.requests if serial is None or s == serial)

    def respond(self, der: bytes, method: str) -> tuple[int, bytes, str]:
        """(HTTP status, body, content type) for one OCSP request."""
        ctype = "application/ocsp-response"
        try:
            req = ocsp.load_der_ocsp_request(der)
        except Exception:
            self.requests.append((method, "/ocsp", None))
            return 200, ocsp.OCSPResponseBuilder.build_unsuccessful(
                ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(serialization.Encoding.DER), ctype
        serial = req.serial_number
        with self._lock:
            self.requests.append((method, "/ocsp", serial))
            self._seen[serial] = self._seen.get(serial, 0) + 1
            nth = self._seen[serial]
        answer = self.behaviour.get(serial, self.default)
        kind = answer.post if method == "POST" and answer.post else answer.kind
        unsuccessful = {UNAUTHORIZED: ocsp.OCSPResponseStatus.UNAUTHORIZED,
                        TRY_LATER: ocsp.OCSPResponseStatus.TRY_LATER,
                        INTERNAL_ERROR: ocsp.OCSPResponseStatus.INTERNAL_ERROR}
        if kind in unsuccessful:
            return 200, ocsp.OCSPResponseBuilder.build_unsuccessful(unsuccessful[kind]).public_bytes(
                serialization.Encoding.DER), ctype
        if kind == MALFORMED:
            return 200, b"<html>OCSP service</html>", "text/html"
        if kind == HTTP_500 or (kind == FLAKY and nth == 1):
            return 503, b"busy", "text/plain"
        if kind == SLOW:
            time.sleep(self.slow_seconds)
        return 200, self.build(req, serial, kind, answer), ctype

    def build(self, req: ocsp.OCSPRequest, serial: int, kind: str, answer: Answer) -> bytes:
        """A signed, successful DER response answering req's CertID."""
        now = datetime.now(timezone.utc).replace(microsecond=0)
        this_update, next_update = now - timedelta(hours=1), now + timedelta(days=3)
        if kind == STALE:
            this_update, next_update = now - timedelta(days=20), now - timedelta(days=13)
        elif kind == FUTURE:
            this_update, next_update = now + timedelta(days=2), now + timedelta(days=9)
        status = {REVOKED: ocsp.OCSPCertStatus.REVOKED, UNKNOWN: ocsp.OCSPCertStatus.UNKNOWN}.get(
            kind, ocsp.OCSPCertStatus.GOOD)
        revoked_at = (answer.revoked_at or now - timedelta(days=1)) if kind == REVOKED else None
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            req.issuer_name_hash, req.issuer_key_hash, serial + (1 if kind == WRONG_SERIAL else 0), req.hash_algorithm,
            status, this_update, next_update, revoked_at, answer.reason if kind == REVOKED else None)
        key, cert = self.ca_key, self.ca_cert
        if kind == FOREIGN_SIGNER:
            key = self._foreign_key
            builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, _self_signed(key))
        elif kind in (DELEGATED, DELEGATED_NO_EKU):
            key, cert = self._delegate_key, (self._delegate if kind == DELEGATED else self._delegate_no_eku)
            builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, cert).certificates([cert])
        else:
            builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, cert)
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default 5 drops connections when 32 client threads open at once


def _self_signed(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    now = datetime.now(timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Somebody Else")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
