"""CCADB test websites over real TLS on loopback: every address checked, stale nodes and wrong roots caught."""

from __future__ import annotations

import csv
import hashlib
from datetime import datetime, timedelta, timezone

import openpyxl
import pandas as pd
import pytest
from cryptography import x509

from scanner.testsites.checks import chain_to_root, read_test_sites, run_test_websites
from scanner.testsites.report import write_test_websites
from tests.loopback import ocsp_server as srv
from tests.loopback.tls_servers import AddressDns, TlsNodes
from tests.synth import TestCA, der, new_key, pem

NOW = datetime.now(timezone.utc).replace(microsecond=0)
MOZILLA_HEADER = ["Owner", "Common Name or Certificate Name", "SHA-256 Fingerprint", "Test Website - Valid",
                  "Test Website - Expired", "Test Website - Revoked", "PEM Info"]


def write_mozilla(path, rows):
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_ALL)
        w.writerow(MOZILLA_HEADER)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = TestCA(name="ctscan Test Website Root")
    other = TestCA(name="ctscan Some Other Root")
    with srv.OcspServer(root.cert, root.key, {30: srv.Answer(srv.REVOKED, revoked_at=NOW - timedelta(days=2))}) as pki:
        pki.files["/root.crl"] = der(root.crl([(30, NOW - timedelta(days=2), x509.ReasonFlags.superseded)],
                                              this_update=NOW - timedelta(hours=1)))
        crl = pki.file_url("/root.crl")

        def leaf(ca, serial, start, days):
            key = new_key()
            cert = ca.issue(serial=serial, not_before=start, days=days, cn="site.test.example",
                            dns=["site.test.example"], key=key, ocsp_url=pki.url, crl_url=crl)
            return [cert, ca.cert], key

        fresh = leaf(root, 10, NOW - timedelta(days=10), 90)
        expired = leaf(root, 20, NOW - timedelta(days=400), 365)
        revoked = leaf(root, 30, NOW - timedelta(days=10), 90)
        foreign = leaf(other, 40, NOW - timedelta(days=10), 90)
        a = TlsNodes({"127.0.0.2": fresh, "127.0.0.3": expired}).start()  # one stale node behind one name
        b = TlsNodes({"127.0.0.2": expired}).start()
        c = TlsNodes({"127.0.0.2": revoked}).start()
        d = TlsNodes({"127.0.0.2": foreign}).start()
        names = {"valid.test.example": (["127.0.0.2", "127.0.0.3"], a), "expired.test.example": (["127.0.0.2"], b),
                 "revoked.test.example": (["127.0.0.2"], c), "wrong.test.example": (["127.0.0.2"], d),
                 "notexpired.test.example": (["127.0.0.2"], a), "notrevoked.test.example": (["127.0.0.2"], a),
                 "valid2.test.example": (["127.0.0.2"], c)}
        dns = AddressDns({n: addrs for n, (addrs, _) in names.items()}).start()
        ports = {n: nodes.port for n, (_, nodes) in names.items()}
        fp = hashlib.sha256(der(root.cert)).hexdigest().upper()
        root_pem = "'" + pem(root.cert).decode() + "'"
        u = "https://{}/".format
        ccadb = write_mozilla(tmp_path_factory.mktemp("ccadb") / "report.csv", [
            ["Test Owner", "ctscan Test Website Root", fp, u("valid.test.example"), u("expired.test.example"),
             u("revoked.test.example"), root_pem],
            ["Test Owner", "ctscan Test Website Root", fp, u("wrong.test.example"), u("notexpired.test.example"),
             u("notrevoked.test.example"), root_pem],
            ["Test Owner", "ctscan Test Website Root", fp, u("valid2.test.example") + " " + u("gone.test.example"),
             "", "", root_pem],
            ["Someone Else", "Another Root", "AB" * 32, u("valid.test.example"), "", "", ""],
        ])
        out = tmp_path_factory.mktemp("out")
        frame = run_test_websites(ccadb, out, ca_owner="test owner", dns_server=dns.address, timeout=3, now=NOW,
                                  port_override=ports).frame
        yield frame, out, dns, a, fresh, expired
        for nodes in (a, b, c, d):
            nodes.stop()
        dns.stop()


def rows_for(frame: pd.DataFrame, host: str) -> pd.DataFrame:
    return frame[frame["host"] == host].set_index("address")


def test_each_address_of_a_load_balanced_valid_site_is_checked_and_the_stale_node_is_caught(world):
    frame, _, _, _, _, expired = world
    rows = rows_for(frame, "valid.test.example")
    assert sorted(rows.index) == ["127.0.0.2", "127.0.0.3"]
    assert rows.loc["127.0.0.2", "finding"] == ""
    assert rows.loc["127.0.0.3", "finding"] == "valid_site_expired_cert"
    assert rows.loc["127.0.0.3", "served_sha256"] == hashlib.sha256(der(expired[0][0])).hexdigest()
    assert rows.loc["127.0.0.3", "served_not_after"] < pd.Timestamp(NOW)


def test_every_row_says_ok_for_a_right_site_and_finding_for_a_wrong_one(world):
    frame = world[0].set_index(["host", "address"])
    assert frame.loc[("valid.test.example", "127.0.0.2"), "status"] == "ok"
    assert frame.loc[("valid.test.example", "127.0.0.3"), "status"] == "finding"
    # Other sites answered, so the DNS server's NXDOMAIN is the CA's missing test site, not our network.
    assert frame.loc[("gone.test.example", ""), "status"] == "finding"
    assert set(frame["status"]) == {"ok", "finding"}


def test_the_tls_handshake_sends_the_site_name_as_sni_to_every_node(world):
    _, _, _, a, _, _ = world
    assert ("127.0.0.2", "valid.test.example") in a.handshakes
    assert ("127.0.0.3", "valid.test.example") in a.handshakes


def test_all_dns_questions_go_to_the_given_server(world):
    _, _, dns, _, _, _ = world
    assert ("valid.test.example", "A") in dns.queries and ("valid.test.example", "AAAA") in dns.queries


def test_expired_and_revoked_sites_serving_what_they_should_have_no_finding(world):
    frame = world[0]
    assert rows_for(frame, "expired.test.example")["finding"].tolist() == [""]
    revoked = rows_for(frame, "revoked.test.example").iloc[0]
    assert revoked["finding"] == ""
    assert "ocsp=revoked" in revoked["served_status"] and "crl=revoked at" in revoked["served_status"]


@pytest.mark.parametrize("host,code", [
    ("wrong.test.example", "wrong_root"),
    ("notexpired.test.example", "expired_site_unexpired_cert"),
    ("notrevoked.test.example", "revoked_site_not_revoked"),
    ("valid2.test.example", "valid_site_revoked_cert"),
    ("gone.test.example", "unreachable"),
])
def test_sites_serving_the_wrong_thing_are_named(world, host, code):
    rows = rows_for(world[0], host)
    assert len(rows) == 1 and code in rows.iloc[0]["finding"].split(";")


def test_a_good_valid_site_says_what_ocsp_and_the_crl_said(world):
    row = rows_for(world[0], "valid.test.example").loc["127.0.0.2"]
    assert row["served_status"] == "ocsp=good; crl=not listed"
    assert row["chain"] == "ok"


def test_only_the_chosen_ca_owner_is_checked_and_both_files_are_written(world):
    frame, out, _, _, _, _ = world
    assert set(frame["ca_owner"]) == {"Test Owner"}
    written = pd.read_csv(out / "test-websites.csv", dtype=str, keep_default_na=False)
    for column in ("ca_owner", "url", "address", "expected", "served_sha256", "served_not_after", "served_status",
                   "status", "finding"):
        assert column in written.columns
    assert len(written) == len(frame) == 9  # 8 URLs, one of them on two addresses
    ws = openpyxl.load_workbook(out / "test-websites.xlsx").active
    assert ws.max_row == len(frame) + 1


def test_attacker_text_in_cells_is_not_a_formula(tmp_path):
    frame = pd.DataFrame([{"ca_owner": "=HYPERLINK(\"http://evil\")", "url": "https://x/", "finding": ""}])
    csv_path, xlsx_path = write_test_websites(frame, tmp_path)
    assert csv_path.read_text().splitlines()[1].startswith("\"'=HYPERLINK")
    assert openpyxl.load_workbook(xlsx_path).active["A2"].data_type == "s"


def test_ccadb_all_certificate_records_column_names_are_read(tmp_path):
    path = tmp_path / "all.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["CA Owner", "Certificate Name", "SHA-256 Fingerprint", "Test Website URL - Valid",
                    "Test Website URL - Expired", "Test Website URL - Revoked"])
        w.writerow(["Example CA", "Example Root", "AA" * 32, "https://good.example/", "expired.example:8443", ""])
    sites = read_test_sites(path, "Example CA")
    assert [(s.expected, s.url) for s in sites] == [("valid", "https://good.example/"),
                                                    ("expired", "https://expired.example:8443")]
    assert sites[0].root is None and sites[0].root_sha256 == "aa" * 32


def test_the_real_mozilla_report_lists_fnmts_valid_test_site_with_its_root(real_data):
    sites = read_test_sites(real_data / "ccadb" / "mozilla_IncludedCACertificateWithPEMReport.csv",
                            "Government of Spain, Fábrica Nacional de Moneda y Timbre (FNMT)")
    fnmt = [s for s in sites if "testactivetipo1.cert.fnmt.es" in s.url]
    assert fnmt and fnmt[0].expected == "valid"
    root_sha = hashlib.sha256(der(fnmt[0].root)).hexdigest()
    assert root_sha == fnmt[0].root_sha256


def test_a_chain_that_carries_the_root_is_accepted_by_fingerprint_alone():
    root = TestCA(name="ctscan Fingerprint Root")
    leaf = root.issue(serial=5, not_before=NOW - timedelta(days=1), dns=["x.example"])
    fp = hashlib.sha256(der(root.cert)).hexdigest()
    assert chain_to_root(leaf, [leaf, root.cert], fp, None)[0] == "ok"
    assert chain_to_root(leaf, [leaf], fp, None)[0] == "unverified"
    assert chain_to_root(leaf, [leaf], fp, TestCA(name="ctscan Fingerprint Root").cert)[0] == "wrong_root"
