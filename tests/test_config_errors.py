"""Bad configuration, from flags or CTSCAN_* variables, is a usage error: one clear line, exit 2, no traceback."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from scanner.cli import build_parser, config_from_args, main
from scanner.core.config import Config, ConfigError
from tests.conftest import SAMPLE

SCAN = ["scan", str(SAMPLE / "certs"), "--offline"]


def assert_usage_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("ctscan: error:")]
    assert len(errors) == 1, err
    for word in words:
        assert word in errors[0], errors[0]


@pytest.mark.parametrize("flags, named", [
    (["--workers", "-1"], "--workers"),
    (["--workers", "many"], "--workers"),
    (["--ocsp-sample", "-1"], "--ocsp-sample"),
    (["--ocsp-sample", "0"], "--ocsp-sample"),
    (["--since", "2020-01-01", "--until", "2020-01-01"], "--since"),
    (["--since", "2021-01-01", "--until", "2020-01-01"], "--since"),
    (["--since", "last tuesday"], "--since"),
    (["--start", "10", "--end", "5"], "--start"),
    (["--start", "5", "--end", "5"], "--start"),
    (["--start", "-1"], "--start"),
    (["--end", "-3"], "--end"),
    (["--lookup-concurrency", "0"], "--lookup-concurrency"),
    (["--rdap-rate", "nan"], "--rdap-rate"),
    (["--whois-rate", "inf"], "--whois-rate"),
    (["--crtsh-rate", "-1"], "--crtsh-rate"),
    (["--ocsp-rate", "fast"], "--ocsp-rate"),
    (["--timeout", "0"], "--timeout"),
    (["--timeout", "-5"], "--timeout"),
    (["--timeout", "nan"], "--timeout"),
    (["--retries", "-1"], "--retries"),
    (["--ca-id", "0"], "--ca-id"),
    (["--ca-id", "camerfirma"], "--ca-id"),
    (["--dns-server", "127.0.0.1:0"], "--dns-server"),
    (["--dns-server", "[::1"], "--dns-server"),
    (["--whois-server", "whois.example:port"], "--whois-server"),
    (["--crtsh-url", "file:///etc/passwd"], "--crtsh-url"),
    (["--for-not-after", "2026-01-01..2025-01-01"], "--for-not-after"),
    (["--window", "0"], "--window"),
    (["--reissue-window", "-1d"], "--reissue-window"),
    (["--window", "nand"], "duration"),
    (["--source", "ftp"], "--source"),
    (["--engine", "spark"], "--engine"),
])
def test_a_bad_scan_flag_is_one_usage_error_line_naming_the_flag(flags, named, tmp_path, capsys):
    code = main([*SCAN, "--out", str(tmp_path / "out"), *flags])
    assert_usage_error(code, capsys.readouterr().err, named)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("variable, value, words", [
    ("CTSCAN_RDAP_RATE", "fast", ["not a number: 'fast'"]),
    ("CTSCAN_WHOIS_RATE", "-1", ["must be a number >= 0"]),
    ("CTSCAN_OCSP_RATE", "nan", ["nan"]),
    ("CTSCAN_CRTSH_RATE", "inf", ["inf"]),
    ("CTSCAN_SOURCE", "ftp", ["'ftp'"]),
    ("CTSCAN_REGISTRATION", "maybe", ["'maybe'"]),
    ("CTSCAN_ENGINE", "spark", ["'spark'"]),
    ("CTSCAN_DNS_SERVER", ":53", ["no host"]),
    ("CTSCAN_WHOIS_SERVER", "whois.example:abc", ["port"]),
    ("CTSCAN_CRTSH_URL", "crt.sh", ["http"]),
])
def test_a_bad_ctscan_variable_is_one_usage_error_line_naming_the_variable(
        variable, value, words, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(variable, value)
    code = main([*SCAN, "--out", str(tmp_path / "out")])
    assert_usage_error(code, capsys.readouterr().err, f"ctscan: error: {variable}: ", *words)


def test_help_still_works_when_a_ctscan_variable_is_bad(capsys, monkeypatch):
    # --help is how the user learns what the variable should hold
    monkeypatch.setenv("CTSCAN_RDAP_RATE", "fast")
    assert main(["scan", "--help"]) == 0
    captured = capsys.readouterr()
    assert "--rdap-rate" in captured.out and "Traceback" not in captured.err


def test_a_flag_overrides_a_bad_ctscan_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("CTSCAN_RDAP_RATE", "fast")
    monkeypatch.setenv("CTSCAN_OCSP_RATE", "")  # empty counts as unset
    args = build_parser().parse_args([*SCAN, "--out", str(tmp_path), "--rdap-rate", "2"])
    config = config_from_args(args)
    assert (config.rdap_rate, config.ocsp_rate) == (2.0, 10.0)


def test_good_ctscan_variables_set_the_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("CTSCAN_RDAP_RATE", "0.5")
    monkeypatch.setenv("CTSCAN_DNS_SERVER", "[::1]:5353")
    monkeypatch.setenv("CTSCAN_REGISTRATION", "dns")
    config = config_from_args(build_parser().parse_args(["scan", "p", "--out", str(tmp_path)]))
    assert (config.rdap_rate, config.dns_server, config.registration) == (0.5, "[::1]:5353", "dns")


@pytest.mark.parametrize("flags, named", [
    (["--timeout", "0"], "--timeout"),
    (["--timeout", "nan"], "--timeout"),
    (["--timeout", "inf"], "--timeout"),
    (["--concurrency", "0"], "--concurrency"),
    (["--dns-server", "127.0.0.1:70000"], "--dns-server"),
])
def test_a_bad_test_websites_flag_is_one_usage_error_line(flags, named, tmp_path, capsys):
    ccadb = tmp_path / "ccadb.csv"
    ccadb.write_text("CA Owner,Certificate Name,SHA-256 Fingerprint,Test Website - Valid\n")
    code = main(["test-websites", "--ccadb", str(ccadb), "--out", str(tmp_path / "t"), *flags])
    assert_usage_error(code, capsys.readouterr().err, named)


UTC = timezone.utc


@pytest.mark.parametrize("values", [
    {"workers": -2},
    {"ocsp_sample": 0},
    {"since": datetime(2021, 1, 1, tzinfo=UTC), "until": datetime(2020, 1, 1, tzinfo=UTC)},
    {"log_start": 9, "log_end": 3},
    {"ct_batch": 0},
    {"ct_parallel": 0},
    {"ct_rate": float("nan")},
    {"timeout": 0.0},
    {"rdap_rate": float("inf")},
    {"dns_server": "1.2.3.4:65536"},
])
def test_a_notebook_config_with_a_bad_value_fails_when_built(values):
    with pytest.raises(ConfigError):
        Config(out_dir=Path("out"), **values)
