"""OCSP, one certificate at a time: build the request, send it (GET or POST), read and verify the answer.

Nothing here knows about DataFrames or findings: `fetch.py` puts these results in a table and
`scanner.detect.revocation_status` turns the table into findings.
Every response byte comes from a responder we do not control, so parsing failures become a
`malformed` result, never an exception.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from scanner.core.der import spki_key_bits
from scanner.core.net import FetchError, RateLimiter, request_with_retries
from scanner.core.times import iso

#: How far a thisUpdate may sit in the future before we call the response future-dated (clock skew).
CLOCK_SKEW = timedelta(minutes=5)
#: A response whose thisUpdate is older than this is stale (BR 4.9.10: a validity interval of at most 10 days).
MAX_RESPONSE_AGE = timedelta(days=10)
#: A response without nextUpdate is stale once its thisUpdate is older than this: without a validity
#: interval, Firefox (mozilla::pkix, following NSS) takes it for at most a day.
MAX_AGE_WITHOUT_NEXT_UPDATE = timedelta(days=1)
#: Request hash algorithms by name (the CertID hash).
HASHES: dict[str, hashes.HashAlgorithm] = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256()}
#: Non-successful OCSPResponseStatus values by their RFC 6960 names.
STATUS_NAMES = {
    ocsp.OCSPResponseStatus.MALFORMED_REQUEST: "malformedRequest",
    ocsp.OCSPResponseStatus.INTERNAL_ERROR: "internalError",
    ocsp.OCSPResponseStatus.TRY_LATER: "tryLater",
    ocsp.OCSPResponseStatus.SIG_REQUIRED: "sigRequired",
    ocsp.OCSPResponseStatus.UNAUTHORIZED: "unauthorized",
}
CERT_STATUS_NAMES = {
    ocsp.OCSPCertStatus.GOOD: "good",
    ocsp.OCSPCertStatus.REVOKED: "revoked",
    ocsp.OCSPCertStatus.UNKNOWN: "unknown",
}


@dataclass
class OcspResult:
    """What one responder said about one certificate, and how much of it we could verify.

    status is good / revoked / unknown (a SingleResponse), one of STATUS_NAMES' values (an
    unsuccessful OCSPResponse), `malformed` (bytes we cannot read, or no answer for our serial)
    or `unreachable` (no HTTP answer after retries).
    """

    status: str
    url: str = ""
    method: str = ""  # GET / POST
    hash_name: str = ""  # sha1 / sha256 (the CertID hash we asked with)
    http_status: int | None = None
    latency_ms: float | None = None
    this_update: datetime | None = None
    next_update: datetime | None = None
    produced_at: datetime | None = None
    revocation_time: datetime | None = None
    revocation_reason: str = ""
    signature: str = "unchecked"  # ok / bad / unauthorised_signer / unchecked (no issuer known)
    signer: str = ""  # issuer / delegated: <subject> / unknown
    freshness: str = ""  # ok / stale / future
    error: str = ""
    notes: list[str] = field(default_factory=list)
    der: bytes = field(default=b"", repr=False)  # the response's bytes, when asked to keep them (--lint)

    @property
    def answered(self) -> bool:
        """True when the responder returned a readable OCSP response (any status)."""
        return self.status not in ("malformed", "unreachable")


# --- requests -------------------------------------------------------------------------------


def issuer_hashes(issuer: x509.Certificate, hash_name: str | hashes.HashAlgorithm) -> tuple[bytes, bytes]:
    """(issuerNameHash, issuerKeyHash) of a CertID: hashes of the issuer's DER subject and public key bits."""
    algo = HASHES[hash_name] if isinstance(hash_name, str) else hash_name
    name_hash = hashes.Hash(algo)
    name_hash.update(issuer.subject.public_bytes())
    spki = issuer.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    key_hash = hashes.Hash(algo)
    key_hash.update(spki_key_bits(spki))
    return name_hash.finalize(), key_hash.finalize()


def build_request(serial: int, issuer: x509.Certificate, hash_name: str = "sha1") -> bytes:
    """A DER OCSPRequest for one serial of this issuer, CertID hashed with sha1 or sha256, no nonce."""
    name_hash, key_hash = issuer_hashes(issuer, hash_name)
    req = ocsp.OCSPRequestBuilder().add_certificate_by_hash(name_hash, key_hash, serial, HASHES[hash_name]).build()
    return req.public_bytes(serialization.Encoding.DER)


def get_url(responder: str, request_der: bytes) -> str:
    """RFC 6960 A.1 GET URL: the responder URL, a slash, the URL-encoded base64 of the DER request."""
    encoded = quote(base64.b64encode(request_der).decode("ascii"), safe="")
    return responder + ("" if responder.endswith("/") else "/") + encoded


# --- transport ------------------------------------------------------------------------------


def send(
    session: requests.Session,
    responder: str,
    request_der: bytes,
    *,
    method: str = "GET",
    limiter: RateLimiter | None = None,
    retries: int = 2,
    timeout: float = 10.0,
    backoff_base: float = 0.5,
) -> tuple[int, bytes, float]:
    """Send one OCSP request; (HTTP status, body, latency ms of the last attempt). FetchError when it never answered.

    Retries timeouts, connection failures and 429/5xx (with Retry-After); any other status is
    returned for the caller to classify, because a 404 from a responder is itself evidence.
    """
    if method == "GET":
        url, data, headers = get_url(responder, request_der), None, None
    else:
        url, data, headers = responder, request_der, {"Content-Type": "application/ocsp-request"}
    try:
        resp = request_with_retries(session, method, url, data=data, headers=headers, limiter=limiter,
                                    retries=retries, timeout=timeout, ok_statuses=None, base_delay=backoff_base,
                                    bound="ocsp")
    except FetchError as exc:
        # Named by the responder: a GET URL carries the whole base64 request.
        raise FetchError(responder, exc.reason, exc.status, exc.body, exc.attempts) from exc
    return resp.status_code, resp.content, resp.elapsed.total_seconds() * 1000


# --- responses ------------------------------------------------------------------------------


def verify_signature(public_key: object, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm | None) -> bool:
    """True when signature over data verifies with this key (RSA PKCS#1 v1.5, ECDSA, DSA, EdDSA)."""
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), algorithm)  # type: ignore[arg-type]
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(algorithm))  # type: ignore[arg-type]
        elif isinstance(public_key, dsa.DSAPublicKey):
            public_key.verify(signature, data, algorithm)  # type: ignore[arg-type]
        elif isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            public_key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _key_hash(cert: x509.Certificate) -> bytes:
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha1(spki_key_bits(spki)).digest()


def _is_signer(resp: ocsp.OCSPResponse, cert: x509.Certificate) -> bool:
    if resp.responder_key_hash is not None:
        return resp.responder_key_hash == _key_hash(cert)
    return resp.responder_name == cert.subject


def _has_ocsp_signing(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_oid(ExtensionOID.EXTENDED_KEY_USAGE).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.OCSP_SIGNING in eku


def check_signer(resp: ocsp.OCSPResponse, issuer: x509.Certificate, now: datetime) -> tuple[str, str]:
    """(signature verdict, signer) for a successful response, RFC 6960 4.2.2.2.

    The issuer may sign, or a delegated responder certificate shipped in the response that the
    issuer signed and that carries the id-kp-OCSPSigning EKU. Anyone else is an unauthorised signer.
    """
    data, sig, algo = resp.tbs_response_bytes, resp.signature, resp.signature_hash_algorithm
    if _is_signer(resp, issuer):
        return ("ok" if verify_signature(issuer.public_key(), sig, data, algo) else "bad"), "issuer"
    for cert in resp.certificates:
        if not _is_signer(resp, cert):
            continue
        label = f"delegated: {cert.subject.rfc4514_string()}"
        if not verify_signature(cert.public_key(), sig, data, algo):
            return "bad", label
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            return "unauthorised_signer", label + " (not issued by the certificate's issuer)"
        if not _has_ocsp_signing(cert):
            return "unauthorised_signer", label + " (no OCSPSigning EKU)"
        if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
            return "unauthorised_signer", label + " (responder certificate not valid now)"
        return "ok", label
    # A signer we cannot identify: it is neither the issuer nor a certificate it sent along.
    return "unauthorised_signer", "unknown (neither the issuer nor an included responder certificate)"


def _freshness(this_update: datetime | None, next_update: datetime | None, now: datetime) -> tuple[str, str]:
    if this_update is None:
        return "stale", "no thisUpdate"
    if this_update > now + CLOCK_SKEW:
        return "future", f"thisUpdate {iso(this_update)} is in the future"
    if next_update is not None and next_update < now:
        return "stale", f"nextUpdate {iso(next_update)} has passed"
    if next_update is None and now - this_update > MAX_AGE_WITHOUT_NEXT_UPDATE:
        return "stale", (f"no nextUpdate, and thisUpdate {iso(this_update)} is older than a day (how long a "
                         "response without one is trusted)")
    if now - this_update > MAX_RESPONSE_AGE:
        return "stale", f"thisUpdate {iso(this_update)} is older than {MAX_RESPONSE_AGE.days} days"
    return "ok", ""


def _same_issuer(single: ocsp.OCSPSingleResponse, issuer: x509.Certificate) -> bool:
    """True when the SingleResponse's CertID names this issuer, hashed as the responder hashed it."""
    try:
        expected = issuer_hashes(issuer, single.hash_algorithm)
        return (single.issuer_name_hash, single.issuer_key_hash) == expected
    except Exception:  # a hash cryptography does not know: the CertID cannot be checked, so it is not ours
        return False


def classify(
    der: bytes,
    serial: int,
    issuer: x509.Certificate | None,
    now: datetime | None = None,
) -> OcspResult:
    """Read a DER OCSP response about `serial`: its status, times and, with the issuer, its signature."""
    now = now or datetime.now(timezone.utc)
    try:
        resp = ocsp.load_der_ocsp_response(der)
    except Exception as exc:  # cryptography raises ValueError and friends on garbage
        return OcspResult("malformed", error=f"not an OCSP response ({len(der)} bytes): {exc}")
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        name = STATUS_NAMES.get(resp.response_status, str(resp.response_status))
        return OcspResult(name, error=f"responseStatus {name}")
    try:
        singles = list(resp.responses)
        produced = resp.produced_at_utc
    except Exception as exc:
        return OcspResult("malformed", error=f"unreadable response body: {exc}")
    same_serial = [s for s in singles if s.serial_number == serial]
    single = next((s for s in same_serial if issuer is None or _same_issuer(s, issuer)), None)
    if single is None:
        if same_serial:  # e.g. a CDN's cached answer about another CA's certificate with this serial
            return OcspResult("malformed", error=f"the SingleResponse for serial {serial:x} names another issuer "
                                                 f"(issuerNameHash/issuerKeyHash differ): an answer about another "
                                                 "certificate")
        return OcspResult("malformed", error=f"no SingleResponse for serial {serial:x} ({len(singles)} others)")
    result = OcspResult(
        CERT_STATUS_NAMES[single.certificate_status],
        this_update=single.this_update_utc,
        next_update=single.next_update_utc,
        produced_at=produced,
    )
    if single.certificate_status == ocsp.OCSPCertStatus.REVOKED:
        result.revocation_time = single.revocation_time_utc
        result.revocation_reason = single.revocation_reason.value if single.revocation_reason else ""
    result.freshness, note = _freshness(result.this_update, result.next_update, now)
    if note:
        result.notes.append(note)
    if issuer is not None:
        try:
            result.signature, result.signer = check_signer(resp, issuer, now)
        except Exception as exc:  # an exotic key type or broken embedded certificate
            result.signature, result.signer = "bad", f"unverifiable: {exc}"
    return result


def query(
    session: requests.Session,
    responder: str,
    serial: int,
    issuer: x509.Certificate,
    *,
    hash_name: str = "sha1",
    method: str = "GET",
    limiter: RateLimiter | None = None,
    retries: int = 2,
    timeout: float = 10.0,
    backoff_base: float = 0.5,
    now: datetime | None = None,
    keep_der: bool = False,
) -> OcspResult:
    """Ask one responder about one serial and classify the answer; never raises for network trouble.

    keep_der: keep the body of an HTTP 200 answer in result.der (for pkilint's OCSP response linter, --lint).
    """
    der = build_request(serial, issuer, hash_name)
    try:
        code, body, latency = send(session, responder, der, method=method, limiter=limiter, retries=retries,
                                   timeout=timeout, backoff_base=backoff_base)
    except FetchError as exc:
        return OcspResult("unreachable", url=responder, method=method, hash_name=hash_name,
                          http_status=exc.status, error=str(exc))
    if code != 200:
        result = OcspResult("malformed", error=f"HTTP {code}; body starts {body[:80]!r}")
    else:
        result = classify(body, serial, issuer, now)
        if keep_der:
            result.der = body
    result.url, result.method, result.hash_name = responder, method, hash_name
    result.http_status, result.latency_ms = code, latency
    return result
