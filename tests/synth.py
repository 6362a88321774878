"""Build real DER certificates, precertificates and CRLs from a throwaway CA (sample data, tests, benchmarks)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

UTC = timezone.utc


def utc(text: str) -> datetime:
    """'2019-11-12T12:17' -> aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key (fast to make and to sign with)."""
    return ec.generate_private_key(ec.SECP256R1())


@dataclass
class TestCA:
    """A throwaway issuing CA that signs certificates and CRLs."""

    __test__ = False  # not a pytest test class despite its name

    name: str = "ctscan Sample Issuing CA"
    key: ec.EllipticCurvePrivateKey = field(default_factory=new_key)
    not_before: datetime = field(default_factory=lambda: utc("2015-01-01T00:00"))

    def __post_init__(self) -> None:
        self.subject = x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, "XX"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ctscan Test PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, self.name),
        ])
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.subject)
            .issuer_name(self.subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.not_before)
            .not_valid_after(self.not_before + timedelta(days=365 * 30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(ski, critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def cert_pem(self) -> bytes:
        """The CA certificate as PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        *,
        serial: int,
        not_before: datetime,
        days: int = 365,
        cn: str | None = None,
        org: str | None = None,
        dns: Sequence[str] = (),
        ips: Sequence[str] = (),
        country: str | None = "ES",
        precert: bool = False,
        key: ec.EllipticCurvePrivateKey | None = None,
        crl_url: str | None = None,
        ocsp_url: str | None = None,
        ca_issuers_url: str | None = None,
    ) -> x509.Certificate:
        """Sign a leaf certificate (or its precertificate, with the CT poison extension)."""
        attrs = []
        if country:
            attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, country))
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        if cn:
            attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        leaf_key = key or _shared_leaf_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(self.subject)
            .public_key(leaf_key.public_key())
            .serial_number(serial)
            .not_valid_before(not_before)
            .not_valid_after(not_before + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(self.aki, critical=False)
        )
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if crl_url:
            builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier(crl_url)], None, None, None)]), critical=False)
        access = [(x509.oid.AuthorityInformationAccessOID.OCSP, ocsp_url),
                  (x509.oid.AuthorityInformationAccessOID.CA_ISSUERS, ca_issuers_url)]
        if ocsp_url or ca_issuers_url:
            builder = builder.add_extension(x509.AuthorityInformationAccess([
                x509.AccessDescription(method, x509.UniformResourceIdentifier(url)) for method, url in access if url
            ]), critical=False)
        if precert:
            builder = builder.add_extension(x509.PrecertPoison(), critical=True)
        return builder.sign(self.key, hashes.SHA256())

    def crl(
        self,
        revoked: Iterable[tuple[int, datetime, x509.ReasonFlags | None]],
        *,
        this_update: datetime,
        next_update: datetime | None = None,
        idp: str | None = None,
        idp_critical: bool = True,
    ) -> x509.CertificateRevocationList:
        """Sign a CRL listing (serial, revocation date, reason or None); idp: an Issuing Distribution Point URI."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.subject)
            .last_update(this_update)
            .next_update(next_update or this_update + timedelta(days=7))
            .add_extension(self.aki, critical=False)
        )
        if idp is not None:
            builder = builder.add_extension(x509.IssuingDistributionPoint(
                full_name=[x509.UniformResourceIdentifier(idp)], relative_name=None, only_contains_user_certs=True,
                only_contains_ca_certs=False, only_some_reasons=None, indirect_crl=False,
                only_contains_attribute_certs=False), critical=idp_critical)
        for serial, when, reason in revoked:
            entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
            if reason is not None:
                entry = entry.add_extension(x509.CRLReason(reason), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        return builder.sign(self.key, hashes.SHA256())


_LEAF_KEY: list[ec.EllipticCurvePrivateKey] = []


def _shared_leaf_key() -> ec.EllipticCurvePrivateKey:
    if not _LEAF_KEY:
        _LEAF_KEY.append(new_key())
    return _LEAF_KEY[0]


def der(obj: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    """DER bytes of a certificate or CRL."""
    return obj.public_bytes(serialization.Encoding.DER)


def pem(obj: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    """PEM bytes of a certificate or CRL."""
    return obj.public_bytes(serialization.Encoding.PEM)


# --- DER by hand: for what the builder refuses to write (bad strings, odd names, reason codes) ----------


def tlv(tag: int, body: bytes) -> bytes:
    """One DER element: tag, definite length (any size), body."""
    n = len(body)
    size = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes(
        (n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + size + body


def der_children(buf: bytes) -> list[bytes]:
    """The elements inside a DER SEQUENCE or SET, each whole."""
    from scanner.core.der import element

    _, pos, end = element(buf, 0)
    out = []
    while pos < end:
        _, _, nxt = element(buf, pos)
        out.append(buf[pos:nxt])
        pos = nxt
    return out
