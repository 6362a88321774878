"""Rounds that build on the previous scan: nothing parsed twice, nothing new = the previous answer, always the
answer a scan from scratch gives (certificates arriving, leaving, renamed, revoked; a precertificate's twin)."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from scanner.core.config import Config
from scanner.pipeline import ScanResult, load_scan, run
from tests.synth import TestCA, der, pem, utc

T0 = utc("2026-11-02T09:00")


class Folder:
    """A CA's folder of issued certificates and its CRL, changed between rounds."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = TestCA(name="ctscan Rounds Test CA")
        self.issued = root / "issued"
        self.issued.mkdir()
        self.crl = root / "ca.crl"
        self.revoked: list[tuple[int, object, None]] = []
        self.write_crl()
        self.n = 0

    def issue(self, label: str, serial: int, dns: list[str], *, precert: bool = False) -> str:
        cert = self.ca.issue(serial=serial, not_before=T0 + timedelta(days=serial), days=90, cn=dns[0],
                             org="Cualtis SL", dns=dns, precert=precert)
        (self.issued / f"{label}.pem").write_bytes(pem(cert))
        return hashlib.sha256(der(cert)).hexdigest()

    def revoke(self, serial: int, after: timedelta) -> None:
        self.revoked.append((serial, T0 + timedelta(days=serial) + after, None))
        self.write_crl()

    def write_crl(self) -> None:
        self.crl.write_bytes(der(self.ca.crl(self.revoked, this_update=T0 + timedelta(days=40))))

    def scan(self, name: str, previous: Path | None = None) -> ScanResult:
        config = Config(out_dir=self.root / name, source="files", paths=(self.issued,), crl_files=(self.crl,),
                        registration="off", cache_dir=self.root / "cache", workers=1, progress=False, quiet=True)
        return run(config, previous=previous, rounds=True)


def _answer(result: ScanResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    certs = result.certs.sort_values("sha256").reset_index(drop=True)
    findings = result.findings.sort_values(["sha256", "code", "name", "evidence"]).reset_index(drop=True)
    return certs, findings


def _same_as_from_scratch(built: ScanResult, scratch: ScanResult) -> None:
    (c1, f1), (c2, f2) = _answer(built), _answer(scratch)
    pd.testing.assert_frame_equal(c1, c2)
    pd.testing.assert_frame_equal(f1, f2)
    for key in ("read", "parsed", "certificates", "precertificate_pairs_merged", "duplicates_merged", "revoked",
                "findings", "suspects", "registrable_domains"):
        assert built.summary[key] == scratch.summary[key], key
    assert (built.errors.sort_values(["provenance", "error"]).reset_index(drop=True)
            .equals(scratch.errors.sort_values(["provenance", "error"]).reset_index(drop=True)))


@pytest.fixture()
def folder(tmp_path: Path) -> Folder:
    f = Folder(tmp_path)
    f.issue("a", 1, ["www.cualtis.net"])
    f.issue("b", 2, ["shop.cuatis.net"])  # one letter from the first: a typo neighbour
    f.issue("c", 3, ["mail.example.es"])
    f.issue("d-pre", 4, ["api.example.es"], precert=True)  # its final certificate comes later
    f.revoke(3, timedelta(hours=5))
    (f.issued / "junk.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    return f


def test_a_round_with_nothing_new_is_the_previous_answer_with_its_reports_taken_over(folder: Folder) -> None:
    first = folder.scan("r1")
    assert first.summary["round"] == {"built_on": None, "parsed_now": 5, "reused": 0, "nothing_new": False,
                                      "source_read": True}
    second = folder.scan("r2", previous=folder.root / "r1")
    assert second.summary["reused_from"] == "r1"
    assert second.summary["round"]["nothing_new"] and second.summary["round"]["parsed_now"] == 0
    # the result holds the certificates with findings (and those they pair with); the folder holds them all
    related = set(second.findings["related_sha256"].dropna()) - {""}
    assert set(second.findings["sha256"]) <= set(second.certs["sha256"]) <= set(second.findings["sha256"]) | related
    _same_as_from_scratch(load_scan(folder.root / "r2"), first)
    assert any(n.startswith("Nothing new since the previous scan r1") for n in second.summary["notices"])
    for name in ("suspects.csv", "suspects.xlsx", "errors.csv", "trends.csv", "certs.parquet"):
        assert (folder.root / "r2" / name).read_bytes() == (folder.root / "r1" / name).read_bytes(), name
    written = json.loads((folder.root / "r2" / "summary.json").read_text())
    assert written["reused_from"] == "r1" and written["reports_linked_from"] == "r1"
    assert written["report_as_of"] >= json.loads((folder.root / "r1" / "summary.json").read_text())["report_as_of"]
    assert not (folder.root / "r2" / "diff.md").exists()  # a round's own files are never taken over
    # the third round builds on the second exactly as the second built on the first
    third = folder.scan("r3", previous=folder.root / "r2")
    assert third.summary["reused_from"] == "r2"
    _same_as_from_scratch(load_scan(folder.root / "r3"), first)


def test_a_suspect_that_expired_since_the_previous_round_gets_its_reports_written_again(folder: Folder) -> None:
    old = folder.ca.issue(serial=9, not_before=utc("2025-06-01T00:00"), days=90, cn="www.cualtls.net",
                          org="Cualtis SL", dns=["www.cualtls.net"])
    (folder.issued / "old.pem").write_bytes(pem(old))
    folder.scan("r1")
    summary = folder.root / "r1" / "summary.json"
    doc = json.loads(summary.read_text())
    doc["report_as_of"] = "2025-07-01T00:00:00Z"  # the previous round ran before that certificate expired
    summary.write_text(json.dumps(doc))
    second = folder.scan("r2", previous=folder.root / "r1")
    assert second.summary["reused_from"] == "r1"
    written = json.loads((folder.root / "r2" / "summary.json").read_text())
    assert "reports_linked_from" not in written
    assert written["report_as_of"] > "2026-01-01"
    assert (folder.root / "r2" / "suspects.csv").read_bytes() == (folder.root / "r1" / "suspects.csv").read_bytes()


def test_a_round_after_changes_parses_only_what_changed_and_answers_as_a_scan_from_scratch(folder: Folder) -> None:
    folder.scan("r1")
    folder.issue("d", 4, ["api.example.es"])  # the precertificate's twin: merged with the row parsed before
    folder.issue("e", 5, ["login.cualtis.net"])
    folder.revoke(1, timedelta(hours=2))  # the CRL changed: a revocation of an old certificate
    (folder.issued / "b.pem").rename(folder.issued / "b-moved.pem")  # read from elsewhere: parsed again
    (folder.issued / "c.pem").unlink()  # left the selection
    built = folder.scan("r2", previous=folder.root / "r1")
    assert built.summary["round"]["built_on"] == "r1"
    assert built.summary["round"]["parsed_now"] == 3  # d, e and the moved b; a, d-pre and junk are reused
    assert built.summary["round"]["reused"] == 3
    scratch = folder.scan("scratch")
    _same_as_from_scratch(built, scratch)
    merged = built.certs[built.certs["precert_sha256"].fillna("") != ""]
    assert len(merged) == 1 and merged.iloc[0]["san_dns"] == ["api.example.es"]
    assert built.certs["provenance"].str.contains("b-moved.pem", regex=False).sum() == 1
    assert not any(built.certs["provenance"].str.contains("/c.pem", regex=False))
    assert built.certs["revoked_at"].notna().sum() == 1  # c is gone; a is now revoked
    # and a round on top of that, with nothing new, still gives the same answer
    again = folder.scan("r3", previous=folder.root / "r2")
    assert again.summary["reused_from"] == "r2"
    _same_as_from_scratch(load_scan(folder.root / "r3"), scratch)


def test_a_damaged_previous_round_is_not_built_on(folder: Folder) -> None:
    first = folder.scan("r1")
    (folder.root / "r1" / "parsed.parquet").write_bytes(b"not parquet")
    second = folder.scan("r2", previous=folder.root / "r1")
    assert second.summary["round"]["built_on"] is None and second.summary["round"]["parsed_now"] == 5
    _same_as_from_scratch(second, first)
    (folder.root / "r2" / "finding-certs.parquet").write_bytes(b"")  # what a round with nothing new reads
    third = folder.scan("r3", previous=folder.root / "r2")
    assert third.summary["round"]["built_on"] is None
    _same_as_from_scratch(third, first)


def test_changed_options_take_the_findings_afresh(folder: Folder) -> None:
    folder.scan("r1")
    config = Config(out_dir=folder.root / "r2", source="files", paths=(folder.issued,), crl_files=(folder.crl,),
                    registration="off", cache_dir=folder.root / "cache", workers=1, progress=False, quiet=True,
                    revocation_window=timedelta(hours=1))
    built = run(config, previous=folder.root / "r1")
    assert "reused_from" not in built.summary and built.summary["round"]["parsed_now"] == 0
    # revoked 5 hours after notBefore is no early revocation within a 1-hour window
    assert not (built.findings["code"] == "early_revocation").any()
