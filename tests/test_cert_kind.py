"""What a certificate is for (cert_kind), and BR 6.3.2's validity limit applied to TLS subscriber certificates only."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scanner.detect.rules import detect_validity_exceeds_limit
from scanner.parse.items import parse_chunk
from scanner.sources.base import RawCert
from scanner.sources.files import read_files
from tests.synth import TestCA, der, new_key, utc

FIXTURES = Path(__file__).parent / "fixtures" / "zlint"
E = ExtendedKeyUsageOID


def _cert(ca: TestCA, name: str, *, is_ca: bool = False, purposes: list | None = None) -> bytes:
    """A certificate valid three years from 2024 (over every TLS limit then in force)."""
    start = utc("2024-06-01T00:00")
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(ca.subject).public_key(new_key().public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + timedelta(days=3 * 365))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True))
    if purposes is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
    if not is_ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    return der(builder.sign(ca.key, hashes.SHA256()))


KINDS = {
    "sub-ca.example": ({"is_ca": True, "purposes": [E.SERVER_AUTH]}, "ca"),
    "server.example": ({"purposes": [E.SERVER_AUTH, E.CLIENT_AUTH]}, "tls"),
    "any.example": ({"purposes": [E.ANY_EXTENDED_KEY_USAGE]}, "tls"),
    "no-eku.example": ({}, "tls"),
    "ocsp.example": ({"purposes": [E.OCSP_SIGNING]}, "ocsp"),
    "mail.example": ({"purposes": [E.EMAIL_PROTECTION, E.CLIENT_AUTH]}, "smime"),
    "client.example": ({"purposes": [E.CLIENT_AUTH]}, "other"),
}


@pytest.fixture(scope="module")
def parsed():
    ca = TestCA()
    items = [RawCert(_cert(ca, name, **kw), "files", name) for name, (kw, _) in KINDS.items()]
    items.append(RawCert(der(ca.cert), "files", "root"))
    return parse_chunk(items, 5000, domains=False).certs.set_index("provenance", drop=False)


def test_every_certificate_is_named_for_what_it_is_for(parsed):
    assert parsed["cert_kind"].to_dict() == {**{n: kind for n, (_, kind) in KINDS.items()}, "root": "ca"}


def test_only_tls_subscriber_certificates_exceed_the_br_validity_limit(parsed):
    # a CA's issuance on crt.sh holds its subordinate CAs and OCSP responders: their long validity is no finding
    found = detect_validity_exceeds_limit(parsed.reset_index(drop=True))
    flagged = set(parsed.set_index("sha256").loc[found["sha256"], "provenance"])
    assert flagged == {"server.example", "any.example", "no-eku.example"}


def test_a_table_without_the_column_is_checked_as_before(parsed):
    found = detect_validity_exceeds_limit(parsed.drop(columns="cert_kind").reset_index(drop=True))
    # every one of 2024 (the root's notBefore, 2015-01-01, is before the first limit of the table)
    assert set(parsed.set_index("sha256").loc[found["sha256"], "provenance"]) == set(KINDS)


def test_certificates_read_leniently_are_named_too():
    certs = parse_chunk(list(read_files([FIXTURES])), 5000, domains=False).certs
    certs = certs.set_index(certs["provenance"].map(lambda p: Path(p.split("#")[0]).name))
    assert (certs["parse_note"] != "").all()  # both refused by cryptography
    assert certs["cert_kind"].to_dict() == {"IANBareSuffix.pem": "ca", "generalizedAfter2050.pem": "tls"}
    found = detect_validity_exceeds_limit(certs.reset_index(drop=True))
    assert list(found["sha256"]) == [certs.loc["generalizedAfter2050.pem", "sha256"]]
