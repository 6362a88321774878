"""Fetching CRLs over HTTP: signature, staleness, unreadable and unreachable CRLs, CCADB CRL columns."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509

from scanner.enrich.revocation.ccadb import read_ccadb
from scanner.enrich.revocation.crl_fetch import fetch_crls
from scanner.enrich.revocation.issuers import issuers_by_key_id
from tests.loopback.ocsp_server import OcspServer
from tests.loopback.registry_servers import REAL
from tests.synth import TestCA, der

NOW = datetime(2025, 2, 7, 17, 25, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def pki():
    ca = TestCA(name="ctscan CRL Test CA")
    impostor = TestCA(name="ctscan CRL Test CA")  # same name, another key
    revoked = [(0x10, NOW - timedelta(days=3), x509.ReasonFlags.key_compromise), (0x11, NOW - timedelta(days=2), None)]
    files = {
        "/fresh.crl": der(ca.crl(revoked, this_update=NOW - timedelta(hours=2))),
        "/stale.crl": der(ca.crl(revoked, this_update=NOW - timedelta(days=30), next_update=NOW - timedelta(days=23))),
        "/forged.crl": der(impostor.crl([(0x99, NOW - timedelta(days=1), None)], this_update=NOW - timedelta(hours=1))),
        "/garbage.crl": b"<html>Not Found</html>",
    }
    files["/incommon.crl"] = (REAL / "crl" / "InCommon-RSA-Server-CA_2018-08-20.crl").read_bytes()
    with OcspServer(ca.cert, ca.key, files=files) as server:
        yield ca, server


def run(server, ca, paths, **kw):
    return fetch_crls([server.file_url(p) for p in paths], issuers=issuers_by_key_id([ca.cert]), now=NOW,
                      retries=0, timeout=5, backoff_base=0.01, **kw)


def test_a_fresh_crl_signed_by_the_issuer_is_ok_and_its_entries_become_revocations(pki):
    ca, server = pki
    got = run(server, ca, ["/fresh.crl"])
    row = got.crls.iloc[0]
    assert (row["status"], row["signature"], row["entries"]) == ("ok", "ok", 2)
    assert sorted(got.revocations["serial"]) == ["10", "11"]
    assert set(got.revocations["crl"]) == {server.file_url("/fresh.crl")}


def test_a_crl_past_its_next_update_is_stale_but_still_read(pki):
    ca, server = pki
    got = run(server, ca, ["/stale.crl"])
    assert got.crls.iloc[0]["status"] == "stale"
    assert "nextUpdate" in got.crls.iloc[0]["error"]
    assert len(got.revocations) == 2


def test_a_crl_signed_by_another_key_under_the_same_name_is_a_bad_signature_and_not_evidence(pki):
    ca, server = pki
    got = run(server, ca, ["/forged.crl"])
    assert got.crls.iloc[0]["status"] == "bad_signature"
    assert got.revocations.empty
    assert got.errors and "bad_signature" in got.errors[0]["error"]


def test_html_is_unparseable_and_a_404_is_unreachable_with_the_url_named(pki):
    ca, server = pki
    got = run(server, ca, ["/garbage.crl", "/missing.crl"])
    status = dict(zip(got.crls["url"], got.crls["status"]))
    assert status[server.file_url("/garbage.crl")] == "unparseable"
    assert status[server.file_url("/missing.crl")] == "unreachable"
    assert any(server.file_url("/missing.crl") in e["error"] and "404" in e["error"] for e in got.errors)


def test_an_ldap_url_is_not_fetched_but_reported(pki):
    got = fetch_crls(["ldap://ldap.example/cn=CA?certificateRevocationList"], now=NOW, retries=0)
    assert got.crls.iloc[0]["status"] == "unreachable"


def test_the_real_incommon_crl_is_read_but_unverified_without_its_issuer(pki):
    ca, server = pki
    got = run(server, ca, ["/incommon.crl"], )
    row = got.crls.iloc[0]
    assert row["entries"] == 20685
    assert row["status"] == "stale"  # nextUpdate 2018-08-24 is long past
    assert len(got.revocations) == 20685


def test_ccadb_full_and_partitioned_crl_columns_are_read(tmp_path):
    path = tmp_path / "AllCertificateRecords.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["CA Owner", "Certificate Name", "Full CRL Issued By This CA", "JSON Array of Partitioned CRLs"])
        w.writerow(["Example CA", "Example Issuing CA 1", "http://crl.example/full.crl", ""])
        w.writerow(["Example CA", "Example Issuing CA 2", "", json.dumps(["http://crl.example/p1.crl",
                                                                          "http://crl.example/p2.crl"])])
        w.writerow(["Example CA", "Broken", "", "[not json"])
        w.writerow(["Other CA", "Other", "http://other.example/x.crl", ""])
    got = read_ccadb(path)
    mine = [(r.label, u) for r in got.records if r.ca_owner.casefold() == "example ca" for u in r.urls]
    assert [u for _, u in mine] == ["http://crl.example/full.crl", "http://crl.example/p1.crl",
                                    "http://crl.example/p2.crl"]
    assert mine[0][0] == "Example Issuing CA 1"
    assert len(got.errors) == 1 and "Broken" in got.errors[0]["error"]  # "[not json" discloses nothing, named
