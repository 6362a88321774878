"""The ctscan command in-process: exit codes, usage errors, and no network treated as a mode."""

from __future__ import annotations

import csv
import json
import socket

import pytest

from scanner.cli import main
from tests.conftest import SAMPLE


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_help_explains_every_scan_flag(capsys):
    assert main(["scan", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--source", "--crl", "--out", "--registration", "--rdap-bootstrap", "--rdap-rate", "--dns-server",
                 "--cache", "--offline", "--window", "--ca-id", "--ca-name", "--identity", "--org", "--crtsh-rate",
                 "--log-list", "--issuer-cert", "--check-revocation", "--ocsp-sample", "--quiet", "--verbose", "--engine",
                 "--plots"):
        assert flag in text, flag


@pytest.mark.parametrize("argv", [
    ["scan", str(SAMPLE / "certs")],  # no --out
    ["scan", str(SAMPLE / "certs"), "--out", "x", "--registration", "maybe"],
    ["scan", "/no/such/folder", "--out", "x"],
    ["scan", str(SAMPLE / "certs"), "--out", "x", "--window", "soon"],
    ["scan", "--source", "crtsh-sql", "--out", "x"],  # needs --ca-id or --ca-name
    ["scan", "--source", "ct", "--out", "x"],  # needs logs and the issuer
    ["scan", str(SAMPLE / "certs"), "--out", "x", "--registry-answers", "/no/such/answers.csv"],
    ["scan", str(SAMPLE / "certs"), "--out", "x", "--issuer-cert", "/no/such/ca.pem"],
])
def test_usage_errors_exit_2_with_a_message(argv, capsys, tmp_path):
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_a_failure_exits_1_with_one_clear_line(tmp_path, capsys):
    blocker = tmp_path / "out"
    blocker.write_text("a file where the report folder should go")
    code = main(["scan", str(SAMPLE / "certs"), "--registration", "off", "--cache", str(tmp_path / "c"),
                 "--out", str(blocker)])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ctscan: error:")


def test_unreachable_registries_are_unknown_never_unregistered_and_the_run_says_so(tmp_path, capsys):
    port = _closed_port()
    boot = tmp_path / "dns.json"
    boot.write_text(json.dumps({"version": "1.0", "publication": "2026-01-01T00:00:00Z",
                                "services": [[["net", "com"], [f"http://127.0.0.1:{port}/"]]]}))
    out = tmp_path / "report"
    code = main(["scan", str(SAMPLE / "certs"), "--crl", str(SAMPLE / "crl" / "sample-ca.crl"),
                 "--registration", "rdap", "--rdap-bootstrap", str(boot), "--retries", "1", "--timeout", "2",
                 "--cache", str(tmp_path / "cache"), "--out", str(out), "--no-progress"])
    assert code == 0
    err = capsys.readouterr().err
    assert err.lower().count("no network") == 1
    with open(out / "registrations.csv", newline="") as fh:
        statuses = {r["domain"]: r["status"] for r in csv.DictReader(fh)}
    assert statuses and set(statuses.values()) == {"unknown"}
    with open(out / "suspects.csv", newline="") as fh:
        signals = ";".join(r["signals"] for r in csv.DictReader(fh))
    assert "unregistered_domain" not in signals
    assert "revoke_reissue" in signals  # the checks that need no network still ran
    summary = json.loads((out / "summary.json").read_text())
    assert any("no network" in n.lower() for n in summary["notices"])


def test_a_certificate_with_no_well_defined_expiration_is_scanned_not_crashed_on(tmp_path, test_ca):
    """RFC 5280 4.1.2.5: notAfter 99991231235959Z; nanosecond timestamps end in 2262."""
    from datetime import datetime, timezone

    import openpyxl

    from scanner.pipeline import load_scan
    from tests.synth import pem, utc

    start = utc("2020-01-01T00:00")
    forever = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    days = (forever - start).days  # an IP in a dNSName, so the certificate is a suspect
    cert = test_ca.issue(serial=4242, not_before=start, days=days, dns=["10.9.9.9"])
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "forever.pem").write_bytes(pem(cert))
    out = tmp_path / "r"
    assert main(["scan", str(tmp_path / "certs"), "--registration", "off", "--no-cache", "--out", str(out),
                 "-q"]) == 0
    with open(out / "suspects.csv", newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert row["not_after"].startswith("9999-12-3")
    assert openpyxl.load_workbook(out / "suspects.xlsx")["All suspects"].max_row == 2
    assert load_scan(out).certs.iloc[0]["not_after"].year == 9999


def test_an_empty_source_says_so_and_still_writes_every_report(tmp_path, capsys):
    (tmp_path / "nothing").mkdir()
    out = tmp_path / "r"
    assert main(["scan", str(tmp_path / "nothing"), "--registration", "off", "--no-cache", "--out", str(out)]) == 0
    assert "No certificates were read" in capsys.readouterr().err
    assert (out / "suspects.xlsx").is_file() and (out / "appendix" / "incident-summary.md").is_file()
