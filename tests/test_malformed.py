"""A certificate cryptography refuses is read leniently, found malformed, checked like any other, and still an error row."""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtensionOID, NameOID

from scanner.cli import main
from scanner.parse.certs import ParseError, parse_der, parse_lenient
from scanner.pipeline import load_scan
from scanner.sources.files import read_files
from tests.synth import TestCA, _shared_leaf_key, der, pem, utc

WOSIGN = Path("cryptography_vectors/x509/wosign-bc-invalid.pem")
#: basicConstraints SEQUENCE { pathLenConstraint 0 } with cA left at its default FALSE: WoSign's own bytes.
CA_FALSE_PATHLEN_0 = bytes.fromhex("3003020100")


def _der_of(path: Path) -> bytes:
    [item] = list(read_files([path]))
    return item.der


def _wosign_like(ca: TestCA, *, serial: int, cn: str, org: str, dns: list[str]) -> x509.Certificate:
    """A TLS certificate with WoSign's defect, signed by the test CA, so that cryptography refuses it."""
    not_before = utc("2019-11-12T12:17")
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                                 x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.subject)
        .public_key(_shared_leaf_key().public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=365))
        .add_extension(x509.UnrecognizedExtension(ExtensionOID.BASIC_CONSTRAINTS, CA_FALSE_PATHLEN_0), critical=True)
        .add_extension(ca.aki, critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns]), critical=False)
        .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier("http://crl.example.test/ca.crl")], None, None, None)]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _scan(folder: Path, out: Path, *extra: str) -> dict:
    # one cache for a folder's scans, so that a rerun reads what the first run kept
    cache = folder.parent / "cache"
    assert main(["scan", str(folder), "--offline", "--cache", str(cache), "--out", str(out), "-q", *extra]) == 0
    return {
        "findings": sorted((r["sha256"], r["code"], r["name"]) for r in load_scan(out).findings.to_dict("records")),
        "errors": _rows(out / "errors.csv"),
        "suspects": _rows(out / "suspects.csv"),
        "summary": json.loads((out / "summary.json").read_text()),
    }


def test_the_real_wosign_certificate_is_read_leniently_with_its_issuer_subject_validity_and_urls(real_data):
    der_ = _der_of(real_data / WOSIGN)
    with pytest.raises(ParseError) as refused:
        parse_der(der_)
    row = parse_lenient(der_, str(refused.value), source="files", provenance="wosign")
    assert row["serial"] == "1d9d58a78aff02"
    assert row["issuer_dn"] == "CN=WoSign Class 3 Code Signing CA,O=WoSign eCommerce Services Limited,C=CN"
    assert row["subject_o"] == "广州海然数码科技有限公司" and row["subject_c"] == "CN"
    assert (row["not_before"].isoformat(), row["not_after"].isoformat()) == (
        "2013-04-09T06:39:19+00:00", "2016-04-11T16:01:08+00:00")
    assert row["issuer_key_id"] == "f502aa4bd3e01a8e7750d61abbebdfb98370b04e"
    assert list(row["crl_distribution_points"]) == ["http://crls.wosign.com/code-3.crl"]
    assert list(row["ocsp_urls"]) == ["http://ocsp.wosign.com/class3/code/ca"]
    assert row["parse_note"] == "ValueError: path_length must be None when ca is False"


@pytest.mark.parametrize("name", ["wildcard_san.pem", "cryptography.io.precert.pem", "utf8-dnsname.pem"])
def test_the_lenient_reader_gives_the_strict_record_for_a_real_certificate_both_can_read(real_data, name):
    der_ = _der_of(real_data / "cryptography_vectors/x509" / name)
    strict, lenient = parse_der(der_), parse_lenient(der_, "")
    as_lists = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in strict.items()}
    assert {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in lenient.items()} == as_lists


def test_the_wosign_certificate_scanned_is_one_malformed_finding_and_still_one_error_row_twice(real_data, tmp_path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "wosign.pem").write_bytes((real_data / WOSIGN).read_bytes())
    sha = hashlib.sha256(_der_of(real_data / WOSIGN)).hexdigest()
    first = _scan(tmp_path / "certs", tmp_path / "r1")
    assert first["findings"] == [(sha, "malformed_certificate", "")]
    [finding] = load_scan(tmp_path / "r1").findings.to_dict("records")
    assert "path_length must be None when ca is False" in finding["evidence"] and finding["severity"] == "high"
    [error] = first["errors"]
    assert error["stage"] == "parse" and error["sha256"] == sha and "path_length" in error["error"]
    [suspect] = first["suspects"]
    assert suspect["serial"] == "1d9d58a78aff02" and "malformed_certificate" in suspect["signals"]
    assert first["summary"]["findings"] == {"malformed_certificate": 1}
    # the Parquet table a notebook reloads says how the certificate was read
    [note] = load_scan(tmp_path / "r1").certs["parse_note"].tolist()
    assert note == "ValueError: path_length must be None when ca is False"
    appendix = _rows(tmp_path / "r1" / "appendix" / "malformed_certificate.csv")
    assert len(appendix) == 1
    second = _scan(tmp_path / "certs", tmp_path / "r2")
    assert (second["findings"], second["errors"], second["suspects"]) == (
        first["findings"], first["errors"], first["suspects"])


def test_a_malformed_certificates_names_go_through_registration_typo_and_revocation_checks(test_ca, tmp_path):
    cert = _wosign_like(test_ca, serial=0x4D41, cn="mail.cuatis.net", org="CUALTIS S.L.U",
                        dns=["mail.cuatis.net"])
    with pytest.raises(ParseError):
        parse_der(der(cert))
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "malformed.pem").write_bytes(pem(cert))
    crl = test_ca.crl([(0x4D41, utc("2019-11-12T16:53"), x509.ReasonFlags.cessation_of_operation)],
                      this_update=utc("2019-11-13T00:00"))
    (tmp_path / "ca.crl").write_bytes(der(crl))
    answers = tmp_path / "registrations.csv"
    answers.write_text("domain,status,method,server,detail,checked_at,registered_at,attempts\n"
                       "cuatis.net,unregistered,rdap,https://rdap.verisign.com/net/v1/,HTTP 404 Not Found,"
                       "2020-07-08T12:00:00Z,,1\n")
    args = ("--crl", str(tmp_path / "ca.crl"), "--registry-answers", str(answers))
    sha = hashlib.sha256(der(cert)).hexdigest()
    first = _scan(tmp_path / "certs", tmp_path / "r1", *args)
    codes = {code for s, code, _ in first["findings"] if s == sha}
    assert {"malformed_certificate", "unregistered_domain", "typo_neighbour", "early_revocation"} <= codes
    [error] = first["errors"]
    assert error["sha256"] == sha and "read leniently" in error["error"]
    [suspect] = first["suspects"]
    assert suspect["sans"] == "mail.cuatis.net" and suspect["revoked_at"].startswith("2019-11-12T16:53")
    second = _scan(tmp_path / "certs", tmp_path / "r2", *args)
    assert (second["findings"], second["errors"], second["suspects"]) == (
        first["findings"], first["errors"], first["suspects"])


def test_truncated_certificate_bytes_are_only_an_error_row_twice(test_ca, tmp_path):
    cert = der(test_ca.issue(serial=7, not_before=utc("2020-01-01T00:00"), dns=["www.example.com"]))
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "cut.der").write_bytes(cert[: len(cert) // 2])
    wosign_like_but_cut = der(_wosign_like(test_ca, serial=8, cn="a.example.com", org="A", dns=["a.example.com"]))
    (tmp_path / "certs" / "cut-malformed.der").write_bytes(wosign_like_but_cut[:-40])
    for out in ("r1", "r2"):
        scan = _scan(tmp_path / "certs", tmp_path / out)
        assert scan["findings"] == [] and scan["suspects"] == []
        assert len(scan["errors"]) == 2 and all(e["stage"] == "parse" for e in scan["errors"])
        assert not any("read leniently" in e["error"] for e in scan["errors"])
        assert scan["summary"]["parsed"] == 0
