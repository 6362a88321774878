"""ctscan scan through the CLI with the network sources and checks: CT logs, OCSP/CRL, test websites."""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509

from scanner.cli import main
from scanner.sources.base import RawCert
from scanner.sources.ct.issuers import spki_sha256
from scanner.sources.files import read_files
from tests.conftest import SAMPLE
from tests.loopback import ocsp_server as srv
from tests.loopback.ct_server import (
    CTServer,
    LogEntrySpec,
    LogKey,
    RFC6962Log,
    log_list,
    mth,
    rfc6962_log_entries,
)
from tests.synth import TestCA, der, pem, utc

COMPARED = ["sha256", "serial", "subject_o", "subject_cn", "sans", "not_before", "not_after", "revoked_at",
            "signals", "score", "evidence"]


def _suspects(out: Path, columns=COMPARED) -> list[dict[str, str]]:
    with open(out / "suspects.csv", newline="", encoding="utf-8") as fh:
        return [{c: r[c] for c in columns} for r in csv.DictReader(fh)]


def _offline_sample_args(tmp: Path, name: str) -> list[str]:
    return ["--crl", str(SAMPLE / "crl" / "sample-ca.crl"), "--registry-answers", str(SAMPLE / "registrations.csv"),
            "--cache", str(tmp / f"cache-{name}"), "--out", str(tmp / name), "-q", "--no-progress"]


def test_a_ct_log_holding_the_sample_among_another_cas_entries_gives_the_files_suspects(tmp_path):
    sample_ca = x509.load_pem_x509_certificate((SAMPLE / "sample-ca.pem").read_bytes())
    ca_chain, ca_hash = (der(sample_ca),), spki_sha256(sample_ca)
    other = TestCA(name="Another CA")
    specs = []
    for n, item in enumerate(i for i in read_files([SAMPLE / "certs"]) if isinstance(i, RawCert)):
        if item.provenance.endswith("truncated.der"):
            continue
        cert = x509.load_der_x509_certificate(item.der)
        is_pre = any(e.oid.dotted_string == "1.3.6.1.4.1.11129.2.4.3" for e in cert.extensions)
        specs.append(LogEntrySpec(item.der, ca_chain, is_pre, ca_hash if is_pre else b"", 1_600_000_000_000 + n))
        noise = other.issue(serial=900 + n, not_before=utc("2020-01-01T00:00"), dns=[f"n{n}.example.com"])
        specs.append(LogEntrySpec(der(noise), (der(other.cert),), False, b"", 1_600_000_000_000 + n))
    key = LogKey()
    entries, hashes = rfc6962_log_entries(specs)
    issuer = tmp_path / "sample-ca.pem"
    issuer.write_bytes(pem(sample_ca))
    with CTServer(RFC6962Log(entries, key.sth(len(entries), mth(hashes)), max_batch=5)) as log:
        lists = tmp_path / "log_list.json"
        lists.write_text(json.dumps(log_list([key.log_json("Loopback Test Log", url=log.url)])))
        args = ["scan", "--source", "ct", "--log-list", str(lists), "--log", "Loopback Test Log",
                "--issuer-cert", str(issuer), *_offline_sample_args(tmp_path, "ct")]
        assert main(args) == 0
        asked = len(log.requests)
        # The second run with the same cache and store: nothing new to fetch, the same reports.
        assert main([*args[:-4], "--out", str(tmp_path / "ct-again"), "-q", "--no-progress"]) == 0
        assert not [r for r in log.requests[asked:] if "get-entries" in r]
    store_args = ["scan", "--source", "store", "--offline", *_offline_sample_args(tmp_path, "ct")[:-4],
                  "--out", str(tmp_path / "store"), "-q", "--no-progress"]
    assert main(store_args) == 0
    assert main(["scan", str(SAMPLE / "certs"), *_offline_sample_args(tmp_path, "files")]) == 0
    assert _suspects(tmp_path / "ct") == _suspects(tmp_path / "files")
    assert _suspects(tmp_path / "ct-again") == _suspects(tmp_path / "ct")
    assert _suspects(tmp_path / "store") == _suspects(tmp_path / "ct")
    for name in ("ct", "ct-again"):
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["certificates"] == 12 and summary["errors"] == 0 and not summary["partial"]


def test_a_log_whose_tree_head_does_not_verify_makes_the_scan_partial_exit_3(tmp_path, capsys):
    key, impostor = LogKey(), LogKey()
    sample_ca = x509.load_pem_x509_certificate((SAMPLE / "sample-ca.pem").read_bytes())
    item = next(i for i in read_files([SAMPLE / "certs" / "fabrikam.pem"]) if isinstance(i, RawCert))
    entries, hashes = rfc6962_log_entries([LogEntrySpec(item.der, (der(sample_ca),), False, b"", 1_600_000_000_000)])
    issuer = tmp_path / "sample-ca.pem"
    issuer.write_bytes(pem(sample_ca))
    with CTServer(RFC6962Log(entries, impostor.sth(len(entries), mth(hashes)))) as log:
        lists = tmp_path / "log_list.json"
        lists.write_text(json.dumps(log_list([key.log_json("Impostor Log", url=log.url)])))
        args = ["scan", "--source", "ct", "--log-list", str(lists), "--log", "Impostor Log",
                "--issuer-cert", str(issuer), "--registration", "off", "--cache", str(tmp_path / "cache"),
                "--out", str(tmp_path / "out"), "-q"]
        codes = [main(args), main(args)]
    assert codes == [3, 3]
    err = capsys.readouterr().err
    assert "partial" in err and "Impostor Log" in err and "Traceback" not in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["partial"] and any("Impostor Log" in r for r in summary["partial_reasons"])
    assert summary["certificates"] == 0


NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture()
def revocation_world(tmp_path):
    ca = TestCA(name="ctscan CLI Revocation CA")
    behaviour = {1: srv.Answer(srv.GOOD), 2: srv.Answer(srv.GOOD), 3: srv.Answer(srv.UNAUTHORIZED)}
    crl = ca.crl([(2, NOW - timedelta(days=2), x509.ReasonFlags.key_compromise)], this_update=NOW - timedelta(hours=6))
    with srv.OcspServer(ca.cert, ca.key, behaviour, files={"/ca.crl": der(crl), "/ca.der": der(ca.cert)}) as server:
        certs = tmp_path / "certs"
        certs.mkdir()
        for serial in (1, 2, 3):
            # 90 days: within the validity limit of the day (SC-081), so only revocation can make them suspects
            c = ca.issue(serial=serial, not_before=NOW - timedelta(days=30), days=90, dns=[f"s{serial}.example.com"],
                         ocsp_url=server.url, crl_url=server.file_url("/ca.crl"),
                         ca_issuers_url=server.file_url("/ca.der"))
            (certs / f"{serial}.pem").write_bytes(pem(c))
        issuer = tmp_path / "ca.pem"
        issuer.write_bytes(pem(ca.cert))
        yield certs, issuer


@pytest.mark.parametrize("issuer_from", ["--issuer-cert", "caIssuers"])
def test_check_revocation_puts_ocsp_disagreements_into_the_suspects_and_writes_the_responder_table(
        tmp_path, revocation_world, issuer_from):
    certs, issuer = revocation_world
    out = tmp_path / "r"
    given = ["--issuer-cert", str(issuer)] if issuer_from == "--issuer-cert" else []  # else fetched via AIA
    code = main(["scan", str(certs), "--check-revocation", *given, "--ocsp-rate", "0",
                 "--registration", "off", "--cache", str(tmp_path / "c"), "--out", str(out), "-q", "--no-progress"])
    assert code == 0
    signals = {r["sans"]: set(r["signals"].split(";")) for r in _suspects(out, ["sans", "signals"])}
    assert "ocsp_good_but_revoked" in signals["s2.example.com"]  # the CRL says revoked, OCSP says good
    assert "ocsp_unauthorized" in signals["s3.example.com"]
    assert "s1.example.com" not in signals
    with open(out / "ocsp-responders.csv", newline="") as fh:
        responders = list(csv.DictReader(fh))
    assert len(responders) == 1 and int(responders[0]["requests"]) >= 3
    assert (out / "crls.csv").is_file()
    assert (out / "appendix" / "ocsp_good_but_revoked.csv").is_file()


def test_test_websites_command_checks_every_address_of_the_ccadb_file(tmp_path):
    # the CCADB file names a site on a port where nothing listens: the run completes and says unreachable
    ccadb = tmp_path / "ccadb.csv"
    with open(ccadb, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["CA Owner", "Certificate Name", "SHA-256 Fingerprint", "Test Website - Valid",
                    "Test Website - Expired", "Test Website - Revoked", "PEM Info"])
        w.writerow(["Test Owner", "Test Root", hashlib.sha256(b"x").hexdigest().upper(),
                    "https://127.0.0.1:9/", "", "", ""])
    code = main(["test-websites", "--ccadb", str(ccadb), "--timeout", "2", "--out", str(tmp_path / "t"), "-q"])
    assert code == 0
    with open(tmp_path / "t" / "test-websites.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["address"], r["expected"], r["finding"]) for r in rows] == [("127.0.0.1", "valid", "unreachable")]
    assert (tmp_path / "t" / "test-websites.xlsx").is_file()
