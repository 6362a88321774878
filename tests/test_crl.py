from __future__ import annotations

import pandas as pd
import pytest
from cryptography import x509

from scanner.enrich.revocation.crl import (
    CRLError,
    apply_revocations,
    crl_revocations,
    load_crl,
    read_crl_files,
)
from scanner.parse.certs import parse_der, records_frame
from scanner.parse.link import collapse_precerts
from tests.synth import TestCA, der, pem, utc


def test_real_incommon_crl_yields_every_entry_with_dates(real_data):
    crl = load_crl((real_data / "crl/InCommon-RSA-Server-CA_2018-08-20.crl").read_bytes())
    info, revs = crl_revocations(crl, "incommon")
    assert info.entries == len(revs) == 20685
    assert "InCommon RSA Server CA" in info.issuer_dn
    assert revs["revoked_at"].notna().all()
    assert (revs["serial"].str.len() % 2 == 0).all()


def test_real_pem_crl_reason_codes_are_named(real_data):
    crl = load_crl((real_data / "crl/pemCRLBase64_RSA-Public-Root-CA-v1_2011-02-23.pem").read_bytes())
    _, revs = crl_revocations(crl, "rsa")
    assert len(revs) == 2
    assert set(revs["revocation_reason"]) - {""} <= {r.value for r in x509.ReasonFlags}
    assert (revs["revocation_reason"] != "").any()


def test_garbage_crl_file_is_an_error_naming_the_file(tmp_path):
    bad = tmp_path / "bad.crl"
    bad.write_bytes(b"\x30\x82\x01")
    infos, revs, errors = read_crl_files([bad])
    assert infos == [] and revs.empty
    assert len(errors) == 1 and "bad.crl" in errors[0]["error"]
    assert errors[0]["provenance"] == str(bad) and errors[0]["stage"] == "crl"
    with pytest.raises(CRLError):
        load_crl(b"nonsense", "x")


def test_crl_revocation_is_applied_only_to_the_issuer_that_signed_it(test_ca):
    other = TestCA(name=test_ca.name)  # same name, different key: must not share revocations
    mine = test_ca.issue(serial=0x1002, not_before=utc("2019-11-12T12:17"), dns=["mail.cuatis.net"])
    theirs = other.issue(serial=0x1002, not_before=utc("2019-11-12T12:00"), dns=["x.example.com"])
    certs = collapse_precerts(records_frame([parse_der(der(mine)), parse_der(der(theirs))]))
    crl = test_ca.crl([(0x1002, utc("2019-11-12T16:55"), x509.ReasonFlags.key_compromise)],
                      this_update=utc("2019-11-13T00:00"))
    _, revs = crl_revocations(load_crl(pem(crl)), "ca.crl")
    out = apply_revocations(certs, revs)
    by_name = {r["san_dns"][0]: r for _, r in out.iterrows()}
    assert by_name["mail.cuatis.net"]["revoked_at"] == pd.Timestamp("2019-11-12T16:55", tz="UTC")
    assert by_name["mail.cuatis.net"]["revocation_reason"] == "keyCompromise"
    assert pd.isna(by_name["x.example.com"]["revoked_at"])


def test_a_pem_file_with_several_crls_and_text_before_them_gives_every_crl(tmp_path, test_ca):
    other = TestCA(name="ctscan Other CA")
    first = test_ca.crl([(0x10, utc("2024-01-02T00:00"), None)], this_update=utc("2024-01-03T00:00"))
    second = other.crl([(0x20, utc("2024-02-02T00:00"), x509.ReasonFlags.superseded)],
                       this_update=utc("2024-02-03T00:00"))
    path = tmp_path / "both.pem"
    path.write_bytes(b"Certificate Revocation List (CRL):\n    Version 2 (0x1)\n" + pem(first) + pem(second))
    infos, revs, errors = read_crl_files([path])
    assert errors == []
    assert len(infos) == 2 and {i.source for i in infos} == {f"{path}#1", f"{path}#2"}
    assert sorted(revs["serial"]) == ["10", "20"]


def test_a_remove_from_crl_entry_does_not_revoke_the_certificate(test_ca):
    crl = test_ca.crl([(0x30, utc("2024-03-01T00:00"), x509.ReasonFlags.certificate_hold),
                       (0x31, utc("2024-03-02T00:00"), x509.ReasonFlags.remove_from_crl)],
                      this_update=utc("2024-03-03T00:00"))
    _, revs = crl_revocations(load_crl(der(crl)), "delta.crl")
    assert revs["serial"].tolist() == ["30"]
    assert revs["revocation_reason"].tolist() == ["certificateHold"]
