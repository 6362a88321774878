"""Subject names read from their DER (the fast path) give exactly what cryptography's Name objects give."""

from __future__ import annotations

import warnings

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from scanner.parse.certs import IssuerNames, _name_parts, _tbs_parts, parse_der, parse_lenient
from tests.synth import TestCA, der, der_children, tlv, utc

CN, ORG, UNIT, LOC, COUNTRY = "550403", "55040a", "55040b", "550407", "550406"
SERIAL_NUMBER, EMAIL, PRIVATE = "550405", "2a864886f70d010901", "2a0304"  # 2.5.4.5, emailAddress, 1.2.3.4
UTF8, PRINTABLE, T61, IA5, BMP, BITS = 0x0C, 0x13, 0x14, 0x16, 0x1E, 0x03


def _name(*rdns: list[tuple[str, int, bytes]]) -> bytes:
    """A DER Name: each RDN a list of (OID hex, string tag, raw value), its SET sorted as DER sorts it."""
    return tlv(0x30, b"".join(
        tlv(0x31, b"".join(sorted(tlv(0x30, tlv(0x06, bytes.fromhex(oid)) + tlv(tag, raw)) for oid, tag, raw in rdn)))
        for rdn in rdns))


def _with_subject(ca: TestCA, subject: bytes) -> bytes:
    """A certificate of the test CA whose subject Name is these bytes."""
    cert = ca.issue(serial=0x5E, not_before=utc("2024-01-10T00:00"), dns=["names.example.com"])
    tbs = der_children(der(cert))[0]
    parts = der_children(tbs)
    new_tbs = tlv(0x30, b"".join([*parts[:5], subject, *parts[6:]]))
    signature = ca.key.sign(new_tbs, ec.ECDSA(hashes.SHA256()))
    return tlv(0x30, new_tbs + der_children(der(cert))[1] + tlv(0x03, b"\x00" + signature))


def _one(text: str, oid: str = CN, tag: int = UTF8) -> list[tuple[str, int, bytes]]:
    return [(oid, tag, text.encode())]


PLAIN = {
    "escaped characters": _name(_one("ES", COUNTRY, PRINTABLE), _one('a,b+c;d<e>f"g\\h=i'), _one("#hash", ORG),
                                _one(" leading", UNIT), _one("trailing ", LOC), _one("nul\0byte", UNIT)),
    "a lone space and empty values": _name(_one(" "), _one("", ORG), _one("  ", UNIT)),
    "several OUs and CNs": _name(_one("first", UNIT), _one("second", UNIT), _one("one"), _one("two")),
    "a multi-valued RDN": _name([(CN, UTF8, b"host.example.com"), (ORG, UTF8, b"Org")], _one("ES", COUNTRY, PRINTABLE)),
    "types without a short name": _name(_one("12345", SERIAL_NUMBER, PRINTABLE), _one("a@b.example", EMAIL, IA5),
                                        _one("private", PRIVATE)),
    "UTF-8 in a UTF8String and a T61String": _name(_one("Cámara", ORG), _one("Cía", LOC, T61)),
    "a three-letter country (cryptography only warns)": _name(_one("ESP", COUNTRY, PRINTABLE)),
    "an empty subject": tlv(0x30, b""),
    "long values (long-form DER lengths)": _name(_one("o" * 200, ORG), _one("c" * 60 + ".example.com")),
}

ODD = {
    "Latin-1 in a T61String": _name(_one("ES", COUNTRY, PRINTABLE), [(ORG, T61, "Cámara Cía".encode("latin-1"))]),
    "bad UTF-8 in a UTF8String": _name([(CN, UTF8, b"Bad \xff UTF-8")]),
    "a BMPString": _name([(ORG, BMP, "Cámara".encode("utf-16-be"))]),
    "an odd-length BMPString": _name([(ORG, BMP, b"\x00a\x00")]),
    "a BIT STRING value for a CN": _name([(CN, BITS, b"\x00\x01")]),
    "a repeated attribute in one RDN": _name([(CN, UTF8, b"same"), (CN, PRINTABLE, b"same")]),
    "an empty RDN": tlv(0x30, tlv(0x31, b"") + tlv(0x31, tlv(0x30, tlv(0x06, bytes.fromhex(CN)) + tlv(UTF8, b"x")))),
}


def _parsed(d: bytes, names: IssuerNames | None = None):
    """parse_der's record, or parse_lenient's where parse_der refuses (as parse_chunk reads it); or the refusal."""
    from scanner.parse.certs import ParseError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return parse_der(d, names=names)
        except ParseError as exc:
            try:
                return parse_lenient(d, str(exc))
            except ParseError as again:
                return ("refused", str(exc), str(again))


def _subject_columns(row):
    return {k: row[k] for k in ("subject_dn", "subject_cn", "subject_o", "subject_ou", "subject_l", "subject_c")}


@pytest.mark.parametrize("case", sorted(PLAIN))
def test_a_plain_subject_is_read_from_its_der_as_cryptography_reads_it(test_ca, case):
    d = _with_subject(test_ca, PLAIN[case])
    names = IssuerNames()
    first = _parsed(d, names)  # cryptography's path: the attribute types are learnt from its Name
    assert _name_parts(_tbs_parts(d, in_certificate=True)[1], names.types) is not None  # the fast path now
    again = _parsed(d, names)
    assert again == first == _parsed(d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        subject = x509.load_der_x509_certificate(d).subject
    assert again["subject_dn"] == subject.rfc4514_string()


@pytest.mark.parametrize("case", sorted(ODD))
def test_a_subject_cryptography_reads_otherwise_or_refuses_takes_its_path_with_the_same_record(test_ca, case):
    d = _with_subject(test_ca, ODD[case])
    names = IssuerNames()
    _parsed(der(test_ca.issue(serial=1, not_before=utc("2024-01-10T00:00"), cn="x", org="y")), names)  # learn CN, O
    assert _name_parts(_tbs_parts(d, in_certificate=True)[1], names.types) is None
    assert _parsed(d, names) == _parsed(d)


def test_latin1_in_a_t61string_is_read_leniently_as_before():
    row = _parsed(_with_subject(TestCA(), ODD["Latin-1 in a T61String"]))
    assert row["subject_o"] == "Cámara Cía" and row["subject_dn"] == "O=Cámara Cía,C=ES"


def test_a_multi_valued_rdn_is_joined_with_a_plus_in_its_der_order(test_ca):
    names = IssuerNames()
    d = _with_subject(test_ca, PLAIN["a multi-valued RDN"])
    _parsed(d, names)
    row = _parsed(d, names)
    assert row["subject_dn"] == "C=ES,O=Org+CN=host.example.com"  # the SET in DER order: by encoding
    assert (row["subject_cn"], row["subject_o"]) == ("host.example.com", "Org")


def test_the_names_parts_are_the_tbs_parts_cryptography_gives(test_ca):
    cert = test_ca.issue(serial=9, not_before=utc("2024-01-10T00:00"), cn="c.example", dns=["c.example"])
    assert _tbs_parts(der(cert), in_certificate=True) == _tbs_parts(cert.tbs_certificate_bytes)


def test_equal_url_lists_are_one_shared_list_in_a_run(test_ca):
    names = IssuerNames()
    rows = [parse_der(der(test_ca.issue(serial=s, not_before=utc("2024-01-10T00:00"), dns=[f"h{s}.example"],
                                        crl_url="http://crl.example/ca.crl", ocsp_url="http://ocsp.example")),
                      names=names) for s in (1, 2)]
    assert rows[0]["crl_distribution_points"] == ["http://crl.example/ca.crl"]
    assert rows[0]["crl_distribution_points"] is rows[1]["crl_distribution_points"]
    assert rows[0]["ocsp_urls"] is rows[1]["ocsp_urls"] and rows[0]["ca_issuers"] == ()
