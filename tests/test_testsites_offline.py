"""`ctscan test-websites` without a network, with a DNS server that never answers, and with an unknown CA owner.

Every case runs the command in-process twice with the same out folder: a rerun must write the same
rows (checked_at aside, which is the time of each run).
"""

from __future__ import annotations

import csv
import hashlib
import time
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from scanner.cli import main
from tests.loopback.registry_servers import DROP
from tests.loopback.tls_servers import AddressDns, SilentDns, TlsNodes
from tests.synth import TestCA, der, new_key, pem

NOW = datetime.now(timezone.utc).replace(microsecond=0)
HEADER = ["Owner", "Common Name or Certificate Name", "SHA-256 Fingerprint", "Test Website - Valid",
          "Test Website - Expired", "Test Website - Revoked", "PEM Info"]
OFFLINE = "no test website could be resolved or reached: the network looks unavailable; every row is unknown"


def write_report(path, rows):
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_ALL)
        w.writerow(HEADER)
        w.writerows(rows)
    return path


def twenty_sites(tmp_path):
    """A report of 7 roots with 20 test websites on 20 names, none of which can be looked up here."""
    rows = []
    for i in range(7):
        kinds = [f"https://site{i}-{k}.test.example/" for k in ("valid", "expired", "revoked")]
        rows.append(["Offline Owner", f"Root {i}", f"{i:02x}" * 32, *(kinds if i < 6 else kinds[:2] + [""]), ""])
    return write_report(tmp_path / "report.csv", rows)


def written_rows(out) -> str:
    """test-websites.csv without checked_at, for comparing two runs."""
    frame = pd.read_csv(out / "test-websites.csv", dtype=str, keep_default_na=False)
    return frame.drop(columns="checked_at").to_csv(index=False)


def run_twice(argv, out, capsys):
    """Run the command twice into the same folder: exit codes, stderr, seconds and written rows of each run."""
    codes, errs, seconds, rows = [], [], [], []
    for _ in range(2):
        started = time.monotonic()
        codes.append(main(argv))
        seconds.append(time.monotonic() - started)
        errs.append(capsys.readouterr().err)
        rows.append(written_rows(out) if (out / "test-websites.csv").exists() else None)
    assert rows[0] == rows[1]  # a rerun writes the same rows
    return codes, errs, seconds


def test_a_dns_server_that_never_answers_costs_one_timeout_in_parallel_and_every_row_is_unknown(tmp_path, capsys):
    report, out = twenty_sites(tmp_path), tmp_path / "out"
    with SilentDns() as dns:
        argv = ["test-websites", "--ccadb", str(report), "--dns-server", dns.address, "--timeout", "1",
                "--out", str(out)]
        codes, errs, seconds = run_twice(argv, out, capsys)
    assert codes == [3, 3]
    assert max(seconds) < 3.0  # 20 names, A and AAAA each: one 1 s timeout in parallel, not 40 one after another
    assert dns.questions >= 2 * 20
    frame = pd.read_csv(out / "test-websites.csv", dtype=str, keep_default_na=False)
    assert len(frame) == 20 and set(frame["status"]) == {"unknown"} and set(frame["finding"]) == {""}
    assert all("no answer within 1 s" in e for e in frame["evidence"])
    for err in errs:
        assert err.count(OFFLINE) == 1


def test_a_resolver_that_says_nxdomain_to_every_name_is_offline_not_twenty_findings(tmp_path, capsys):
    report, out = twenty_sites(tmp_path), tmp_path / "out"
    with AddressDns({}) as dns:  # what a sandbox resolver with no upstream says to every name
        argv = ["test-websites", "--ccadb", str(report), "--dns-server", dns.address, "--timeout", "2",
                "--out", str(out), "-q"]
        codes, errs, _ = run_twice(argv, out, capsys)
    assert codes == [3, 3]
    frame = pd.read_csv(out / "test-websites.csv", dtype=str, keep_default_na=False)
    assert set(frame["status"]) == {"unknown"} and set(frame["finding"]) == {""}
    assert "NXDOMAIN" in frame["evidence"].iloc[0]
    assert errs[0].splitlines()[0] == f"ctscan: {OFFLINE}"  # said even with -q: it is why the exit status is 3
    assert errs[0] == errs[1]


@pytest.fixture(scope="module")
def good_site():
    """A valid test website on 127.0.0.2 serving a fresh certificate of the report's root; (root, port)."""
    root = TestCA(name="ctscan Offline Test Root")
    key = new_key()
    leaf = root.issue(serial=7, not_before=NOW - timedelta(days=3), days=90, cn="good.test.example",
                      dns=["good.test.example"], key=key)
    with TlsNodes({"127.0.0.2": ([leaf, root.cert], key)}) as nodes:
        yield root, nodes.port


def mixed_report(tmp_path, root, port, *names):
    fp = hashlib.sha256(der(root.cert)).hexdigest().upper()
    root_pem = "'" + pem(root.cert).decode() + "'"
    rows = [["Mixed Owner", "ctscan Offline Test Root", fp, f"https://{name}:{port}/", "", "", root_pem]
            for name in names]
    return write_report(tmp_path / "report.csv", rows)


def test_a_reachable_site_is_ok_and_a_name_its_dns_server_says_does_not_exist_is_a_finding(tmp_path, capsys,
                                                                                            good_site):
    root, port = good_site
    report = mixed_report(tmp_path, root, port, "good.test.example", "missing.test.example")
    out = tmp_path / "out"
    with AddressDns({"good.test.example": ["127.0.0.2"]}) as dns:
        argv = ["test-websites", "--ccadb", str(report), "--ca-owner", "MIXED owner",  # any case matches
                "--dns-server", dns.address, "--timeout", "2", "--out", str(out)]
        codes, errs, _ = run_twice(argv, out, capsys)
    assert codes == [0, 0]
    frame = pd.read_csv(out / "test-websites.csv", dtype=str, keep_default_na=False).set_index("host")
    assert frame.loc["good.test.example", "status"] == "ok" and frame.loc["good.test.example", "chain"] == "ok"
    assert frame.loc["good.test.example", "address"] == "127.0.0.2"
    assert frame.loc["missing.test.example", "status"] == "finding"
    assert "does not exist (NXDOMAIN)" in frame.loc["missing.test.example", "evidence"]
    assert OFFLINE not in errs[0] and "1 ok, 1 with findings, 0 unknown" in errs[0]
    assert errs[0] == errs[1]


def test_a_name_whose_lookup_times_out_is_unknown_and_the_run_says_it_is_partial(tmp_path, capsys, good_site):
    root, port = good_site
    report = mixed_report(tmp_path, root, port, "good.test.example", "missing.test.example", "slow.test.example")
    out = tmp_path / "out"
    with AddressDns({"good.test.example": ["127.0.0.2"]}) as dns:
        dns.answers["slow.test.example"] = DROP
        argv = ["test-websites", "--ccadb", str(report), "--dns-server", dns.address, "--timeout", "1",
                "--out", str(out)]
        codes, errs, _ = run_twice(argv, out, capsys)
    assert codes == [3, 3]
    frame = pd.read_csv(out / "test-websites.csv", dtype=str, keep_default_na=False).set_index("host")
    assert frame["status"].to_dict() == {"good.test.example": "ok", "missing.test.example": "finding",
                                         "slow.test.example": "unknown"}
    assert frame.loc["slow.test.example", "finding"] == ""
    assert "ctscan: partial: 1 of 3 rows unknown (1 DNS timeout)" in errs[0] and OFFLINE not in errs[0]
    assert errs[0] == errs[1]


def test_the_progress_bar_is_on_stderr_with_progress_and_absent_with_quiet(tmp_path, capsys, good_site):
    root, port = good_site
    report = mixed_report(tmp_path, root, port, "good.test.example")
    with AddressDns({"good.test.example": ["127.0.0.2"]}) as dns:
        base = ["test-websites", "--ccadb", str(report), "--dns-server", dns.address, "--out", str(tmp_path / "o")]
        assert main(base + ["--progress", "--concurrency", "4"]) == 0
        shown = capsys.readouterr()
        assert main(base + ["--progress", "-q"]) == 0
        quiet = capsys.readouterr()
    assert "TLS" in shown.err and "1/1" in shown.err and shown.out == ""
    assert quiet.err == "" and quiet.out == ""


@pytest.mark.parametrize("asked,closest", [
    ("Fabrica Nacional de Moneda y Timbre", "Government of Spain, Fábrica Nacional de Moneda y Timbre (FNMT)"),
    ("Digicert Inc", "DigiCert"),
])
def test_a_ca_owner_not_in_the_report_is_a_usage_error_naming_the_closest_owners(tmp_path, capsys, real_data,
                                                                                  asked, closest):
    report = real_data / "ccadb" / "mozilla_IncludedCACertificateWithPEMReport.csv"
    out = tmp_path / "out"
    argv = ["test-websites", "--ccadb", str(report), "--ca-owner", asked, "--out", str(out)]
    codes, errs, _ = run_twice(argv, out, capsys)
    assert codes == [2, 2]
    line = errs[0].strip()
    assert len(errs[0].strip().splitlines()) == 1 and line.startswith("ctscan: error: --ca-owner")
    assert f'"{closest}"' in line.split("closest:", 1)[1]
    assert not out.exists()  # nothing was checked, so nothing is written
    assert errs[0] == errs[1]


@pytest.mark.parametrize("flag,value,why", [("--concurrency", "0", "more than 0"),
                                            ("--timeout", "-1", "more than 0"),
                                            ("--concurrency", "many", "not a number")])
def test_a_concurrency_or_timeout_that_is_not_positive_is_a_usage_error(tmp_path, capsys, flag, value, why):
    report = write_report(tmp_path / "report.csv", [])
    assert main(["test-websites", "--ccadb", str(report), "--out", str(tmp_path / "o"), flag, value]) == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: " in err and why in err
