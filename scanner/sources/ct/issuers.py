"""Which log entries belong to the CA under audit: by issuer key hash, chain certificate or chain fingerprint."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scanner.sources.base import SourceError
from scanner.sources.ct.leaf import PRECERT_ENTRY, LogEntry
from scanner.sources.files import split_certificates

#: the Extended Key Usage of a CA that only signs precertificates (RFC 6962 section 3.1)
PRECERT_SIGNING_EKU = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.4")


class IssuerError(ValueError):
    """An --issuer-cert file holds no readable certificate."""


def spki_sha256(cert: x509.Certificate) -> bytes:
    """SHA-256 of a certificate's SubjectPublicKeyInfo: RFC 6962's issuer_key_hash."""
    return hashlib.sha256(cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest()


def load_issuer_certs(paths: Iterable[Path]) -> list[x509.Certificate]:
    """Every certificate in the given files, in any layout the files source reads (PEM, DER, PKCS#7)."""
    certs = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise IssuerError(f"cannot read --issuer-cert {path}: {exc.strerror or exc}") from None
        for item in split_certificates(data, str(path)):
            if isinstance(item, SourceError):
                raise IssuerError(f"--issuer-cert {item.provenance}: {item.error}")
            try:
                certs.append(x509.load_der_x509_certificate(item.der))
            except ValueError as exc:
                raise IssuerError(f"--issuer-cert {item.provenance} is not a readable certificate: {exc}") from None
    return certs


class _ChainCert:
    """What the filter needs to know about one chain certificate: its key hash and whether it signs only precerts."""

    __slots__ = ("key_hash", "precert_signer")

    def __init__(self, key_hash: bytes | None, precert_signer: bool):
        self.key_hash, self.precert_signer = key_hash, precert_signer


def _describe(der: bytes) -> _ChainCert:
    try:
        cert = x509.load_der_x509_certificate(der)
        key_hash = spki_sha256(cert)
        try:
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            signer = PRECERT_SIGNING_EKU in list(eku)
        except x509.ExtensionNotFound:
            signer = False
        return _ChainCert(key_hash, signer)
    except Exception:  # noqa: BLE001 - an unreadable chain certificate just cannot vouch for the entry
        return _ChainCert(None, False)


class IssuerFilter:
    """Keeps entries issued by the given CA certificates (matched by key, so re-issued CA certificates count)."""

    def __init__(self, certs: Iterable[x509.Certificate]):
        certs = list(certs)
        self.active = bool(certs)
        self.key_hashes = {spki_sha256(c) for c in certs}
        self.fingerprints = {hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).digest() for c in certs}
        self._by_sha: dict[bytes, _ChainCert] = {}  # chain certificates by SHA-256: a log has few issuers

    def _chain_cert(self, sha: bytes, der: Callable[[], bytes | None]) -> _ChainCert:
        known = self._by_sha.get(sha)
        if known is None:
            body = der()
            known = _describe(body) if body is not None else _ChainCert(None, False)
            if len(self._by_sha) < 100_000:
                self._by_sha[sha] = known
        return known

    def _issued_by_ca(self, shas: list[bytes], der_of: Callable[[int], bytes | None], precert: bool) -> bool:
        for i, sha in enumerate(shas[:2]):
            if sha in self.fingerprints:
                return True
            cc = self._chain_cert(sha, lambda i=i: der_of(i))
            if cc.key_hash in self.key_hashes:
                return True
            # Only a precertificate-signing CA passes the decision to the next certificate up the chain.
            if not (precert and i == 0 and cc.precert_signer):
                return False
        return False

    def keep(self, entry: LogEntry, issuer_der: Callable[[bytes], bytes | None] | None = None) -> bool:
        """Whether this entry belongs to the audited CA (every entry when no CA was given).

        RFC 6962 entries carry chain DERs; static-ct-api entries carry fingerprints, resolved
        through issuer_der(fingerprint) only when the fingerprint itself does not decide.
        """
        if not self.active:
            return True
        if entry.entry_type == PRECERT_ENTRY and entry.issuer_key_hash in self.key_hashes:
            return True
        if issuer_der is None:  # RFC 6962: the chain holds the certificates themselves
            chain = entry.chain
            shas = [hashlib.sha256(c).digest() for c in chain[:2]]
            return self._issued_by_ca(shas, lambda i: chain[i], entry.entry_type == PRECERT_ENTRY)
        fps = list(entry.chain[:2])
        return self._issued_by_ca(fps, lambda i: issuer_der(fps[i]), entry.entry_type == PRECERT_ENTRY)
