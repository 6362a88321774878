"""`ctscan watch --alert-email` over SMTPS (implicit TLS, RFC 8314): a real aiosmtpd server on loopback."""

from __future__ import annotations

import email
import email.policy
import json
import ssl
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography.hazmat.primitives import serialization

from scanner.cli import main
from scanner.control.alerts import SmtpServer
from scanner.core.config import ConfigError
from tests.synth import TestCA, new_key, pem, utc
from tests.test_watch import Day, _afternoon, _morning, _pairs, _round_pairs

pytestmark = pytest.mark.slow

TO = "pki-oversight@example.org"


class _Mailbox:
    """An aiosmtpd handler keeping each mail (bytes, over TLS?, recipients) and each login (user, password, TLS?).

    With implicit TLS aiosmtpd's session knows nothing of TLS (it saw no STARTTLS), so TLS is read off the
    connection itself.
    """

    def __init__(self) -> None:
        self.mails: list[tuple[bytes, bool, list[str]]] = []
        self.logins: list[tuple[bytes, bytes, bool]] = []

    @staticmethod
    def _tls(server) -> bool:
        return server.transport.get_extra_info("ssl_object") is not None

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802  aiosmtpd's hook name
        self.mails.append((envelope.content, self._tls(server), envelope.rcpt_tos))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        self.logins.append((auth_data.login, auth_data.password, self._tls(server)))
        return AuthResult(success=True)


class _LoopbackController(Controller):
    """aiosmtpd's Controller bound to port 0: the port the system chose is read back before its readiness probe."""

    def _trigger_server(self) -> None:
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class _Smtps:
    """An SMTPS server (TLS from the first byte) on 127.0.0.1 with a certificate of its own test CA."""

    def __init__(self, tmp_path: Path) -> None:
        self.ca = TestCA(name="ctscan SMTPS Test CA")
        key = new_key()
        cert = self.ca.issue(serial=11, not_before=utc("2026-01-01T00:00"), days=3650, cn="localhost",
                             dns=["localhost"], ips=["127.0.0.1"], key=key)
        chain = tmp_path / "smtps.pem"
        chain.write_bytes(pem(cert) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self.trust = tmp_path / "smtps-ca.pem"  # what a client must trust to talk to this server
        self.trust.write_bytes(self.ca.cert_pem())
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(chain)
        self.mailbox = _Mailbox()
        # auth_require_tls=False: aiosmtpd counts only STARTTLS as TLS; this connection is TLS throughout
        self.controller = _LoopbackController(self.mailbox, hostname="127.0.0.1", port=0, ssl_context=context,
                                              authenticator=self.mailbox.authenticate, auth_require_tls=False,
                                              ready_timeout=10)

    @property
    def url(self) -> str:
        return f"smtps://127.0.0.1:{self.controller.port}"

    def __enter__(self) -> _Smtps:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


@pytest.fixture()
def day(tmp_path: Path) -> Day:
    return Day(tmp_path)


@pytest.fixture()
def smtps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CTSCAN_SMTP_USER", "watcher")
    monkeypatch.setenv("CTSCAN_SMTP_PASSWORD", "s3cret")
    with _Smtps(tmp_path) as server:
        yield server


def _mail(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def _attachments(mail: email.message.EmailMessage) -> dict[str, str]:
    return {part.get_filename(): part.get_content() for part in mail.iter_attachments()}


def test_the_mail_carries_the_rounds_new_findings_over_smtps(day, smtps, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(smtps.trust))
    argv = day.argv("--alert-email", TO, "--smtp", smtps.url)
    _morning(day)
    assert main(argv) == 0
    _afternoon(day)
    assert main(argv) == 0
    assert main(argv) == 0  # nothing new: no mail
    mails = smtps.mailbox.mails
    assert len(mails) == 2
    assert all(tls and rcpt == [TO] for _, tls, rcpt in mails)
    assert smtps.mailbox.logins == [(b"watcher", b"s3cret", True)] * 2
    first_round, second_round, _ = day.rounds()
    first, second = (_mail(raw) for raw, _, _ in mails)
    assert _pairs(json.loads(_attachments(first)["alert.json"])["findings"]) == _round_pairs(first_round)
    sent = json.loads(_attachments(second)["alert.json"])
    assert _pairs(sent["findings"]) == _round_pairs(second_round) - _round_pairs(first_round) == {
        (day.sha["early2"], "early_revocation")}
    assert second["Message-ID"] == f"<{sent['delivery']}@ctscan>"
    text = second.get_body(("plain",)).get_content()
    assert f"sha256 {day.sha['early2']}" in text and day.sha["early1"] not in text
    assert (second_round / "diff.md").read_text().strip().splitlines()[0] in text
    assert _attachments(second)["suspects.csv"] == (second_round / "suspects.csv").read_text()


def test_an_smtps_server_the_client_does_not_trust_gets_nothing_until_it_is_trusted_then_everything_once(
        day, smtps, tmp_path, monkeypatch, capsys):
    stranger = tmp_path / "another-ca.pem"  # the only CA trusted: not the one that certified the server
    stranger.write_bytes(TestCA(name="Some Other CA").cert_pem())
    monkeypatch.setenv("SSL_CERT_FILE", str(stranger))
    argv = day.argv("--alert-email", TO, "--smtp", smtps.url)
    _morning(day)
    assert main(argv) == 3  # partial: the alert is not delivered
    err = capsys.readouterr().err
    assert "TLS certificate is not trusted (unable to get local issuer certificate)" in err and "SSL_CERT_FILE" in err
    assert smtps.mailbox.mails == [] and smtps.mailbox.logins == []  # no password went to it either
    failures = json.loads((day.latest() / "alerts.json").read_text())["failures"]
    assert len(failures) == 1 and "not trusted" in failures[0] and "stay pending" in failures[0]

    monkeypatch.setenv("SSL_CERT_FILE", str(smtps.trust))
    _afternoon(day)
    assert main(argv) == 0
    assert main(argv) == 0
    first_round, second_round, _ = day.rounds()
    mails = [_mail(raw) for raw, _, _ in smtps.mailbox.mails]
    # the pending delivery of round 1 first, as it was formed, then round 2's own; each alert once
    assert [_pairs(json.loads(_attachments(m)["alert.json"])["findings"]) for m in mails] == [
        _round_pairs(first_round), {(day.sha["early2"], "early_revocation")}]
    assert len({m["Message-ID"] for m in mails}) == 2


def test_smtps_to_a_server_that_does_not_start_with_tls_fails_saying_so_and_the_right_scheme_delivers(
        day, monkeypatch, capsys):
    monkeypatch.delenv("CTSCAN_SMTP_USER", raising=False)
    mailbox = _Mailbox()
    plain = _LoopbackController(mailbox, hostname="127.0.0.1", port=0, ready_timeout=10)  # no TLS at all
    plain.start()
    try:
        _morning(day)
        assert main(day.argv("--alert-email", TO, "--smtp", f"smtps://127.0.0.1:{plain.port}")) == 3
        err = capsys.readouterr().err
        assert "does not start with TLS" in err and f"--smtp smtp://127.0.0.1:{plain.port}" in err
        assert mailbox.mails == []
        assert main(day.argv("--alert-email", TO, "--smtp", f"smtp://127.0.0.1:{plain.port}")) == 0
    finally:
        plain.stop()
    assert len(mailbox.mails) == 1  # the pending alert, sent once the scheme was right
    assert _pairs(json.loads(_attachments(_mail(mailbox.mails[0][0]))["alert.json"])["findings"]) == \
        _round_pairs(day.rounds()[0])


def test_starttls_mode_to_an_smtps_server_times_out_and_says_smtps_may_be_meant(day, smtps, monkeypatch, capsys):
    monkeypatch.setenv("SSL_CERT_FILE", str(smtps.trust))
    _morning(day)
    plain_url = smtps.url.replace("smtps://", "smtp://")
    assert main(day.argv("--alert-email", TO, "--smtp", plain_url, "--timeout", "1")) == 3
    assert f"--smtp {smtps.url}" in capsys.readouterr().err
    assert smtps.mailbox.mails == [] and smtps.mailbox.logins == []
    assert main(day.argv("--alert-email", TO, "--smtp", smtps.url)) == 0
    assert [_pairs(json.loads(_attachments(_mail(raw))["alert.json"])["findings"])
            for raw, _, _ in smtps.mailbox.mails] == [_round_pairs(day.rounds()[0])]


@pytest.mark.parametrize("text,server", [
    ("smtps://mail.example.org", SmtpServer("mail.example.org", 465, True)),
    ("SMTPS://mail.example.org:2465", SmtpServer("mail.example.org", 2465, True)),
    ("mail.example.org:465", SmtpServer("mail.example.org", 465, True)),  # port 465 is SMTPS without a scheme
    ("mail.example.org", SmtpServer("mail.example.org", 25, False)),
    ("mail.example.org:587", SmtpServer("mail.example.org", 587, False)),
    ("smtp://mail.example.org:465", SmtpServer("mail.example.org", 465, False)),  # said plainly: STARTTLS
    ("smtps://[::1]", SmtpServer("::1", 465, True)),
])
def test_smtp_server_text_says_host_port_and_whether_tls_is_implicit(text, server):
    assert SmtpServer.parse(text) == server


@pytest.mark.parametrize("text", ["imaps://mail.example.org", "smtps://", "smtps://mail.example.org:0",
                                  "mail.example.org:smtps"])
def test_an_unusable_smtp_server_is_a_usage_error(text, tmp_path, capsys):
    with pytest.raises(ConfigError):
        SmtpServer.parse(text)
    assert main(["watch", "--once", str(tmp_path), "--out", str(tmp_path / "out"), "--alert-email", TO,
                 "--smtp", text]) == 2
    assert "--smtp" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
