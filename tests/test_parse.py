from __future__ import annotations

import hashlib

import pytest

from scanner.parse.certs import ParseError, parse_der, records_frame, serial_hex
from scanner.parse.link import collapse_precerts
from scanner.sources.base import RawCert, SourceError
from scanner.sources.files import read_files
from tests.synth import der, pem, utc


def _der_of_pem(path):
    items = list(read_files([path]))
    assert len(items) == 1 and isinstance(items[0], RawCert)
    return items[0].der


def test_real_lets_encrypt_precert_is_recognised_by_its_poison_extension(real_data):
    d = _der_of_pem(real_data / "cryptography_vectors/x509/cryptography.io.precert.pem")
    row = parse_der(d, source="files", provenance="x")
    assert row["is_precert"] is True
    assert row["precert_sha256"] == hashlib.sha256(d).hexdigest() and row["cert_sha256"] == ""
    assert "cryptography.io" in row["san_dns"]
    assert row["issuer_dn"].endswith("O=Let's Encrypt,C=US")


def test_real_wildcard_certificate_keeps_its_wildcard_san_and_subject_fields(real_data):
    d = _der_of_pem(real_data / "cryptography_vectors/x509/wildcard_san.pem")
    row = parse_der(d)
    assert "*.langui.sh" in row["san_dns"]
    assert row["subject_o"] and row["not_before"] < row["not_after"]
    assert row["crl_distribution_points"] or row["ocsp_urls"]


def test_real_wosign_certificate_that_cryptography_refuses_raises_a_readable_parse_error(real_data):
    d = _der_of_pem(real_data / "cryptography_vectors/x509/wosign-bc-invalid.pem")
    with pytest.raises(ParseError, match="path_length|ca"):
        parse_der(d)


def test_serial_hex_is_even_length_lowercase():
    assert serial_hex(0x1002) == "1002"
    assert serial_hex(0xABC) == "0abc"
    assert serial_hex(0) == "00"


def test_precertificate_and_final_certificate_collapse_into_one_row_with_both_hashes(test_ca):
    kw = dict(serial=77, not_before=utc("2019-11-12T12:17"), cn="mail.cuatis.net", dns=["mail.cuatis.net"])
    pre, final = der(test_ca.issue(precert=True, **kw)), der(test_ca.issue(**kw))
    rows = collapse_precerts(records_frame([parse_der(pre, provenance="p"), parse_der(final, provenance="f")])).to_dict("records")
    assert len(rows) == 1
    row = rows[0]
    assert row["provenance"] == "f + precert p"
    assert row["sha256"] == hashlib.sha256(final).hexdigest() == row["cert_sha256"]
    assert row["precert_sha256"] == hashlib.sha256(pre).hexdigest()
    assert not row["is_precert"]


def test_two_different_final_certificates_with_one_serial_are_both_kept(test_ca):
    a = der(test_ca.issue(serial=78, not_before=utc("2020-01-01T00:00"), dns=["a.example.com"]))
    b = der(test_ca.issue(serial=78, not_before=utc("2020-01-02T00:00"), dns=["b.example.com"]))
    rows = collapse_precerts(records_frame([parse_der(a), parse_der(b), parse_der(a)])).to_dict("records")
    assert sorted(r["san_dns"][0] for r in rows) == ["a.example.com", "b.example.com"]


def test_pem_bundle_yields_every_certificate_and_a_garbage_block_becomes_an_error(tmp_path, test_ca):
    certs = [test_ca.issue(serial=s, not_before=utc("2020-01-01T00:00"), dns=[f"h{s}.example.com"]) for s in (1, 2, 3)]
    bundle = b"".join(pem(c) for c in certs) + b"-----BEGIN CERTIFICATE-----\n!!notbase64!!\n-----END CERTIFICATE-----\n"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "bundle.pem").write_bytes(bundle)
    (tmp_path / "one.der").write_bytes(der(certs[0]))
    items = list(read_files([tmp_path]))
    raws = [i for i in items if isinstance(i, RawCert)]
    errs = [i for i in items if isinstance(i, SourceError)]
    assert len(raws) == 4
    assert len(errs) == 1 and "base64" in errs[0].error and errs[0].provenance.endswith("bundle.pem#4")


# --- file layouts a CA's own export may use ------------------------------------------------------

# OpenSSL's X509_CERT_AUX after a TRUSTED CERTIFICATE: SEQUENCE { trust SEQUENCE { serverAuth } }
_TRUST_AUX = bytes.fromhex("300c300a06082b06010505070301")


def _read(tmp_path, name: str, data: bytes) -> list:
    path = tmp_path / name
    path.write_bytes(data)
    return list(read_files([path]))


def _pem_block(label: str, body: bytes) -> bytes:
    import base64

    lines = [base64.b64encode(body)[i : i + 64] for i in range(0, len(base64.b64encode(body)), 64)]
    return b"-----BEGIN " + label.encode() + b"-----\n" + b"\n".join(lines) + b"\n-----END " + label.encode() + b"-----\n"


@pytest.mark.parametrize("encoding", ["PEM", "DER"])
def test_a_pkcs7_bundle_yields_each_of_its_certificates(tmp_path, test_ca, encoding):
    from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

    certs = [test_ca.issue(serial=s, not_before=utc("2024-01-01T00:00"), cn=f"host{s}.example.com", dns=[f"host{s}.example.com"]) for s in (11, 12)]
    bundle = pkcs7.serialize_certificates(certs, getattr(Encoding, encoding))
    items = _read(tmp_path, f"chain.p7{encoding[0].lower()}", bundle)
    assert all(isinstance(i, RawCert) for i in items)
    assert sorted(hashlib.sha256(i.der).hexdigest() for i in items) == sorted(hashlib.sha256(der(c)).hexdigest() for c in certs)
    assert all("p7#" in i.provenance for i in items)


def test_an_unreadable_pkcs7_bundle_is_one_error_row_not_a_crash(tmp_path):
    items = _read(tmp_path, "bad.p7b", _pem_block("PKCS7", b"\x30\x03\x02\x01\x00"))
    assert len(items) == 1 and isinstance(items[0], SourceError) and "PKCS#7" in items[0].error


def test_an_openssl_trusted_certificate_is_read_without_its_trust_settings(tmp_path, test_ca):
    cert = der(test_ca.issue(serial=21, not_before=utc("2024-01-01T00:00"), cn="trusted.example.com", dns=["trusted.example.com"]))
    [item] = _read(tmp_path, "trusted.pem", _pem_block("TRUSTED CERTIFICATE", cert + _TRUST_AUX))
    assert isinstance(item, RawCert) and item.der == cert
    assert parse_der(item.der)["sha256"] == hashlib.sha256(cert).hexdigest()


def test_a_der_file_with_a_trailing_newline_is_the_certificate_but_trailing_bytes_are_an_error(tmp_path, test_ca):
    cert = der(test_ca.issue(serial=31, not_before=utc("2024-01-01T00:00"), cn="der.example.com", dns=["der.example.com"]))
    [item] = _read(tmp_path, "cert.der", cert + b"\r\n")
    assert parse_der(item.der)["sha256"] == hashlib.sha256(cert).hexdigest()
    [item] = _read(tmp_path, "cert2.der", cert + b"garbage")
    with pytest.raises(ParseError):  # not silently cut: the file is not what it claims to be
        parse_der(item.der)
