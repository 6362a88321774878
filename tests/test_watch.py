"""`ctscan watch`: rounds over a folder of certificates and a CRL that grow, and alerts sent once per channel."""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography.hazmat.primitives import serialization

from scanner.cli import main
from tests.conftest import REPO
from tests.loopback.pg import CertwatchDB, certwatch_pg  # noqa: F401  (the fixture)
from tests.synth import TestCA, der, new_key, pem, utc

pytestmark = pytest.mark.slow

T0 = utc("2026-11-20T09:00")
REGISTRATIONS = ("domain,status,method,server,detail,checked_at,registered_at,attempts\n"
                 "never-registered.es,unregistered,rdap,https://rdap.nic.es/,HTTP 404 Not Found,"
                 "2026-11-25T12:00:00Z,,1\n")

# A hook that records its stdin and environment, one JSON line per call; KILL_PARENT makes it kill ctscan
# before it records (the channel never got the alert) or after (accepted, but never marked delivered).
HOOK = """\
import json, os, signal, sys
doc = json.load(sys.stdin)
if os.environ.get("HOOK_FAIL"):
    sys.exit(7)
if os.environ.get("KILL_PARENT") == "before":
    os.kill(os.getppid(), signal.SIGKILL)
    sys.exit(1)
with open(os.environ["HOOK_LOG"], "a") as fh:
    fh.write(json.dumps({"doc": doc, "env": {k: v for k, v in os.environ.items() if k.startswith("CTSCAN_")}}) + "\\n")
if os.environ.get("KILL_PARENT") == "after":
    os.kill(os.getppid(), signal.SIGKILL)
if os.environ.get("INTERRUPT_PARENT"):
    os.kill(os.getppid(), signal.SIGINT)
"""


class Day:
    """A CA's issued-certificate folder and CRL that gain certificates and revocations between rounds."""

    def __init__(self, root: Path) -> None:
        self.ca = TestCA(name="ctscan Watch Test CA")
        self.root = root
        self.certs = root / "issued"
        self.certs.mkdir()
        self.crl = root / "ca.crl"
        self.answers = root / "registrations.csv"
        self.answers.write_text(REGISTRATIONS)
        self.revoked: list[tuple[int, object, None]] = []
        self.sha: dict[str, str] = {}
        self.out = root / "out"
        self.store = root / "store.sqlite3"
        self._write_crl()

    def issue(self, label: str, serial: int, dns: list[str], *, revoked_after: timedelta | None = None,
              ips: tuple[str, ...] = ()) -> None:
        """Issue a certificate into the folder; revoked_after puts it on the next CRL that long after notBefore."""
        cert = self.ca.issue(serial=serial, not_before=T0 + timedelta(days=serial), days=90, cn=dns[0], org="Example SL",
                             dns=dns, ips=ips)
        (self.certs / f"{label}.pem").write_bytes(pem(cert))
        self.sha[label] = hashlib.sha256(der(cert)).hexdigest()
        if revoked_after is not None:
            self.revoked.append((serial, T0 + timedelta(days=serial) + revoked_after, None))
            self._write_crl()

    def _write_crl(self) -> None:
        self.crl.write_bytes(der(self.ca.crl(self.revoked, this_update=T0 + timedelta(days=30))))

    def argv(self, *extra: str) -> list[str]:
        """The `ctscan watch --once` command line of this day (offline, recorded registry answers)."""
        return ["watch", "--once", str(self.certs), "--crl", str(self.crl), "--registry-answers", str(self.answers),
                "--offline", "--cache", str(self.root / "cache"), "--store", str(self.store),
                "--out", str(self.out), "-q", *extra]

    def rounds(self) -> list[Path]:
        """The round folders, oldest first."""
        return sorted(p for p in self.out.iterdir() if p.is_dir() and not p.is_symlink())

    def latest(self) -> Path:
        """The folder out/latest points at."""
        return (self.out / "latest").resolve()


def _morning(day: Day) -> None:
    day.issue("early1", 1, ["www.example.es"], revoked_after=timedelta(hours=4))
    day.issue("unregistered", 2, ["shop.never-registered.es"])
    day.issue("plain", 3, ["mail.example.es"], ips=("192.0.2.7",))


def _afternoon(day: Day) -> None:
    day.issue("early2", 4, ["api.example.es"], revoked_after=timedelta(hours=20))


def _pairs(findings: list[dict]) -> set[tuple[str, str]]:
    return {(f["sha256"], f["code"]) for f in findings}


def _round_pairs(folder: Path, codes: set[str] | None = None) -> set[tuple[str, str]]:
    """The (sha256, code) pairs of a round's findings (by default those the default policy alerts on)."""
    findings = pd.read_parquet(folder / "findings.parquet")
    if codes is None:
        keep = (findings["severity"] == "high") | (findings["code"] == "early_revocation")
    else:
        keep = findings["code"].isin(codes)
    return set(zip(findings.loc[keep, "sha256"], findings.loc[keep, "code"]))


def _hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    log = tmp_path / "hook.jsonl"
    monkeypatch.setenv("HOOK_LOG", str(log))
    return f"{sys.executable} {script}", log


def _calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture()
def day(tmp_path: Path) -> Day:
    return Day(tmp_path)


def test_three_rounds_alert_the_existing_findings_then_only_the_new_ones_then_nothing(day, tmp_path, monkeypatch):
    hook, log = _hook(tmp_path, monkeypatch)
    _morning(day)
    assert main(day.argv("--alert-exec", hook)) == 0
    first = _calls(log)
    assert len(first) == 1
    doc = first[0]["doc"]
    assert doc["schema"] == "ctscan-alert/1" and doc["selection"]["source"] == "files"
    assert _pairs(doc["findings"]) == _round_pairs(day.latest()) == {
        (day.sha["early1"], "early_revocation"), (day.sha["unregistered"], "unregistered_domain")}
    assert all(f["crtsh_url"] == f"https://crt.sh/?sha256={f['sha256'].upper()}" and f["evidence"]
               and f["severity"] for f in doc["findings"])
    env = first[0]["env"]
    assert env["CTSCAN_ALERT_COUNT"] == "2" and env["CTSCAN_ROUND"] == doc["round"]
    assert Path(env["CTSCAN_REPORT_DIR"]) == day.latest() and env["CTSCAN_ALERT_ID"] == doc["delivery"]

    _afternoon(day)  # a new certificate, and the CRL gains its revocation 20 hours after issuance
    assert main(day.argv("--alert-exec", hook)) == 0
    second = _calls(log)[1:]
    assert len(second) == 1
    assert _pairs(second[0]["doc"]["findings"]) == {(day.sha["early2"], "early_revocation")}
    first_round, second_round = day.rounds()
    assert day.latest() == second_round
    changes = pd.read_csv(second_round / "diff.csv")
    assert day.sha["early2"] in set(changes["sha256"])  # the round's diff against round 1 names it
    assert (second_round / "diff.md").read_text().strip()

    assert main(day.argv("--alert-exec", hook)) == 0  # nothing new: the same complete reports, no alert
    assert len(_calls(log)) == 2
    third_round = day.rounds()[-1]
    assert day.latest() == third_round
    assert _round_pairs(third_round) == _round_pairs(second_round)
    assert json.loads((third_round / "alerts.json").read_text())["new_pairs"] == {f"exec:{hook}": 0}


def test_alert_on_and_min_severity_narrow_what_alerts(day, tmp_path, monkeypatch):
    hook, log = _hook(tmp_path, monkeypatch)
    _morning(day)
    assert main(day.argv("--alert-exec", hook, "--alert-on", "ip_san,early_revocation",
                         "--min-severity", "info")) == 0
    assert _pairs(_calls(log)[0]["doc"]["findings"]) == _round_pairs(day.latest(), {"ip_san", "early_revocation"})
    assert (day.sha["plain"], "ip_san") in _pairs(_calls(log)[0]["doc"]["findings"])
    assert main(day.argv("--alert-exec", hook, "--alert-on", "no_such_code")) == 2


def test_a_failing_hook_leaves_its_alerts_pending_and_the_next_round_sends_them(day, tmp_path, monkeypatch, capsys):
    hook, log = _hook(tmp_path, monkeypatch)
    _morning(day)
    monkeypatch.setenv("HOOK_FAIL", "1")
    assert main(day.argv("--alert-exec", hook)) == 3
    assert "exited 7" in capsys.readouterr().err and not _calls(log)
    monkeypatch.delenv("HOOK_FAIL")
    _afternoon(day)
    assert main(day.argv("--alert-exec", hook)) == 0
    calls = _calls(log)
    # the first round's delivery first, as it was formed, then the second round's new alert
    assert [_pairs(c["doc"]["findings"]) for c in calls] == [
        _round_pairs(day.rounds()[0]), {(day.sha["early2"], "early_revocation")}]
    assert main(day.argv("--alert-exec", hook)) == 0
    assert len(_calls(log)) == 2


def test_rounds_over_crtsh_sql_alert_certificates_and_revocations_crtsh_gains_between_them(
        certwatch_pg: CertwatchDB, tmp_path, monkeypatch):  # noqa: F811
    hook, log = _hook(tmp_path, monkeypatch)
    db = certwatch_pg
    db.reset()
    ca = TestCA(name="Watched Issuing CA")
    ca_id = db.add_ca("C=XX, O=ctscan Test PKI, CN=Watched Issuing CA")
    # recent enough that every window is within --refresh-days: crt.sh still gains certificates for them
    day = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(days=3)

    def issue(serial: int, hours: int) -> str:
        cert = der(ca.issue(serial=serial, not_before=day + timedelta(hours=hours), days=90,
                            cn=f"h{serial}.example.com", dns=[f"h{serial}.example.com"]))
        db.add_certs(ca_id, [cert])
        return hashlib.sha256(cert).hexdigest()

    a, b = issue(100, 1), issue(101, 2)
    db.revoke(ca_id, 100, day + timedelta(hours=6), 1)
    argv = ["watch", "--once", "--source", "crtsh-sql", "--dsn", db.dsn, "--ca-id", str(ca_id),
            "--since", (day - timedelta(days=1)).isoformat(), "--refresh-revocations", "--registration", "off",
            "--store", str(tmp_path / "store.sqlite3"), "--cache", str(tmp_path / "cache"), "--retries", "1",
            "--out", str(tmp_path / "out"), "-q", "--alert-exec", hook]
    assert main(argv) == 0
    assert [_pairs(c["doc"]["findings"]) for c in _calls(log)] == [{(a, "early_revocation")}]
    assert _calls(log)[0]["doc"]["selection"]["ca_ids"] == [ca_id]

    c = issue(102, 30)  # a new certificate, revoked early; and crt.sh sees the stored b revoked too
    db.revoke(ca_id, 102, day + timedelta(hours=32), None)
    db.revoke(ca_id, 101, day + timedelta(hours=20), 4)
    assert main(argv) == 0
    assert [_pairs(x["doc"]["findings"]) for x in _calls(log)][1:] == [
        {(b, "early_revocation"), (c, "early_revocation")}]
    assert main(argv) == 0
    assert len(_calls(log)) == 2
    latest = (tmp_path / "out" / "latest").resolve()
    assert set(pd.read_parquet(latest / "certs.parquet")["sha256"]) == {a, b, c}


class _Receiver:
    """A loopback webhook receiver that answers 503 to its first POST, then accepts."""

    def __init__(self) -> None:
        self.posts: list[tuple[int, str, dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = 503 if not receiver.posts else 200
                receiver.posts.append((status, self.headers.get("Idempotency-Key", ""), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self) -> list[tuple[str, dict]]:
        return [(key, body) for status, key, body in self.posts if status == 200]


@pytest.mark.parametrize("retries", ["0", "2"])
def test_a_webhook_that_fails_once_gets_each_alert_once_in_the_next_attempt_or_round(day, retries, capsys):
    receiver = _Receiver()
    _morning(day)
    try:
        first = main(day.argv("--alert-webhook", receiver.url, "--retries", retries))
        if retries == "0":  # no retry within the round: partial, and it says why
            assert first == 3
            assert "503" in capsys.readouterr().err and not receiver.accepted()
        else:
            assert first == 0
        assert main(day.argv("--alert-webhook", receiver.url, "--retries", retries)) == 0
        assert main(day.argv("--alert-webhook", receiver.url, "--retries", retries)) == 0
    finally:
        receiver.server.shutdown()
    accepted = receiver.accepted()
    assert len(accepted) == 1
    key, body = accepted[0]
    assert _pairs(body["findings"]) == _round_pairs(day.latest())
    # the failed attempt and the accepted one are the same delivery: the same key and the same alert
    assert {k for _, k, _ in receiver.posts} == {key} == {body["delivery"]}


class _Mailbox:
    """An aiosmtpd handler keeping each mail (bytes, over TLS?, recipients) and each login."""

    def __init__(self) -> None:
        self.mails: list[tuple[bytes, bool, list[str]]] = []
        self.logins: list[tuple[bytes, bytes, bool]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802  aiosmtpd's hook name
        self.mails.append((envelope.content, session.ssl is not None, envelope.rcpt_tos))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        self.logins.append((auth_data.login, auth_data.password, session.ssl is not None))
        return AuthResult(success=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_mail_carries_the_rounds_new_findings_over_starttls(day, tmp_path, monkeypatch):
    server_ca = TestCA(name="ctscan SMTP Test CA")
    key = new_key()
    cert = server_ca.issue(serial=10, not_before=utc("2026-01-01T00:00"), days=3650, cn="localhost",
                           dns=["localhost"], ips=["127.0.0.1"], key=key)
    (tmp_path / "smtp.pem").write_bytes(pem(cert) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "trust.pem").write_bytes(server_ca.cert_pem())
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "trust.pem"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "smtp.pem")
    mailbox = _Mailbox()
    port = _free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
                            authenticator=mailbox.authenticate, auth_require_tls=True, ready_timeout=10)
    monkeypatch.setenv("CTSCAN_SMTP_USER", "watcher")
    monkeypatch.setenv("CTSCAN_SMTP_PASSWORD", "s3cret")
    controller.start()
    try:
        _morning(day)
        argv = day.argv("--alert-email", "pki-oversight@example.org", "--smtp", f"127.0.0.1:{port}")
        assert main(argv) == 0
        _afternoon(day)
        assert main(argv) == 0
        assert main(argv) == 0  # nothing new: no mail
    finally:
        controller.stop()
    assert len(mailbox.mails) == 2
    assert all(tls and rcpt == ["pki-oversight@example.org"] for _, tls, rcpt in mailbox.mails)
    assert mailbox.logins == [(b"watcher", b"s3cret", True)] * 2  # credentials only inside TLS
    second_round = day.rounds()[1]
    mail = email.message_from_bytes(mailbox.mails[1][0], policy=email.policy.default)
    text = mail.get_body(("plain",)).get_content()
    assert f"sha256 {day.sha['early2']}" in text and day.sha["early1"] not in text
    assert (second_round / "diff.md").read_text().strip().splitlines()[0] in text
    attachments = {part.get_filename(): part.get_content() for part in mail.iter_attachments()}
    assert attachments["suspects.csv"] == (second_round / "suspects.csv").read_text()
    sent = json.loads(attachments["alert.json"])
    assert _pairs(sent["findings"]) == _round_pairs(second_round) - _round_pairs(day.rounds()[0])


def _ctscan(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scanner.cli", *argv], cwd=REPO, env=env, capture_output=True,
                          timeout=240)


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_round_killed_while_alerting_then_rerun_neither_loses_nor_repeats_an_alert(day, tmp_path, monkeypatch,
                                                                                   when):
    hook, log = _hook(tmp_path, monkeypatch)
    _morning(day)
    env = {**os.environ, "KILL_PARENT": when}
    killed = _ctscan(day.argv("--alert-exec", hook), env)
    assert killed.returncode == -signal.SIGKILL
    env.pop("KILL_PARENT")
    assert _ctscan(day.argv("--alert-exec", hook), env).returncode == 0
    assert _ctscan(day.argv("--alert-exec", hook), env).returncode == 0
    calls = _calls(log)
    by_delivery: dict[str, set] = {}
    for call in calls:
        by_delivery.setdefault(call["doc"]["delivery"], set()).update(_pairs(call["doc"]["findings"]))
    # every alert arrived, each in exactly one delivery; a delivery accepted just before the kill
    # is sent again with the same id and content, so the receiver can tell it already has it
    assert len(by_delivery) == 1
    assert set().union(*by_delivery.values()) == _round_pairs(day.latest())
    assert len(calls) == (1 if when == "before" else 2)
    assert all(call["doc"] == calls[0]["doc"] for call in calls)


def test_ctrl_c_during_a_round_of_watch_every_ends_after_that_round(day, tmp_path, monkeypatch):
    hook, log = _hook(tmp_path, monkeypatch)
    _morning(day)
    argv = day.argv("--alert-exec", hook)
    argv[argv.index("--once")] = "--every"
    argv.insert(argv.index("--every") + 1, "6h")
    done = _ctscan(argv, {**os.environ, "INTERRUPT_PARENT": "1"})  # the hook presses Ctrl-C mid-round
    assert done.returncode == 0, done.stderr
    assert len(day.rounds()) == 1 and (day.latest() / "alerts.json").is_file()
    assert _pairs(_calls(log)[0]["doc"]["findings"]) == _round_pairs(day.latest())


def test_watch_takes_every_scan_flag_and_its_own(capsys):
    assert main(["watch", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--once", "--every", "--alert-exec", "--alert-webhook", "--alert-email", "--smtp", "--alert-on",
                 "--min-severity", "--source", "--crl", "--out", "--ca-id", "--store", "--issuer-cert",
                 "--check-revocation", "--offline", "--window"):
        assert flag in text, flag


@pytest.mark.parametrize("extra", [
    [],  # neither --once nor --every
    ["--once", "--every", "1h"],
    ["--every", "0m"],
    ["--every", "soon"],
    ["--once", "--alert-email", "ca@example.org"],  # no --smtp
    ["--once", "--min-severity", "urgent"],
    ["--once", "--alert-webhook", "ftp://example.org/"],
])
def test_watch_usage_errors_exit_2_with_a_message(extra, tmp_path, capsys):
    from tests.conftest import SAMPLE

    assert main(["watch", str(SAMPLE / "certs"), "--out", str(tmp_path / "out"), *extra]) == 2
    assert "error" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_watch_every_runs_round_after_round_each_diffed_against_the_one_before(day, tmp_path, monkeypatch):
    from scanner.cli import build_parser, config_from_args
    from scanner.control.watch import RoundResult, WatchOptions, watch

    hook, log = _hook(tmp_path, monkeypatch)
    _morning(day)
    args = build_parser().parse_args(day.argv("--alert-exec", hook))
    stop = threading.Event()
    seen: list[RoundResult] = []

    def after(result: RoundResult) -> None:
        seen.append(result)
        if len(seen) == 1:
            _afternoon(day)  # issued while the control sleeps between rounds
        else:
            stop.set()

    options = WatchOptions(every=timedelta(seconds=0.1), alert_exec=(hook,))
    assert watch(config_from_args(args), options, stop=stop, on_round=after) == 0
    assert [r.folder for r in seen] == day.rounds() and day.latest() == seen[1].folder
    assert seen[1].alerts["previous_round"] == seen[0].folder.name
    assert day.sha["early2"] in set(pd.read_csv(seen[1].folder / "diff.csv")["sha256"])
    assert [_pairs(c["doc"]["findings"]) for c in _calls(log)][1:] == [{(day.sha["early2"], "early_revocation")}]


def test_a_round_killed_while_writing_its_reports_then_rerun_alerts_everything_once(day, tmp_path, monkeypatch):
    hook, log = _hook(tmp_path, monkeypatch)
    _morning(day)
    argv = [sys.executable, "-m", "scanner.cli", *day.argv("--alert-exec", hook)]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # the round's folder appears when its reports start being written: kill -9 right then
        while proc.poll() is None and not (day.out.exists() and any(p.is_dir() for p in day.out.iterdir())):
            time.sleep(0.005)
        proc.kill()
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL and not _calls(log)
    assert _ctscan(day.argv("--alert-exec", hook), dict(os.environ)).returncode == 0
    assert _ctscan(day.argv("--alert-exec", hook), dict(os.environ)).returncode == 0
    calls = _calls(log)
    assert len(calls) == 1
    assert _pairs(calls[0]["doc"]["findings"]) == _round_pairs(day.latest())
    assert (day.latest() / "alerts.json").is_file()
