"""Certificates cryptography reads only with a warning, and PEM files holding no certificate."""

from __future__ import annotations

import json
import warnings

from cryptography.utils import CryptographyDeprecationWarning

from scanner.core.der import element
from scanner.core.records import WARNED_NOTE
from scanner.detect.malformed import detect_malformed
from scanner.parse.items import parse_chunk
from scanner.sources.base import RawCert, SourceError
from scanner.sources.files import split_certificates
from tests.synth import TestCA, der, pem, utc


def _with_serial_byte(cert_der: bytes, value: int) -> bytes:
    """The certificate with its one-byte serial number replaced (the signature no longer matters to a parse)."""
    _, tbs, _ = element(cert_der, 0)
    _, inside, _ = element(cert_der, tbs)
    _, _, serial = element(cert_der, inside)  # past [0] version
    assert cert_der[serial:serial + 3] == b"\x02\x01\x7f"
    return cert_der[:serial + 2] + bytes([value]) + cert_der[serial + 3:]


def _certs() -> tuple[bytes, bytes, bytes]:
    ca = TestCA()
    good = der(ca.issue(serial=0x7F, not_before=utc("2024-03-01T00:00"), dns=["shop.example.com"]))
    return _with_serial_byte(good, 0x81), _with_serial_byte(good, 0x00), good


def test_a_negative_or_zero_serial_is_noted_on_its_certificate_not_printed():
    negative, zero, good = _certs()
    items = [RawCert(negative, "files", "neg.pem"), RawCert(zero, "files", "zero.pem"),
             RawCert(good, "files", "good.pem")]
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        first = parse_chunk(items, 5000, domains=False)
        second = parse_chunk(items, 5000, domains=False)  # a warning shown once must still be noted again
    assert not [w for w in shown if issubclass(w.category, CryptographyDeprecationWarning)]
    for chunk in (first, second):
        certs = chunk.certs.set_index("provenance")
        assert len(certs) == 3 and not chunk.errors
        assert certs.loc["neg.pem", "serial"] == "-7f" and certs.loc["zero.pem", "serial"] == "00"
        for name in ("neg.pem", "zero.pem"):
            assert certs.loc[name, "parse_note"] == WARNED_NOTE + "the serial number is not positive (RFC 5280 4.1.2.2)"
        assert certs.loc["good.pem", "parse_note"] == ""
    findings = detect_malformed(first.certs)
    assert sorted(findings["sha256"]) == sorted(first.certs.loc[first.certs["parse_note"] != "", "sha256"])
    assert all("only with a warning (the serial number is not positive" in text for text in findings["evidence"])
    assert {json.loads(d)["warning"] for d in findings["detail"]} == {
        "the serial number is not positive (RFC 5280 4.1.2.2)"}


def test_a_pem_file_of_crls_says_to_pass_them_with_crl():
    ca = TestCA()
    crl = ca.crl([], this_update=utc("2024-03-01T00:00"))
    (error,) = list(split_certificates(pem(crl), "ca.crl.pem"))
    assert isinstance(error, SourceError)
    assert "no CERTIFICATE or PKCS7 block (it holds X509 CRL: pass CRLs with --crl)" in error.error


def test_a_pem_file_of_keys_names_what_it_holds():
    data = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    data += b"-----BEGIN " + b"X" * 5000 + b"-----\nAAAA\n-----END " + b"X" * 5000 + b"-----\n"
    (error,) = list(split_certificates(data, "key.pem"))
    assert isinstance(error, SourceError)
    assert "(it holds PRIVATE KEY, " + "X" * 40 + ")" in error.error and len(error.error) < 200
