"""`ctscan diff` between two scans of the sample, and the rates (baselines) every scan writes."""

from __future__ import annotations

import csv
import json
import shutil
from datetime import timedelta
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from scanner.cli import main
from scanner.control.diff import DIFF_KINDS, diff_scans
from scanner.core.records import FINDING_COLUMNS, Finding, frame_from_rows
from scanner.detect.rates import rates_table
from scanner.pipeline import load_scan
from tests.conftest import SAMPLE
from tests.issued import issued
from tests.synth import TestCA, der, pem, utc

#: The sample's own CA key was thrown away, so the certificates added between the scans come from a fresh CA.
LOST = ("shop.lost-example.com",)  # unregistered at the old scan, revoked 10 h after notBefore before the new one
GONE = ("www.gone-example.com",)  # unregistered at the old scan, registered (since 2010) at the new one
TYPO = ("shop.lost-exmple.com",)  # the typo certificate issued between the scans
REGISTRY_HEADER = "domain,status,method,server,detail,checked_at,registered_at,attempts\n"


def _answers(path: Path, gone_status: str) -> Path:
    registered_at = "2010-01-01T00:00:00Z" if gone_status == "registered" else ""
    lines = [REGISTRY_HEADER,
             "lost-example.com,unregistered,rdap,https://rdap.example/,HTTP 404 Not Found,2020-09-01T00:00:00Z,,1\n",
             f"gone-example.com,{gone_status},rdap,https://rdap.example/,HTTP {200 if registered_at else 404},"
             f"2020-09-01T00:00:00Z,{registered_at},1\n"]
    path.write_text((SAMPLE / "registrations.csv").read_text() + "".join(lines[1:]))
    return path


def _scan(folder: Path, certs: Path, crls: list[Path], answers: Path) -> int:
    args = ["scan", str(SAMPLE / "certs"), str(certs), "--registry-answers", str(answers), "--offline",
            "--cache", str(folder / "cache"), "--out", str(folder / "report"), "-q"]
    for crl in [SAMPLE / "crl" / "sample-ca.crl", *crls]:
        args += ["--crl", str(crl)]
    return main(args)


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> dict[str, Path]:
    """Two scans of the sample: between them a certificate was revoked, a typo certificate added, a domain registered."""
    root = tmp_path_factory.mktemp("diff")
    ca = TestCA(name="ctscan Diff Test CA")
    lost = ca.issue(serial=0x1001, not_before=utc("2020-08-03T09:00"), org="Lost Example SL", cn=LOST[0], dns=LOST)
    gone = ca.issue(serial=0x1002, not_before=utc("2020-08-04T09:00"), org="Gone Example SL", cn=GONE[0], dns=GONE)
    typo = ca.issue(serial=0x1003, not_before=utc("2020-09-20T09:00"), org="Lost Example SL", cn=TYPO[0], dns=TYPO)
    before, after = root / "certs-before", root / "certs-after"
    for folder, certs in ((before, (lost, gone)), (after, (lost, gone, typo))):
        folder.mkdir()
        for cert in certs:
            (folder / f"{cert.serial_number:x}.pem").write_bytes(pem(cert))
    crl = root / "diff-ca.crl"
    crl.write_bytes(der(ca.crl([(0x1001, utc("2020-08-03T19:00"), None)], this_update=utc("2020-10-01T00:00"))))
    assert _scan(root / "old", before, [], _answers(root / "old-answers.csv", "unregistered")) == 0
    assert _scan(root / "new", after, [crl], _answers(root / "new-answers.csv", "registered")) == 0
    diff = root / "diff"
    assert main(["diff", str(root / "old" / "report"), str(root / "new" / "report"), "--out", str(diff), "-q"]) == 0
    return {"old": root / "old" / "report", "new": root / "new" / "report", "diff": diff, "root": root}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _sha(report: Path, cn: str) -> str:
    certs = load_scan(report).certs
    return str(certs.loc[certs["subject_cn"] == cn, "sha256"].iloc[0])


def _changes(diff: Path, kind: str) -> list[dict[str, str]]:
    return [r for r in _rows(diff / "diff.csv") if r["kind"] == kind]


def test_the_typo_certificate_added_between_the_scans_is_new_a_new_suspect_and_a_new_signal(scans):
    typo = _sha(scans["new"], TYPO[0])
    assert [r["sha256"] for r in _changes(scans["diff"], "new_certificate")] == [typo]
    assert typo in {r["sha256"] for r in _changes(scans["diff"], "new_suspect")}
    added = {(r["sha256"], r["code"]) for r in _changes(scans["diff"], "signal_added")}
    assert (typo, "typo_neighbour") in added
    row = next(r for r in _changes(scans["diff"], "signal_added") if r["sha256"] == typo)
    assert row["crtsh_url"] == "https://crt.sh/?sha256=" + typo.upper()
    assert row["subject"] == "Lost Example SL"


def test_the_revoked_certificate_is_a_new_revocation_with_its_latency_and_no_longer_suspect(scans):
    lost = _sha(scans["new"], LOST[0])
    revocations = _changes(scans["diff"], "new_revocation")
    assert [(r["sha256"], r["new_value"], float(r["latency_hours"])) for r in revocations] == [
        (lost, "2020-08-03T19:00:00Z", 10.0)]
    assert "10.0 h after notBefore" in revocations[0]["reason"]
    gone = {r["sha256"]: r["reason"] for r in _changes(scans["diff"], "no_longer_suspect")}
    assert gone[lost] == "revoked since: 2020-08-03T19:00:00Z"
    assert (lost, "early_revocation") in {(r["sha256"], r["code"]) for r in _changes(scans["diff"], "signal_added")}


def test_a_domain_registered_since_removes_its_signal_and_its_suspect(scans):
    gone = _sha(scans["new"], GONE[0])
    removed = [r for r in _changes(scans["diff"], "signal_removed") if r["sha256"] == gone]
    assert [(r["code"], r["reason"]) for r in removed] == [("unregistered_domain", "no longer found")]
    assert {r["sha256"]: r["reason"] for r in _changes(scans["diff"], "no_longer_suspect")}[gone] == (
        "signal gone: unregistered_domain no longer found")


def test_nothing_else_changed_for_the_sample_certificates(scans):
    ours = {_sha(scans["new"], cn) for cn in (LOST[0], GONE[0], TYPO[0])}
    others = [r for r in _rows(scans["diff"] / "diff.csv") if r["sha256"] not in ours]
    assert others == []


def test_diff_md_reads_as_an_incident_update_with_both_scan_dates_and_the_rates(scans):
    text = (scans["diff"] / "diff.md").read_text()
    old, new = (json.loads((scans[s] / "summary.json").read_text())["report_as_of"] for s in ("old", "new"))
    assert text.startswith(f"# Changes since {old[:10]}\n")
    assert old in text and new in text
    assert f"- since {old[:10]}: 1 new certificate with `typo_neighbour`." in text
    assert "- 1 certificate no longer with `unregistered_domain`." in text
    assert "- 2 suspects no longer suspect (1 revoked since, 1 signal gone)." in text
    assert "- 1 certificate new to the selection, 1 new suspect." in text
    assert "- 1 revocation new since the old scan, median latency 10.0 h, 1 within 7.0 days of notBefore." in text
    assert "| revoked | 4 | 5 |" in text
    assert "| issued | 14 | 15 |" in text


def test_diff_xlsx_has_one_sheet_per_kind_of_change_then_the_rates(scans):
    book = openpyxl.load_workbook(scans["diff"] / "diff.xlsx")
    assert book.sheetnames == [*DIFF_KINDS.values(), "Rates"]
    sheet = book["New revocations"]
    header = [c.value for c in sheet[1]]
    row = dict(zip(header, [c.value for c in sheet[2]]))
    assert row["sha256"] == _sha(scans["new"], LOST[0])
    assert sheet.cell(2, header.index("crtsh_url") + 1).hyperlink.target.startswith("https://crt.sh/?sha256=")
    rates = book["Rates"]
    header = [c.value for c in rates[1]]
    values = {(r[0], r[1]): r[header.index("old"):header.index("new") + 1]
              for r in rates.iter_rows(min_row=2, values_only=True)}
    assert values[("all", "revoked_within_24h")] == (3, 4)


def test_a_rerun_of_the_diff_gives_the_same_complete_answer(scans):
    again = scans["root"] / "diff-again"
    assert main(["diff", str(scans["old"]), str(scans["new"]), "--out", str(again), "-q"]) == 0
    for name in ("diff.csv", "diff.md"):
        assert (again / name).read_text() == (scans["diff"] / name).read_text()
    assert main(["diff", str(scans["old"]), str(scans["new"]), "--out", str(again), "-q"]) == 0
    assert (again / "diff.csv").read_text() == (scans["diff"] / "diff.csv").read_text()


def test_the_notebook_function_takes_loaded_scans_and_gives_the_same_changes(scans):
    from_folders = diff_scans(scans["old"], scans["new"])
    from_tables = diff_scans(load_scan(scans["old"]), load_scan(scans["new"]))
    pd.testing.assert_frame_equal(from_folders.changes, from_tables.changes)
    assert len(from_folders.new_findings()) == len(_changes(scans["diff"], "signal_added"))


def test_a_folder_that_is_not_a_scan_is_a_usage_error(scans, tmp_path, capsys):
    assert main(["diff", str(tmp_path), str(scans["new"]), "--out", str(tmp_path / "d")]) == 2
    assert "is not a ctscan report folder" in capsys.readouterr().err
    assert not (tmp_path / "d" / "diff.csv").exists()


def test_a_partial_scan_makes_the_diff_partial_and_says_why(scans, tmp_path, capsys):
    partial = tmp_path / "partial"
    shutil.copytree(scans["new"], partial)
    summary = json.loads((partial / "summary.json").read_text())
    summary.update(partial=True, partial_reasons=["CT log example.org/log skipped: no signed tree head"])
    (partial / "summary.json").write_text(json.dumps(summary))
    assert main(["diff", str(scans["old"]), str(partial), "--out", str(tmp_path / "d")]) == 3
    assert "CT log example.org/log skipped" in capsys.readouterr().err
    assert "CT log example.org/log skipped" in (tmp_path / "d" / "diff.md").read_text()


def test_every_scan_writes_its_rates_into_summary_json_and_trends_csv(scans):
    summary = json.loads((scans["new"] / "summary.json").read_text())
    rates = summary["rates"]
    assert rates["window_hours"] == 168.0
    assert rates["all"]["issued"] == 15 and rates["all"]["revoked"] == 5
    assert rates["by_month"]["2020-08"]["revoked_within_24h"] == 1
    trends = _rows(scans["new"] / "trends.csv")
    assert trends[0]["period"] == "all" and trends[0]["issued"] == "15"
    assert "trends.csv" in summary["report_files"]


# --- the rates on a hand-built table --------------------------------------------------------------


def test_revocation_rates_count_each_threshold_inclusively(test_ca):
    nb = utc("2024-03-01T00:00")
    at = [nb + timedelta(hours=24), nb + timedelta(hours=24, seconds=1), nb + timedelta(days=5),
          nb + timedelta(days=5, seconds=1), nb + timedelta(days=3), nb + timedelta(days=3, seconds=1), None]
    specs = [(0x2000 + i, nb, {"org": "Rates SL", "dns": [f"r{i}.rates-example.com"]}, when)
             for i, when in enumerate(at)]
    specs.append((0x2100, utc("2024-04-02T00:00"), {"org": "Rates SL", "dns": ["april.rates-example.com"]}, None))
    certs = issued(test_ca, specs)
    march = certs.loc[certs["not_before"] == pd.Timestamp(nb), "sha256"].tolist()
    findings = frame_from_rows([Finding(march[0], "early_revocation", "x").as_row(),
                                Finding(march[0], "early_revocation", "y", name="other").as_row(),
                                Finding(march[1], "revoke_reissue", "z").as_row()], FINDING_COLUMNS)
    table = rates_table(certs, findings, timedelta(days=3)).set_index("period")
    # latencies 24 h, 24 h + 1 s, 5 d, 5 d + 1 s, 3 d, 3 d + 1 s, never: each threshold includes its own length
    assert list(table.index) == ["all", "2024-03", "2024-04"]
    assert table.loc["2024-03", ["issued", "revoked", "revoked_within_24h", "revoked_within_5d",
                                 "revoked_within_window", "reissue_pairs"]].tolist() == [7, 6, 1, 5, 3, 1]
    assert table.loc["all", "issued"] == 8 and table.loc["2024-04", "revoked"] == 0
    # one certificate with two early_revocation names counts once: 1 of 8, 1 of 7, 0 of 1
    assert table["early_revocation_per_1000"].tolist() == [125.0, round(1000 / 7, 3), 0.0]


def test_a_precertificate_whose_certificate_appears_later_is_the_same_certificate(tmp_path):
    only_pre = tmp_path / "certs"
    shutil.copytree(SAMPLE / "certs", only_pre)
    (only_pre / "cuatis.der").unlink()  # the old scan saw only mail.cuatis.net's precertificate
    answers = SAMPLE / "registrations.csv"
    crl = SAMPLE / "crl" / "sample-ca.crl"
    for name, certs in (("old", only_pre), ("new", SAMPLE / "certs")):
        assert main(["scan", str(certs), "--crl", str(crl), "--registry-answers", str(answers), "--offline",
                     "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / name), "-q"]) == 0
    old, new = load_scan(tmp_path / "old").certs, load_scan(tmp_path / "new").certs
    assert set(old["sha256"]) != set(new["sha256"])  # the row's hash moved from the precertificate to the certificate
    diff = diff_scans(tmp_path / "old", tmp_path / "new")
    assert diff.of_kind("new_certificate").empty
    assert diff.of_kind("new_suspect").empty and diff.of_kind("signal_removed").empty
