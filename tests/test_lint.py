"""--lint: pkilint's CA/Browser Forum TLS linter on every certificate, joined with the rest of the evidence."""

from __future__ import annotations

import hashlib
import json
import shutil
import ssl
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scanner.cli import main
from scanner.core.records import FINDING_COLUMNS, finding_code, frame_from_rows
from scanner.detect.lint import detect_lint
from scanner.detect.score import LINT_MAX_POINTS, code_points
from scanner.enrich.lint import lint_ders, pkilint_version
from scanner.enrich.lint_worker import lint_der
from scanner.parse.certs import parse_der
from scanner.parse.link import collapse_precerts
from tests.conftest import SAMPLE
from tests.synth import TestCA, der, pem

FIXTURES = Path(__file__).parent / "fixtures"
#: Real certificates of real CAs: known misissuances, a malformed WoSign certificate, BR violations.
REAL = sorted((FIXTURES / "chromium_blocklist").glob("*.pem")) + sorted(
    (FIXTURES / "cryptography_vectors" / "x509").glob("*.pem"))
NOW = datetime.now(timezone.utc).replace(microsecond=0)


#: Runs pkilint's own CLIs, each file through its ``main()`` as the console script calls it (so each builds
#: its validators afresh), in one interpreter that has imported nothing of ctscan: one start instead of one a file.
_CLI_RUNNER = """
import contextlib, importlib, io, json, sys
answers = []
for module, args in json.load(sys.stdin):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = importlib.import_module("pkilint.bin." + module).main(args)
    answers.append([status, out.getvalue(), err.getvalue()])
json.dump(answers, sys.stdout)
"""


def run_pkilint_clis(runs: Sequence[tuple[str, list[str]]]) -> list[tuple[int, str, str]]:
    """pkilint's CLIs (module of pkilint.bin, argv) on each run: (exit status, stdout, stderr), two interpreters."""
    halves = [list(runs[: (len(runs) + 1) // 2]), list(runs[(len(runs) + 1) // 2:])]

    def one(batch: list[tuple[str, list[str]]]) -> list[tuple[int, str, str]]:
        if not batch:
            return []
        done = subprocess.run([sys.executable, "-c", _CLI_RUNNER], input=json.dumps(batch), capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return [tuple(answer) for answer in json.loads(done.stdout)]

    with ThreadPoolExecutor(2) as pool:  # two cores
        return [answer for half in pool.map(one, halves) for answer in half]


def _findings(stdout: str) -> list[tuple[str, str, str, str]]:
    """The findings of one JSON report of pkilint's CLI."""
    return [(d["severity"], d["code"], r["node_path"], d["message"] or "")
            for r in json.loads(stdout)["results"] for d in r["finding_descriptions"]]


_CERT_CLI: dict[Path, list[tuple[str, str, str, str]]] = {}


def pkilint_cli(paths: Sequence[Path]) -> list[list[tuple[str, str, str, str]]]:
    """pkilint's own CLI, ``lint_cabf_serverauth_cert lint -d`` (JSON output), on each file: its findings."""
    missing = [p for p in dict.fromkeys(paths) if p not in _CERT_CLI]
    answers = run_pkilint_clis([("lint_cabf_serverauth_cert", ["lint", "-d", "-f", "JSON", str(p)]) for p in missing])
    for path, (_, stdout, stderr) in zip(missing, answers):
        assert stdout, stderr  # its exit status is the number of findings
        _CERT_CLI[path] = _findings(stdout)
    return [_CERT_CLI[p] for p in paths]


def der_of(path: Path) -> bytes:
    """A certificate file's DER (without cryptography, which refuses some of these)."""
    data = path.read_bytes()
    return ssl.PEM_cert_to_DER_cert(data.decode("ascii")) if data.lstrip().startswith(b"-----") else data


def scan(certs: Path, out: Path, store: Path, *extra: str) -> dict:
    code = main(["scan", str(certs), "--registry-answers", str(SAMPLE / "registrations.csv"), "--offline",
                 "--registration", "off", "--cache", str(out / "cache"), "--store", str(store),
                 "--out", str(out / "report"), "--lint", "-q", "--no-progress", *extra])
    assert code in (0, 3)
    return json.loads((out / "report" / "summary.json").read_text())


@pytest.fixture(scope="module")
def linted_real(tmp_path_factory) -> tuple[Path, dict]:
    """One ctscan --lint scan of the real certificates and the bundled sample together."""
    tmp = tmp_path_factory.mktemp("lint-real")
    certs = tmp / "certs"
    certs.mkdir()
    for path in REAL + sorted((SAMPLE / "certs").iterdir()):
        shutil.copy(path, certs / path.name)
    summary = scan(certs, tmp / "scan", tmp / "store.sqlite3", "--crl", str(SAMPLE / "crl" / "sample-ca.crl"))
    return tmp / "scan" / "report", summary


#: Every real and sample certificate pkilint's CLI can be asked about.
CLI_FILES = REAL + [p for p in sorted((SAMPLE / "certs").iterdir()) if p.name != "truncated.der"]


@pytest.fixture(scope="module")
def cli_of_real() -> Iterator[Future[list[list[tuple[str, str, str, str]]]]]:
    """pkilint's CLI on CLI_FILES, started at once so that its interpreters run beside the scan of linted_real."""
    with ThreadPoolExecutor(1) as pool:
        yield pool.submit(pkilint_cli, CLI_FILES)


@pytest.mark.slow
@pytest.mark.timeout(900)  # 23 runs of pkilint's CLI, each building its validators
def test_ctscan_lint_signals_are_those_of_pkilints_own_cli_on_every_real_and_sample_certificate(cli_of_real,
                                                                                              linted_real):
    report, summary = linted_real
    findings = pd.read_parquet(report / "findings.parquet")
    certs = pd.read_parquet(report / "certs.parquet")
    files = CLI_FILES
    expected = dict(zip(files, cli_of_real.result()))
    compared = 0
    for path, cli in expected.items():
        sha = hashlib.sha256(der_of(path)).hexdigest()
        row = certs.loc[(certs["sha256"] == sha) | (certs["precert_sha256"] == sha), "sha256"]
        assert len(row) == 1, path.name
        mine = findings[(findings["sha256"] == row.iloc[0]) & findings["code"].str.startswith("lint:")]
        details = [json.loads(d) for d in mine["detail"]]
        document = "precertificate" if (certs["precert_sha256"] == sha).any() else "certificate"
        got = {(d["pkilint_severity"], d["pkilint_code"], d["node_path"], d["message"])
               for d in details if d["document"] == document}
        if row.iloc[0] == sha:  # the row's own certificate: its lint signals are exactly pkilint's codes
            assert got == set(cli), path.name
            assert set(mine["code"]) == {f"lint:{code}" for _, code, _, _ in cli}, path.name
        else:  # a precertificate: what its final certificate repeats is listed once, as the certificate's
            of_row = {(d["pkilint_severity"], d["pkilint_code"], d["node_path"], d["message"]) for d in details}
            assert got <= set(cli) <= of_row, path.name
        compared += 1
    assert compared == len(files) >= 20
    assert summary["lint"]["pkilint_version"] == pkilint_version() == "0.13.3"
    assert summary["lint"]["br_version"]


@pytest.mark.timeout(900)
def test_one_linter_reused_across_certificates_gives_what_a_fresh_cli_gives_each():
    # The CLI builds its validators for every file; ctscan builds them once per process and type.
    files = REAL[:3] + [SAMPLE / "certs" / "contoso-vpn.pem"]
    reused = [lint_der(der_of(p)) for p in files + files[::-1]]
    for path, result, cli in zip(files + files[::-1], reused, pkilint_cli(files + files[::-1])):
        assert Counter(tuple(f) for f in result["findings"]) == Counter(cli), path.name


@pytest.mark.slow
def test_summary_appendix_and_workbook_give_one_list_per_lint_code(linted_real):
    report, summary = linted_real
    per_code = summary["lint"]["findings_per_code"]
    assert per_code and all(n > 0 for n in per_code.values())
    assert sum(per_code.values()) == sum(summary["lint"]["findings_by_severity"].values())
    codes = {c for c in summary["findings"] if c.startswith("lint:")}
    assert codes == {f"lint:{c}" for c in per_code}
    listed = {p.name for p in (report / "appendix").iterdir()}
    for code in codes:
        assert code.replace(":", "_") + ".csv" in listed
    import openpyxl

    book = openpyxl.load_workbook(report / "suspects.xlsx", read_only=True)
    assert len([s for s in book.sheetnames if s.startswith("lint ")]) == len(codes)
    summary_rows = list(book["Summary"].iter_rows(values_only=True))
    severities = {r[1]: r[2] for r in summary_rows if isinstance(r[1], str) and r[1].startswith("lint:")}
    assert set(severities) == codes and set(severities.values()) <= {"high", "medium", "low", "info"}
    text = (report / "appendix" / "incident-summary.md").read_text()
    assert all(f"`{c}`" in text for c in codes)


def test_a_rerun_lints_nothing_new_and_a_new_certificate_is_linted(tmp_path):
    ca = TestCA(name="ctscan Lint Cache CA")
    certs = tmp_path / "certs"
    certs.mkdir()
    for serial in range(1, 6):
        cert = ca.issue(serial=serial, not_before=NOW - timedelta(days=10), days=90, cn=f"www.lint{serial}.com",
                        dns=[f"www.lint{serial}.com"])
        (certs / f"c{serial}.pem").write_bytes(pem(cert))
    store = tmp_path / "store.sqlite3"
    cold = scan(certs, tmp_path / "cold", store)["lint"]
    assert (cold["certificates"], cold["linted"], cold["from_cache"]) == (5, 5, 0)
    warm = scan(certs, tmp_path / "warm", store)["lint"]
    assert (warm["certificates"], warm["linted"], warm["from_cache"]) == (5, 0, 5)
    assert warm["findings_per_code"] == cold["findings_per_code"]
    cold_findings = pd.read_parquet(tmp_path / "cold" / "report" / "findings.parquet")
    warm_findings = pd.read_parquet(tmp_path / "warm" / "report" / "findings.parquet")
    pd.testing.assert_frame_equal(cold_findings, warm_findings)
    extra = ca.issue(serial=99, not_before=NOW - timedelta(days=1), days=90, cn="new.lint99.com",
                     dns=["new.lint99.com", "intranet.local"])
    (certs / "new.pem").write_bytes(pem(extra))
    again = scan(certs, tmp_path / "again", store)["lint"]
    assert (again["certificates"], again["linted"], again["from_cache"]) == (6, 1, 5)
    assert again["findings_per_code"].get("cabf.internal_domain_name") == 1  # only the new one has it


def test_a_new_pkilint_version_lints_everything_again(tmp_path, monkeypatch):
    ca = TestCA(name="ctscan Lint Version CA")
    ders = [der(ca.issue(serial=s, not_before=NOW, days=90, dns=[f"v{s}.example.com"])) for s in (1, 2)]
    store = tmp_path / "store.sqlite3"
    assert lint_ders(ders, store).summary["linted"] == 2
    assert lint_ders(ders, store).summary["linted"] == 0
    monkeypatch.setattr("scanner.enrich.lint.pkilint_version", lambda: "99.0")
    assert lint_ders(ders, store).summary["linted"] == 2


def test_a_precertificates_findings_its_certificate_repeats_are_listed_once_as_the_certificates():
    ca = TestCA(name="ctscan Lint Precert CA")
    kw = dict(serial=7, not_before=NOW - timedelta(days=2), days=90, cn="www.pair.com", dns=["www.pair.com"])
    precert, cert = der(ca.issue(precert=True, **kw)), der(ca.issue(**kw))
    tables = lint_ders([precert, cert], ":memory:")
    certs = collapse_precerts(pd.DataFrame([parse_der(precert), parse_der(cert)]))
    assert len(certs) == 1
    found = detect_lint(certs, tables.findings)
    assert set(found["sha256"]) == {certs["sha256"].iloc[0]} == {parse_der(cert)["sha256"]}
    documents = {json.loads(d)["document"] for d in found["detail"]}
    cert_only = tables.findings[tables.findings["sha256"] == parse_der(cert)["sha256"]]
    assert len(found) >= len(cert_only.drop_duplicates(["code", "node_path", "message"]))
    assert not found.duplicated(["code", "evidence"]).any()
    # what only the precertificate has is listed too, and says so; the rest is the certificate's
    from_precert = found["evidence"].str.contains("in the precertificate")
    assert ("precertificate" in documents) == bool(from_precert.any())
    assert "certificate" in documents


def test_lint_errors_count_in_the_score_warnings_weigh_little_and_lint_points_are_capped():
    a, b, c = "a1" * 32, "b2" * 32, "c3" * 32
    rows = [
        {"sha256": a, "code": "lint:cabf.x", "severity": "high", "evidence": "e"},
        {"sha256": b, "code": "lint:cabf.y", "severity": "low", "evidence": "e"},
        {"sha256": b, "code": "lint:cabf.z", "severity": "info", "evidence": "e"},
    ] + [{"sha256": c, "code": f"lint:cabf.e{i}", "severity": "high", "evidence": "e"} for i in range(5)] + [
        {"sha256": c, "code": "typo_neighbour", "severity": "medium", "evidence": "e"}]
    points = code_points(frame_from_rows(rows, FINDING_COLUMNS)).groupby("sha256")["points"].sum()
    assert points[a] == finding_code("lint:cabf.x", "high").weight == 20.0
    assert points[b] < 2.0
    assert points[c] == pytest.approx(LINT_MAX_POINTS + finding_code("typo_neighbour").weight)


@pytest.mark.slow
@pytest.mark.timeout(900)  # three scans in two fresh interpreters
def test_a_scan_without_lint_never_imports_pkilint_nor_does_a_rerun_whose_lints_are_all_cached(tmp_path):
    store = tmp_path / "store.sqlite3"
    # one scan after another in one interpreter, each followed by whether pkilint is imported by then
    code = (
        "import json, sys\nfrom scanner.cli import main\n"
        "for extra in json.loads(sys.argv[1]):\n"
        "    assert main([*sys.argv[2:], *extra]) == 0\n"
        "    print('pkilint' in sys.modules)\n"
    )
    args = ["scan", str(SAMPLE / "certs"), "--registry-answers", str(SAMPLE / "registrations.csv"), "--offline",
            "--cache", str(tmp_path / "cache"), "--store", str(store), "-q", "--no-progress",
            "--out", str(tmp_path / "o")]

    def imported(*scans: list[str]) -> list[bool]:
        done = subprocess.run([sys.executable, "-c", code, json.dumps(scans), *args],
                              capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)
        assert done.returncode == 0, done.stderr
        return [line == "True" for line in done.stdout.strip().splitlines()[-len(scans):]]

    # a fresh interpreter: not imported by a scan without --lint, then imported by a cold --lint (pkilint lints)
    assert imported([], ["--lint"]) == [False, True]
    assert imported(["--lint"]) == [False]  # warm, in another fresh interpreter: every result from the store


def pkilint_revocation_cli(runs: Sequence[tuple[Path, str]]) -> list[list[tuple[str, str, str, str]] | None]:
    """pkilint's own lint_crl (-t CRL -p BR) or lint_ocsp_response on each (file, kind); None when it cannot load it."""
    modules = {"crl": ("lint_crl", ["-t", "CRL", "-p", "BR"]), "ocsp": ("lint_ocsp_response", [])}
    answers = run_pkilint_clis([(modules[kind][0], ["lint", *modules[kind][1], "-f", "JSON", str(path)])
                                for path, kind in runs])
    found: list[list[tuple[str, str, str, str]] | None] = []
    for _, stdout, stderr in answers:
        if not stdout:
            assert "Failed to load" in stderr, stderr
            found.append(None)
        else:
            found.append(_findings(stdout))
    return found


def test_pkilints_crl_and_ocsp_linters_on_real_crls_and_responses_give_what_its_clis_give():
    from scanner.enrich.lint import lint_revocation_documents

    crl_files = [FIXTURES / "crl" / "InCommon-RSA-Server-CA_2018-08-20.crl",
                 FIXTURES / "crl" / "pemCRLBase64_RSA-Public-Root-CA-v1_2011-02-23.pem"]
    ocsp_files = sorted((FIXTURES / "cryptography_vectors" / "ocsp").glob("*.der"))
    documents = []
    for path in crl_files:
        data = path.read_bytes()
        if data.lstrip().startswith(b"-----"):
            data = x509.load_pem_x509_crl(data).public_bytes(serialization.Encoding.DER)
        documents.append((path.as_uri(), "crl", data, path))
    documents += [(p.as_uri(), "ocsp", p.read_bytes(), p) for p in ocsp_files]
    with ThreadPoolExecutor(1) as pool:  # the CLIs' interpreters run while ctscan lints the same documents here
        clis = pool.submit(pkilint_revocation_cli, [(path, kind) for _, kind, _, path in documents])
        table = lint_revocation_documents([(url, kind, data) for url, kind, data, _ in documents])
        expected = clis.result()
    for (url, _, _, path), cli in zip(documents, expected):
        mine = table[table["url"] == url]
        if cli is None:  # e.g. the 5-byte 'unauthorized' response: no responseBytes to lint
            assert len(mine) == 1 and mine["code"].iloc[0] == "" and "could not decode" in mine["message"].iloc[0]
            continue
        got = Counter(zip(mine["severity"], mine["code"], mine["node_path"], mine["message"]))
        assert got == Counter(cli), path.name
    # the 2011 root CRL's 180-day validity breaks the BR's 10-day maximum
    assert "cabf.crl_invalid_validity_period" in set(table["code"])


def test_with_check_revocation_the_fetched_crl_and_ocsp_answers_are_linted_as_pkilints_clis_lint_them(tmp_path):
    from tests.loopback import ocsp_server as srv

    ca = TestCA(name="ctscan Lint Revocation CA")
    crl = ca.crl([(2, NOW - timedelta(days=2), x509.ReasonFlags.key_compromise)], this_update=NOW - timedelta(hours=6),
                 next_update=NOW + timedelta(days=30))  # 30 days: past the BR's 10-day maximum for a CRL
    behaviour = {s: srv.Answer(srv.GOOD) for s in range(1, 13)}
    with srv.OcspServer(ca.cert, ca.key, behaviour, files={"/ca.crl": der(crl)}) as server:
        certs = tmp_path / "certs"
        certs.mkdir()
        for serial in range(1, 13):
            c = ca.issue(serial=serial, not_before=NOW - timedelta(days=3), days=90, dns=[f"r{serial}.example.com"],
                         ocsp_url=server.url, crl_url=server.file_url("/ca.crl"))
            (certs / f"c{serial}.pem").write_bytes(pem(c))
        issuer = tmp_path / "ca.pem"
        issuer.write_bytes(pem(ca.cert))
        code = main(["scan", str(certs), "--registration", "off", "--check-revocation", "--issuer-cert", str(issuer),
                     "--ocsp-rate", "0", "--timeout", "5", "--cache", str(tmp_path / "cache"), "--lint",
                     "--out", str(tmp_path / "out"), "-q", "--no-progress"])
    assert code in (0, 3)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    linted = summary["revocation_checks"]["lint"]
    assert linted["crls"] == 1
    assert linted["ocsp_responses"] == 10  # OCSP_LINT_PER_RESPONDER answers of the one responder
    table = pd.read_csv(tmp_path / "out" / "revocation-lint.csv", keep_default_na=False)
    (tmp_path / "ca.crl").write_bytes(der(crl))
    (cli,) = pkilint_revocation_cli([(tmp_path / "ca.crl", "crl")])
    mine = table[table["kind"] == "crl"]
    assert Counter(zip(mine["severity"], mine["code"], mine["node_path"], mine["message"])) == Counter(cli)
    assert "cabf.crl_invalid_validity_period" in set(mine["code"])
    assert set(table["kind"]) <= {"crl", "ocsp"}
