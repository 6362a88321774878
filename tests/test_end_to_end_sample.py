"""The README's first command on the bundled sample: real findings, offline, compared with a golden file."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from scanner.cli import main
from tests.conftest import SAMPLE

GOLDEN = Path(__file__).parent / "golden" / "sample_suspects.csv"
GOLDEN_COLUMNS = ["subject_cn", "signals", "score"]


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    code = main([
        "scan", str(SAMPLE / "certs"), "--crl", str(SAMPLE / "crl" / "sample-ca.crl"),
        "--registry-answers", str(SAMPLE / "registrations.csv"), "--offline",
        "--cache", str(out / "cache"), "--out", str(out / "report"), "-q",
    ])
    assert code == 0
    return out / "report"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_sample_suspects_match_the_golden_file(sample_run):
    got = [{c: r[c] for c in GOLDEN_COLUMNS} for r in _rows(sample_run / "suspects.csv")]
    if os.environ.get("UPDATE_GOLDEN"):
        with open(GOLDEN, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, GOLDEN_COLUMNS)
            w.writeheader()
            w.writerows(got)
    assert got == _rows(GOLDEN)


def test_the_cuatis_certificate_ranks_first_with_all_four_signals(sample_run):
    first = _rows(sample_run / "suspects.csv")[0]
    assert first["subject_cn"] == "mail.cuatis.net"
    assert set(first["signals"].split(";")) >= {"unregistered_domain", "typo_neighbour", "revoke_reissue",
                                                 "early_revocation"}
    assert first["crtsh_url"] == "https://crt.sh/?sha256=" + first["sha256"].upper()
    assert "mail.cualtis.net" in first["evidence"]


def test_the_ordinary_renewal_is_not_a_suspect(sample_run):
    cns = {r["subject_cn"] for r in _rows(sample_run / "suspects.csv")}
    assert "shop.acme-tools.com" not in cns
    assert "mail.cualtis.net" not in cns


def test_the_truncated_file_is_an_error_and_counted(sample_run):
    errors = _rows(sample_run / "errors.csv")
    assert [Path(e["provenance"]).name for e in errors] == ["truncated.der"]
    summary = json.loads((sample_run / "summary.json").read_text())
    assert summary["errors"] == 1
    assert summary["read"] == 15 and summary["parsed"] == 14 and summary["certificates"] == 12


def test_offline_sample_writes_every_report(sample_run):
    for name in ("suspects.csv", "suspects.xlsx", "errors.csv", "registrations.csv", "summary.json",
                 "appendix/incident-summary.md", "appendix/unregistered_domain.csv",
                 "appendix/unregistered_domain.crtsh.txt"):
        assert (sample_run / name).is_file(), name


def test_the_scan_tables_reload_from_parquet_without_reparsing(sample_run):
    from scanner.pipeline import load_scan

    scan = load_scan(sample_run)
    cuatis = scan.certs[scan.certs["subject_cn"] == "mail.cuatis.net"].iloc[0]
    assert cuatis["san_dns"] == ["mail.cuatis.net"] and cuatis["precert_sha256"]
    assert str(cuatis["revoked_at"]) == "2019-11-12 16:55:00+00:00"
    assert list(scan.suspects["subject_cn"]) == [r["subject_cn"] for r in _rows(sample_run / "suspects.csv")]
    assert set(scan.registrations["status"]) == {"registered", "unregistered"}


def test_plots_flag_writes_the_three_pngs(tmp_path):
    code = main(["scan", str(SAMPLE / "certs"), "--crl", str(SAMPLE / "crl" / "sample-ca.crl"),
                 "--registry-answers", str(SAMPLE / "registrations.csv"), "--offline", "--plots",
                 "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "r"), "-q"])
    assert code == 0
    for name in ("issuance_timeline", "revocation_latency", "findings_per_month"):
        png = tmp_path / "r" / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


@pytest.mark.slow
def test_engine_dask_writes_the_same_suspects_as_pandas(sample_run, tmp_path):
    code = main(["scan", str(SAMPLE / "certs"), "--crl", str(SAMPLE / "crl" / "sample-ca.crl"),
                 "--registry-answers", str(SAMPLE / "registrations.csv"), "--offline", "--engine", "dask",
                 "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "r"), "-q"])
    assert code == 0
    assert _rows(tmp_path / "r" / "suspects.csv") == _rows(sample_run / "suspects.csv")
