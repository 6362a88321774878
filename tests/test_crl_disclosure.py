"""CCADB CRL disclosure (Policy 2.1 section 6.2): undisclosed distribution points, partitioned CRLs' IDPs, scope."""

from __future__ import annotations

import base64
import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from scanner.cli import main
from scanner.core.config import Config
from scanner.detect.crl_disclosure import detect_crl_disclosure
from scanner.enrich.revocation.ccadb import read_ccadb, scope_ccadb
from scanner.enrich.revocation.issuers import issuers_by_key_id, key_id_of
from scanner.parse.certs import parse_der
from scanner.pipeline import check_revocation, load_scan, run
from tests.loopback import ocsp_server as srv
from tests.synth import TestCA, der, pem

FIXTURES = Path(__file__).parent / "fixtures" / "ccadb"
HEADER = next(csv.reader((FIXTURES / "AllCertificateRecordsCSVFormatv4_header.csv").open(encoding="utf-8")))
NOW = datetime.now(timezone.utc).replace(microsecond=0)
OWNER = "ctscan Test Owner"


def ccadb_row(ca: TestCA, *, partitioned: list[str] | None = None, full: str = "", status: str = "Not Revoked",
              valid_to: str = "2045.01.01", name: str | None = None) -> dict[str, str]:
    """A CCADB AllCertificateRecords v4 row for ca, its key id in base64 as CCADB writes it."""
    return {"CA Owner": OWNER, "Certificate Name": name or ca.name, "Certificate Record Type": "Intermediate Certificate",
            "SHA-256 Fingerprint": ca.cert.fingerprint(hashes.SHA256()).hex().upper(),
            "Subject Key Identifier": base64.b64encode(bytes.fromhex(key_id_of(ca.cert))).decode(),
            "Revocation Status": status, "Valid To (GMT)": valid_to, "Full CRL Issued By This CA": full,
            "JSON Array of Partitioned CRLs": json.dumps(partitioned) if partitioned is not None else ""}


def write_ccadb(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=HEADER, quoting=csv.QUOTE_ALL, restval="")
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A CA with partitioned CRLs on loopback (good, wrong, missing and non-critical IDPs), its certificates, CCADB."""
    tmp = tmp_path_factory.mktemp("disclosure")
    ca, other, namesake = TestCA(name="ctscan Disclosure CA"), TestCA(name="ctscan Other CA"), \
        TestCA(name="ctscan Disclosure CA")
    with srv.OcspServer(ca.cert, ca.key) as server:
        url = server.file_url
        fresh = NOW - timedelta(hours=3)
        server.files.update({
            "/p1.crl": der(ca.crl([], this_update=fresh, idp=url("/p1.crl"))),
            "/p2.crl": der(ca.crl([], this_update=fresh, idp=url("/p9.crl"))),  # names another partition
            "/p3.crl": der(ca.crl([], this_update=fresh)),  # no IDP at all
            "/p4.crl": der(ca.crl([], this_update=fresh, idp=url("/p4.crl"), idp_critical=False)),
            "/p6.crl": der(ca.crl([], this_update=NOW - timedelta(days=9), next_update=NOW - timedelta(days=2),
                                  idp=url("/p6.crl"))),  # past its nextUpdate
            "/p7.crl": der(ca.crl([], this_update=fresh, idp=url("/p7.crl"))),
            "/other.crl": der(other.crl([], this_update=fresh)),
            "/namesake.crl": der(namesake.crl([], this_update=fresh)),
        })  # /p5.crl is disclosed but not served
        certs = tmp / "certs"
        certs.mkdir()
        for serial, path, age in ((1, "/p1.crl", 30), (2, "/p2.crl", 30), (3, "/p3.crl", 30), (4, "/p4.crl", 30),
                                  (6, "/p6.crl", 30), (7, "/p7.crl", 30), (8, "/p8.crl", 2)):
            cert = ca.issue(serial=serial, not_before=NOW - timedelta(days=age), days=90,
                            dns=[f"s{serial}.example.com"], crl_url=url(path))
            (certs / f"{serial}.pem").write_bytes(pem(cert))
        issuer = tmp / "ca.pem"
        issuer.write_bytes(pem(ca.cert))
        ccadb = write_ccadb(tmp / "AllCertificateRecordsCSVFormatv4.csv", [
            ccadb_row(ca, partitioned=[url(f"/p{i}.crl") for i in (1, 2, 3, 4, 5, 6)]),  # p7 and p8 not disclosed
            ccadb_row(other, partitioned=[url("/other.crl")]),
            ccadb_row(namesake, full=url("/namesake.crl")),  # same name, another key: not the CA under audit
        ])
        yield {"ca": ca, "server": server, "certs": certs, "issuer": issuer, "ccadb": ccadb, "tmp": tmp, "url": url}


def scan(world, out: str, *extra: str) -> tuple[int, Path]:
    path = world["tmp"] / out
    code = main(["scan", str(world["certs"]), "--ccadb", str(world["ccadb"]), "--registration", "off",
                 "--cache", str(world["tmp"] / f"cache-{extra[0] if extra else 'offline'}"), "--out", str(path),
                 "-q", "--no-progress", *extra])
    return code, path


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def findings_by_san(out: Path, code: str) -> dict[str, list[dict]]:
    result = load_scan(out)
    sans = dict(zip(result.certs["sha256"], result.certs["san_dns"].map(lambda v: v[0])))
    got: dict[str, list[dict]] = {}
    for f in result.findings[result.findings["code"] == code].to_dict("records"):
        got.setdefault(sans[f["sha256"]], []).append(f)
    return got


def test_a_distribution_point_the_ccadb_json_array_omits_is_a_finding_offline_on_each_certificate(world):
    code, out = scan(world, "offline")
    assert code == 0
    found = findings_by_san(out, "crldp_not_disclosed")
    assert set(found) == {"s7.example.com"}  # p8 is 2 days old: within the 7 days the policy allows
    f = found["s7.example.com"][0]
    assert f["name"] == world["url"]("/p7.crl")
    assert world["url"]("/p7.crl") in f["evidence"] and "ctscan Disclosure CA" in f["evidence"]
    assert json.loads(f["detail"])["ccadb_records"] == ["ctscan Disclosure CA"]
    table = {r["url"]: r for r in rows(out / "crl-disclosure.csv")}
    assert table[world["url"]("/p7.crl")]["disclosure"] == "not_disclosed"
    assert table[world["url"]("/p8.crl")]["disclosure"] == "not_disclosed_within_deadline"
    assert table[world["url"]("/p1.crl")]["disclosure"] == "disclosed"
    assert table[world["url"]("/p1.crl")]["disclosed_as"] == "partitioned"
    assert {r["fetch_status"] for r in table.values()} == {"not fetched"}  # no --check-revocation: nothing asked
    assert world["url"]("/other.crl") not in table and world["url"]("/namesake.crl") not in table
    summary = json.loads((out / "summary.json").read_text())
    assert any("1 of 3 records" in n for n in summary["notices"])
    signals = {r["sans"]: r["signals"] for r in rows(out / "suspects.csv")}
    assert "crldp_not_disclosed" in signals["s7.example.com"]

    again_code, again = scan(world, "offline-again")  # the same cache: the same answer
    assert again_code == 0
    assert (again / "crl-disclosure.csv").read_bytes() == (out / "crl-disclosure.csv").read_bytes()


def test_partitioned_crls_with_a_wrong_a_missing_and_a_non_critical_idp_are_findings(world):
    args = ("--check-revocation", "--issuer-cert", str(world["issuer"]), "--timeout", "3", "--retries", "0")
    code, out = scan(world, "checked", *args)
    assert code == 0
    found = findings_by_san(out, "crl_idp_mismatch")
    assert set(found) == {"s2.example.com", "s3.example.com", "s4.example.com"}  # p1's IDP is right
    assert world["url"]("/p9.crl") in found["s2.example.com"][0]["evidence"]  # names the URL it does give
    assert "no Issuing Distribution Point" in found["s3.example.com"][0]["evidence"]
    assert "not critical" in found["s4.example.com"][0]["evidence"]
    assert set(findings_by_san(out, "crldp_not_disclosed")) == {"s7.example.com"}

    table = {r["url"]: r for r in rows(out / "crl-disclosure.csv")}
    checks = {p: table[world["url"](p)]["idp_check"] for p in ("/p1.crl", "/p2.crl", "/p3.crl", "/p4.crl")}
    assert checks == {"/p1.crl": "ok", "/p2.crl": "other_url", "/p3.crl": "missing", "/p4.crl": "not_critical"}
    p6 = table[world["url"]("/p6.crl")]  # disclosed and stale: the row says so, its certificate has crl_stale
    assert (p6["fetch_status"], p6["idp_check"], p6["certificates"]) == ("stale", "ok", "1")
    assert set(findings_by_san(out, "crl_stale")) == {"s6.example.com"}
    p5 = table[world["url"]("/p5.crl")]  # disclosed, no certificate points at it, and not served
    assert (p5["fetch_status"], p5["certificates"]) == ("unreachable", "0")
    fetched = {r["url"] for r in rows(out / "crls.csv")}
    assert world["url"]("/p5.crl") in fetched
    assert world["url"]("/other.crl") not in fetched and world["url"]("/namesake.crl") not in fetched  # scoped
    notices = json.loads((out / "summary.json").read_text())["notices"]
    assert any("no scanned certificate points at" in n and "1 unreachable" in n for n in notices)

    again_code, again = scan(world, "checked-again", *args)
    assert again_code == 0
    assert (again / "crl-disclosure.csv").read_bytes() == (out / "crl-disclosure.csv").read_bytes()
    before, after = load_scan(out).findings, load_scan(again).findings
    assert sorted(zip(before["sha256"], before["code"], before["name"])) == \
        sorted(zip(after["sha256"], after["code"], after["name"]))


def test_offline_the_idp_is_unknown_not_a_finding_and_disclosure_is_still_checked(world):
    code, out = scan(world, "offline-checked", "--offline", "--check-revocation", "--issuer-cert", str(world["issuer"]))
    assert code == 0
    assert not findings_by_san(out, "crl_idp_mismatch")
    assert set(findings_by_san(out, "crldp_not_disclosed")) == {"s7.example.com"}
    assert {r["idp_check"] for r in rows(out / "crl-disclosure.csv")} == {""}


def test_the_real_v4_layout_is_read_key_ids_from_base64_and_revoked_or_unused_records_owe_nothing(tmp_path):
    ca = TestCA(name="ctscan Layout CA")
    path = write_ccadb(tmp_path / "v4.csv", [
        ccadb_row(ca, partitioned=["http://crl.example/a.crl"], full="http://crl.example/full.crl"),
        ccadb_row(ca, partitioned=[""], name="ctscan Layout CA (not issuing yet)"),
        ccadb_row(ca, partitioned=["http://crl.example/a.crl"], status="Revoked", name="revoked twin"),
        ccadb_row(ca, partitioned=None, full="", name="broken") | {"JSON Array of Partitioned CRLs": "[http://x"},
        ccadb_row(ca, name="unquoted") | {"JSON Array of Partitioned CRLs": "[http://a.example/1.crl,\n"
                                                                           " http://a.example/2.crl,]"},
    ])
    got = read_ccadb(path)
    first, empty, revoked, broken, unquoted = got.records
    assert unquoted.partitioned_crls == ("http://a.example/1.crl", "http://a.example/2.crl")  # as Mozilla wrote them
    assert first.subject_key_id == key_id_of(ca.cert)
    assert first.urls == ("http://crl.example/full.crl", "http://crl.example/a.crl")
    assert empty.urls == () and broken.urls == ()
    assert len(got.errors) == 1 and "broken" in got.errors[0]["error"] and "v4.csv:5" in got.errors[0]["provenance"]
    assert not revoked.requires_disclosure(NOW) and first.requires_disclosure(NOW)
    assert not got.all_full_urls  # v4 shows the first full CRL URL only, and the evidence says so


def test_a_revocation_brings_the_deadline_to_four_hours(tmp_path):
    ca = TestCA(name="ctscan Deadline CA")
    undisclosed = "http://crl.example/new.crl"
    row = parse_der(der(ca.issue(serial=9, not_before=NOW - timedelta(days=2), days=90, dns=["d.example.com"],
                                 crl_url=undisclosed)), source="files", provenance="9")
    path = write_ccadb(tmp_path / "v4.csv", [ccadb_row(ca, partitioned=["http://crl.example/old.crl"])])
    for revoked_hours_ago, expected in ((None, 0), (3, 0), (5, 1)):
        certs = pd.DataFrame([{**row, "revoked_at": None if revoked_hours_ago is None
                               else pd.Timestamp(NOW - timedelta(hours=revoked_hours_ago))}])
        result = detect_crl_disclosure(certs, scope_ccadb(read_ccadb(path), certs), None, NOW)
        assert len(result.findings) == expected, revoked_hours_ago
        if expected:
            deadline = json.loads(result.findings.iloc[0]["detail"])["deadline"]
            assert deadline == (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")  # revoked + 4 h


def test_a_notebook_passing_the_ccadb_path_to_check_revocation_fetches_only_the_audited_cas_crls(world):
    frames = [parse_der(der(world["ca"].issue(serial=1, not_before=NOW - timedelta(days=30), days=90,
                                              dns=["n.example.com"], crl_url=world["url"]("/p1.crl"))),
                        source="files", provenance="1")]
    config = Config(out_dir=world["tmp"] / "unused", check_revocation=True, timeout=3, retries=0, ocsp_rate=0)
    result = check_revocation(pd.DataFrame(frames), config, issuers=issuers_by_key_id([world["ca"].cert]),
                              ccadb=world["ccadb"], backoff_base=0.01)
    fetched = set(result.crls["url"])
    assert fetched == {world["url"](f"/p{i}.crl") for i in (1, 2, 3, 4, 5, 6)}  # the other two CAs' CRLs are not asked
    idp = {u: (c, n) for u, c, n in zip(result.crls["url"], result.crls["idp_critical"], result.crls["idp_urls"])}
    assert idp[world["url"]("/p4.crl")] == (False, world["url"]("/p4.crl"))  # the crls.csv columns of the IDP


def test_mozillas_report_identifies_cas_by_their_pem_and_the_real_isrg_x2_crl_of_e8_is_disclosed():
    # Two real rows of Mozilla's MozillaAllUnexpiredPEMs report: ISRG Root X2 (full CRL http://x2.c.lencr.org/)
    # and Let's Encrypt E8, whose own CRL columns are empty in this copy.
    report = read_ccadb(FIXTURES / "MozillaAllUnexpiredPEMs_2rows.csv")
    root, e8 = report.records
    assert (root.name, root.full_crls, e8.name, e8.revocation_status) == \
        ("ISRG Root X2", ("http://x2.c.lencr.org/",), "E8", "Not Revoked")
    assert root.subject_key_id == "7c4296aede4b483bfa92f89e8ccf6d8ba9723795"  # read from the PEM
    when = datetime(2026, 6, 1, tzinfo=timezone.utc)  # E8 is valid until 2027-03-12
    with (FIXTURES / "MozillaAllUnexpiredPEMs_2rows.csv").open(newline="") as fh:
        e8_pem = list(csv.DictReader(fh))[1]["X.509_Certificate_PEM"]
    e8_der = der(x509.load_pem_x509_certificate(e8_pem.encode()))
    e8_cert = parse_der(e8_der, source="files", provenance="E8")  # a certificate ISRG Root X2 issued
    leaf = {**e8_cert, "sha256": "ab" * 32, "issuer_dn": "CN=E8,O=Let's Encrypt,C=US",  # one E8 issued
            "issuer_key_id": "8f0d13a2f62e7ed1506c3318385d598e237291ca",
            "crl_distribution_points": ["http://e8.c.lencr.org/42.crl"]}
    certs = pd.DataFrame([e8_cert, leaf])
    result = detect_crl_disclosure(certs, scope_ccadb(report, certs), None, when)
    table = {r["url"]: r for r in result.table.to_dict("records")}
    assert table["http://x2.c.lencr.org/"]["disclosure"] == "disclosed"
    assert table["http://x2.c.lencr.org/"]["ccadb_records"] == "ISRG Root X2"
    assert table["http://e8.c.lencr.org/42.crl"]["disclosure"] == "not_disclosed"
    assert list(result.findings["sha256"]) == ["ab" * 32]
    assert "first full CRL URL" not in result.findings.iloc[0]["evidence"]  # E8's record lists no full CRL


def test_a_watch_round_takes_the_disclosure_afresh_when_the_ccadb_file_changed(tmp_path):
    ca = TestCA(name="ctscan Rounds CA")
    certs = tmp_path / "certs"
    certs.mkdir()
    for serial, name in ((1, "p1"), (7, "p7")):
        cert = ca.issue(serial=serial, not_before=NOW - timedelta(days=30), days=90, dns=[f"{name}.example.com"],
                        crl_url=f"http://crl.example/{name}.crl")
        (certs / f"{name}.pem").write_bytes(pem(cert))
    ccadb = tmp_path / "ccadb.csv"

    def scan(name: str, previous: str | None, disclosed: list[str]):
        write_ccadb(ccadb, [ccadb_row(ca, partitioned=[f"http://crl.example/{p}.crl" for p in disclosed])])
        config = Config(out_dir=tmp_path / name, source="files", paths=(certs,), ccadb=ccadb, registration="off",
                        cache_dir=tmp_path / "cache", workers=1, progress=False, quiet=True)
        result = run(config, previous=tmp_path / previous if previous else None, rounds=True)
        return set(result.findings.loc[result.findings["code"] == "crldp_not_disclosed", "name"]), result

    first, _ = scan("r1", None, ["p1"])
    assert first == {"http://crl.example/p7.crl"}
    same, second = scan("r2", "r1", ["p1"])  # nothing new: the previous answer, still the finding
    assert same == first and any(n.startswith("Nothing new") for n in second.summary["notices"])
    fixed, third = scan("r3", "r2", ["p1", "p7"])  # the CA disclosed p7 since: the finding is gone
    assert fixed == set()
    assert not any(n.startswith("Nothing new") for n in third.summary["notices"])
    rows_ = {r["url"]: r["disclosure"] for r in csv.DictReader((tmp_path / "r3" / "crl-disclosure.csv").open())}
    assert rows_["http://crl.example/p7.crl"] == "disclosed"


def test_the_included_roots_report_has_no_crl_columns_so_the_scan_is_partial_not_full_of_false_findings(world):
    # the real Mozilla report test-websites reads: passing it to scan --ccadb must not call every URL undisclosed
    code = main(["scan", str(world["certs"]), "--ccadb", str(FIXTURES / "mozilla_IncludedCACertificateWithPEMReport.csv"),
                 "--registration", "off", "--cache", str(world["tmp"] / "cache-roots"),
                 "--out", str(world["tmp"] / "roots"), "-q", "--no-progress"])
    assert code == 3
    summary = json.loads((world["tmp"] / "roots" / "summary.json").read_text())
    assert any("JSON Array of Partitioned CRLs" in r and "not checked" in r for r in summary["partial_reasons"])
    assert "crldp_not_disclosed" not in summary["findings"]
    assert not (world["tmp"] / "roots" / "crl-disclosure.csv").exists()
