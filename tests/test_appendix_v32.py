"""The incident appendix as CCADB's Incident Reporting Guidelines v3.2 define it, read back as a parsing tool would."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import openpyxl
import pytest
from cryptography import x509

from scanner.cli import main
from tests.synth import TestCA, der, pem, utc

#: The v3.2 appendix fields, first and in this order (https://www.ccadb.org/cas/incident-report, "Appendix"),
#: written out here rather than imported, so that the code cannot agree with itself by mistake.
V32_FIELDS = [
    "Precertificate SHA-256 hash", "Certificate SHA-256 hash", "Subject", "Issuer", "Not before", "Not after",
    "Serial #", "dNSNames", "Is revoked?", "Revocation date", "Revocation reason",
]
IS_REVOKED = {"Yes", "Planned", "Delayed", "N/A"}
#: RFC 5280 CRLReason names; empty when the certificate is not revoked or its CRL entry gives no reasonCode.
REASONS = {"", "unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
           "cessationOfOperation", "certificateHold", "removeFromCRL", "privilegeWithdrawn", "aACompromise"}
SHA256 = re.compile(r"[0-9a-f]{64}")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def _sha(cert: x509.Certificate) -> str:
    return hashlib.sha256(der(cert)).hexdigest()


@pytest.fixture(scope="module")
def issued(tmp_path_factory) -> dict:
    """A folder of certificates, all on an unregistered domain so every one is in the appendix, and a CRL."""
    ca = TestCA(name="ctscan v3.2 Test CA")
    base = tmp_path_factory.mktemp("v32")
    nb = utc("2026-04-01T10:00")
    certs = {
        "precert_only": ca.issue(serial=0x101, not_before=nb, cn="shop.cuatis.net", dns=["shop.cuatis.net"],
                                 precert=True),
        "pair_pre": ca.issue(serial=0x102, not_before=nb, cn="mail.cuatis.net", dns=["mail.cuatis.net"],
                             precert=True),
        "pair_final": ca.issue(serial=0x102, not_before=nb, cn="mail.cuatis.net", dns=["mail.cuatis.net"]),
        "empty_subject": ca.issue(serial=0x103, not_before=nb, country=None, dns=["dv.cuatis.net"]),
        "revoked": ca.issue(serial=0x104, not_before=nb, cn="www.cuatis.net", dns=["www.cuatis.net"]),
        "revoked_no_reason": ca.issue(serial=0x105, not_before=nb, cn="vpn.cuatis.net", dns=["vpn.cuatis.net"]),
        "expired": ca.issue(serial=0x106, not_before=utc("2019-01-01T00:00"), days=90, cn="old.cuatis.net",
                            dns=["old.cuatis.net"]),
    }
    folder = base / "certs"
    folder.mkdir()
    for name, cert in certs.items():
        (folder / f"{name}.pem").write_bytes(pem(cert))
    crl = ca.crl([(0x104, utc("2026-04-01T15:00"), x509.ReasonFlags.key_compromise),
                  (0x105, utc("2026-04-02T09:00"), None)], this_update=utc("2026-04-03T00:00"))
    (base / "ca.crl").write_bytes(der(crl))
    answers = base / "registrations.csv"
    answers.write_text("domain,status,method,server,detail,checked_at,registered_at,attempts\n"
                       "cuatis.net,unregistered,rdap,https://rdap.verisign.com/net/v1/,HTTP 404 Not Found,"
                       "2026-04-05T12:00:00Z,,1\n")
    args = [str(folder), "--crl", str(base / "ca.crl"), "--registry-answers", str(answers), "--offline",
            "--cache", str(base / "cache"), "-q"]
    outs = []
    for run in ("r1", "r2"):  # the same cache twice: the rerun must write the same appendix
        assert main(["scan", *args, "--out", str(base / run)]) == 0
        outs.append(base / run)
    return {"certs": certs, "outs": outs}


def _read_as_a_parser_would(path: Path) -> list[dict[str, str]]:
    """csv in strict mode, the 11 fields checked by position before any value is read by name."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, strict=True))
    header, body = rows[0], rows[1:]
    assert header[:11] == V32_FIELDS, path.name
    assert all(len(r) == len(header) for r in body), path.name
    return [dict(zip(header, r)) for r in body]


def test_every_appendix_csv_has_the_v32_fields_first_in_order_with_values_from_the_allowed_sets(issued):
    listings = sorted((issued["outs"][0] / "appendix").glob("*.csv"))
    assert {p.stem for p in listings} >= {"unregistered_domain", "early_revocation"}
    for path in listings:
        for row in _read_as_a_parser_would(path):
            pre, cert = row["Precertificate SHA-256 hash"], row["Certificate SHA-256 hash"]
            assert (pre or cert) and all(SHA256.fullmatch(h) for h in (pre, cert) if h), row
            assert row["Subject"] and row["Issuer"], row  # never a blank that reads as left out
            assert TIME.fullmatch(row["Not before"]) and TIME.fullmatch(row["Not after"]), row
            assert re.fullmatch(r"[0-9a-f]+", row["Serial #"]) and row["dNSNames"], row
            assert row["Is revoked?"] in IS_REVOKED, row
            assert row["Revocation date"] == "N/A" or TIME.fullmatch(row["Revocation date"]), row
            assert (row["Is revoked?"] == "Yes") == (row["Revocation date"] != "N/A"), row
            assert row["Revocation reason"] in REASONS, row
            assert row["Is revoked?"] == "Yes" or row["Revocation reason"] == "", row


def test_a_precertificate_with_no_final_certificate_has_its_own_row_with_the_certificate_column_empty(issued):
    certs = issued["certs"]
    rows = _read_as_a_parser_would(issued["outs"][0] / "appendix" / "unregistered_domain.csv")
    alone = [r for r in rows if r["Precertificate SHA-256 hash"] == _sha(certs["precert_only"])]
    assert [(r["Certificate SHA-256 hash"], r["dNSNames"], r["Serial #"]) for r in alone] == [
        ("", "shop.cuatis.net", "0101")]
    pair = [r for r in rows if r["Certificate SHA-256 hash"] == _sha(certs["pair_final"])]
    assert [r["Precertificate SHA-256 hash"] for r in pair] == [_sha(certs["pair_pre"])]
    assert len(rows) == 6  # seven files, one precertificate/certificate pair: six certificates
    listed = (issued["outs"][0] / "appendix" / "unregistered_domain.crtsh.txt").read_text().splitlines()
    assert f"https://crt.sh/?sha256={_sha(certs['precert_only']).upper()}" in listed


def test_an_empty_subject_is_written_na_as_the_guidelines_mark_a_field_with_nothing_in_it(issued):
    rows = _read_as_a_parser_would(issued["outs"][0] / "appendix" / "unregistered_domain.csv")
    [row] = [r for r in rows if r["Certificate SHA-256 hash"] == _sha(issued["certs"]["empty_subject"])]
    assert row["Subject"] == "N/A" and row["dNSNames"] == "dv.cuatis.net"
    others = [r["Subject"] for r in rows if r is not row]
    assert all(s.startswith("CN=") for s in others)


def test_revoked_rows_carry_the_crl_reason_and_date_and_expired_ones_na(issued):
    certs = issued["certs"]
    rows = {r["Certificate SHA-256 hash"]: r
            for r in _read_as_a_parser_would(issued["outs"][0] / "appendix" / "unregistered_domain.csv")}
    revoked, bare, old = (rows[_sha(certs[k])] for k in ("revoked", "revoked_no_reason", "expired"))
    assert (revoked["Is revoked?"], revoked["Revocation date"], revoked["Revocation reason"]) == (
        "Yes", "2026-04-01T15:00:00Z", "keyCompromise")
    assert (bare["Is revoked?"], bare["Revocation reason"]) == ("Yes", "")
    assert (old["Is revoked?"], old["Revocation date"]) == ("N/A", "N/A")


def test_the_incident_summary_and_the_xlsx_name_guidelines_v32(issued):
    out = issued["outs"][0]
    md = (out / "appendix" / "incident-summary.md").read_text()
    assert "Incident Reporting Guidelines v3.2" in md and "v3.0" not in md
    assert "https://www.ccadb.org/cas/incident-report" in md
    book = openpyxl.load_workbook(out / "suspects.xlsx", read_only=True)
    cells = [str(c) for row in book["Summary"].iter_rows(values_only=True) for c in row if c is not None]
    assert any("Incident Reporting Guidelines v3.2" in c for c in cells)


def test_a_rerun_with_the_same_cache_writes_the_same_appendix(issued):
    first, second = (sorted((out / "appendix").glob("*.csv")) for out in issued["outs"])
    assert [p.name for p in first] == [p.name for p in second]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name
    as_of = re.compile(r"as of [0-9TZ:-]+")
    # the time the figures were counted at is the only difference allowed
    summaries = [as_of.sub("", (out / "appendix" / "incident-summary.md").read_text()) for out in issued["outs"]]
    assert summaries[0] == summaries[1]
