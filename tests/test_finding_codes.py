"""One registry of finding codes: complete at import, read-only, and the same in every process."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509

from scanner.core import records
from scanner.core.records import FINDING_CODES, FindingCode, UnknownFindingCode, finding_code
from tests.loopback import ocsp_server as srv
from tests.synth import TestCA, der, pem

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def fresh_python(code: str, *args: str) -> str:
    """Run code in a new interpreter (nothing imported but what it imports) and return its stdout."""
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_the_revocation_checks_does_not_change_the_finding_codes():
    codes = json.loads(fresh_python(
        "import json\n"
        "from scanner.core.records import FINDING_CODES\n"
        "before = {c: [f.severity, f.weight, f.title] for c, f in FINDING_CODES.items()}\n"
        "import scanner.enrich.revocation.fetch, scanner.detect.revocation_status\n"
        "after = {c: [f.severity, f.weight, f.title] for c, f in FINDING_CODES.items()}\n"
        "print(json.dumps([before, after]))\n"
    ))
    before, after = codes
    assert before == after
    assert before["ocsp_good_but_revoked"] == ["high", 30.0, "OCSP says good, CRL or crt.sh says revoked"]
    assert before["crl_bad_signature"] == ["high", 20.0, "CRL signature does not verify"]
    assert len(before) == len(records._CODE_TABLE)  # every code of the table, before anything else is imported


def test_the_finding_codes_cannot_be_changed_at_run_time():
    with pytest.raises(TypeError):
        FINDING_CODES["ocsp_good_but_revoked"] = FindingCode("ocsp_good_but_revoked", "info", 1.0, "x", "x")  # type: ignore[index]
    assert FINDING_CODES["ocsp_good_but_revoked"].weight == 30.0
    assert not hasattr(records, "register_finding_code")


def test_every_finding_code_says_what_it_means_in_one_sentence():
    for code, meta in FINDING_CODES.items():
        assert meta.code == code
        assert meta.severity in ("high", "medium", "low", "info"), code
        assert meta.weight > 0, code
        assert meta.title and meta.description.endswith("."), code


def test_an_unknown_finding_code_is_a_clear_error_naming_it():
    with pytest.raises(UnknownFindingCode, match="'ocsp_renamed_long_ago'.*another version"):
        finding_code("ocsp_renamed_long_ago")
    with pytest.raises(UnknownFindingCode):
        records.Finding("a1" * 32, "ocsp_renamed_long_ago", "evidence").as_row()
    assert finding_code("typo_neighbour").weight == 25.0


def test_scoring_a_finding_code_this_version_does_not_know_is_a_clear_error():
    import pandas as pd

    from scanner.detect.score import code_points

    findings = pd.DataFrame({"sha256": ["a1" * 32, "b2" * 32], "code": ["typo_neighbour", "ocsp_renamed_long_ago"],
                             "detail": ["{}", "{}"]})
    # Scoring it 1.0 silently would rank a table from another version differently from its suspects.csv.
    with pytest.raises(UnknownFindingCode, match="ocsp_renamed_long_ago"):
        code_points(findings)
    assert code_points(findings.iloc[:1])["points"].tolist() == [25.0]


@pytest.fixture()
def sample_with_an_ocsp_disagreement(tmp_path):
    """The bundled sample plus two certificates of a loopback CA: one its CRL revokes while OCSP says good."""
    ca = TestCA(name="ctscan Finding Codes CA")
    behaviour = {1: srv.Answer(srv.GOOD), 2: srv.Answer(srv.GOOD)}
    crl = ca.crl([(2, NOW - timedelta(days=2), x509.ReasonFlags.key_compromise)], this_update=NOW - timedelta(hours=6))
    with srv.OcspServer(ca.cert, ca.key, behaviour, files={"/ca.crl": der(crl)}) as server:
        certs = tmp_path / "certs"
        shutil.copytree(SAMPLE / "certs", certs)
        for serial in (1, 2):
            # a domain the sample's recorded answers cover, so no registry is asked
            c = ca.issue(serial=serial, not_before=NOW - timedelta(days=30), dns=[f"ocsp{serial}.northwind-bank.com"],
                         ocsp_url=server.url, crl_url=server.file_url("/ca.crl"))
            (certs / f"loopback-{serial}.pem").write_bytes(pem(c))
        issuer = tmp_path / "loopback-ca.pem"
        issuer.write_bytes(pem(ca.cert))
        yield certs, issuer


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_load_scan_in_a_fresh_process_ranks_the_suspects_exactly_as_the_written_suspects_csv(
        tmp_path, sample_with_an_ocsp_disagreement):
    certs, issuer = sample_with_an_ocsp_disagreement
    out = tmp_path / "out"
    fresh_python(
        "import sys\nfrom scanner.cli import main\nsys.exit(main(sys.argv[1:]))\n",
        "scan", str(certs), "--crl", str(SAMPLE / "crl" / "sample-ca.crl"),
        "--registry-answers", str(SAMPLE / "registrations.csv"), "--check-revocation", "--issuer-cert", str(issuer),
        "--ocsp-rate", "0", "--timeout", "5", "--cache", str(tmp_path / "cache"), "--out", str(out),
        "-q", "--no-progress",
    )
    written = read_rows(out / "suspects.csv")
    ocsp = [r for r in written if "ocsp_good_but_revoked" in r["signals"].split(";")]
    assert [r["sans"] for r in ocsp] == ["ocsp2.northwind-bank.com"]
    assert float(ocsp[0]["score"]) >= 30.0
    assert any("unregistered_domain" in r["signals"] for r in written)  # the sample's own findings are there too

    # A notebook: nothing imported but load_scan; its suspects written by the same CSV writer, read back the same way.
    reloaded = tmp_path / "reloaded.csv"
    fresh_python(
        "import sys\nfrom pathlib import Path\n"
        "from scanner.pipeline import load_scan\nfrom scanner.report.csv_report import write_frame\n"
        "write_frame(Path(sys.argv[2]), load_scan(Path(sys.argv[1])).suspects)\n",
        str(out), str(reloaded),
    )
    again = read_rows(reloaded)
    columns = list(written[0])
    assert [[r[c] for c in columns] for r in again] == [[r[c] for c in columns] for r in written]
