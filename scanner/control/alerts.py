"""Alerts of `ctscan watch`: each new (certificate, finding code) pair sent once per channel.

A pair is recorded pending (in a delivery with its own id) before anything is sent, and marked
delivered right after its channel accepted it, each in one store transaction. A delivery that
fails stays pending and is sent again, with the same id and content, in the next round; a round
killed after the channel accepted but before the store recorded it sends that delivery again
with the same id, which the receiver can drop (Idempotency-Key, CTSCAN_ALERT_ID, Message-ID).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import smtplib
import ssl
import subprocess
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from scanner.core.config import Config, ConfigError, server_problem
from scanner.core.net import FetchError, RateLimiter, new_session, parse_host_port, request_with_retries
from scanner.core.records import FINDING_CODES, LINT_PREFIX, crtsh_url, is_lint_code
from scanner.sources.store import CertStore, PendingDelivery

log = logging.getLogger(__name__)

SCHEMA = "ctscan-alert/1"
SEVERITIES = ("info", "low", "medium", "high")
#: Alerted whatever their severity by default: the Camerfirma promise (every revocation within a week).
ALWAYS_BY_DEFAULT = frozenset({"early_revocation"})
WEBHOOK_RATE = 1.0  # POSTs per second to one receiver
WEBHOOK_OK = frozenset({200, 201, 202, 204})
EXEC_TIMEOUT = 600.0  # seconds a hook may run before its delivery counts as failed
SMTP_PORT = 25
SMTPS_PORT = 465  # RFC 8314 submission over implicit TLS


class DeliveryError(Exception):
    """A channel did not accept a delivery; the message says why."""


LINT_ANY = LINT_PREFIX + "*"  # --alert-on lint:* = every lint finding, whatever pkilint's code


def parse_codes(text: str) -> frozenset[str]:
    """--alert-on 'a,b' -> the codes: each one FINDING_CODES knows, a lint:<pkilint code>, or lint:* for every
    lint finding (ConfigError naming the unknown ones)."""
    codes = frozenset(c.strip() for c in text.split(",") if c.strip())
    unknown = sorted(c for c in codes - set(FINDING_CODES) if not is_lint_code(c))
    if unknown:
        raise ConfigError(f"--alert-on: unknown finding code(s) {', '.join(unknown)}; "
                          f"known: {', '.join(FINDING_CODES)}, lint:<pkilint code>, lint:*")
    if not codes:
        raise ConfigError("--alert-on needs at least one finding code")
    return codes


@dataclass(frozen=True)
class AlertPolicy:
    """Which findings alert: by default every code at high and every early_revocation; flags narrow it."""

    codes: frozenset[str] = frozenset()  # --alert-on; empty = not narrowed by code
    min_severity: str | None = None  # --min-severity; None = not narrowed by severity

    def __post_init__(self) -> None:
        if self.min_severity is not None and self.min_severity not in SEVERITIES:
            raise ConfigError(f"--min-severity must be one of {', '.join(SEVERITIES)}, not {self.min_severity!r}")

    def selects(self, findings: pd.DataFrame) -> pd.Series:
        """A boolean mask of the findings (code and severity columns) that alert."""
        codes, severity = findings["code"].astype(str), findings["severity"].astype(str)
        if not self.codes and self.min_severity is None:
            return (severity == "high") | codes.isin(ALWAYS_BY_DEFAULT)
        mask = pd.Series(True, index=findings.index)
        if self.codes:
            chosen = codes.isin(self.codes)
            if LINT_ANY in self.codes:
                chosen |= codes.str.startswith(LINT_PREFIX)
            mask &= chosen
        if self.min_severity is not None:
            mask &= severity.isin(SEVERITIES[SEVERITIES.index(self.min_severity):])
        return mask


def alert_findings(findings: pd.DataFrame, policy: AlertPolicy,
                   certs: pd.DataFrame | None = None) -> list[dict[str, str]]:
    """The findings that alert, one per (sha256, code) pair, as the alert JSON's finding objects.

    With certs, each finding also names its certificate's precertificate (precert_sha256, "" if none): a
    precertificate alerted before its certificate was logged is the same issuance, not a new one.
    """
    if findings.empty:
        return []
    columns = ["sha256", "code", "severity", "evidence", "related_sha256"]
    chosen = findings.loc[policy.selects(findings), columns].astype("object").fillna("").astype(str)
    # several rows of one pair (one per SAN name): one alert carrying each distinct evidence once
    chosen = chosen.drop_duplicates(["sha256", "code", "evidence"])
    pairs = chosen.groupby(["sha256", "code"], sort=True).agg(
        severity=("severity", "first"),
        evidence=("evidence", lambda s: "; ".join(e for e in s if e)),
        related_sha256=("related_sha256", "max"),  # the pair's paired certificate, '' only when it has none
    ).reset_index()
    pairs.insert(1, "crtsh_url", [crtsh_url(s) for s in pairs["sha256"]])
    if certs is not None and "precert_sha256" in certs:
        twins = certs.loc[certs["precert_sha256"].fillna("") != "", ["sha256", "precert_sha256"]].astype("object")
        alias = dict(zip(twins["sha256"], twins["precert_sha256"]))
        pairs["precert_sha256"] = [alias.get(h, "") for h in pairs["sha256"]]
    return pairs.to_dict("records")


def selection(config: Config) -> dict[str, Any]:
    """The CA selection a round scanned, for the alert JSON."""
    return {"source": config.source, "ca_ids": list(config.ca_ids), "ca_names": list(config.ca_names),
            "identities": list(config.identities), "orgs": list(config.orgs), "logs": list(config.logs),
            "issuer_certs": [str(p) for p in config.issuer_certs], "paths": [str(p) for p in config.paths]}


def alert_document(pending: PendingDelivery, chosen: dict[str, Any]) -> dict[str, Any]:
    """The alert JSON (schema ctscan-alert/1) of one delivery."""
    return {"schema": SCHEMA, "delivery": pending.delivery, "round": pending.round, "selection": chosen,
            "findings": pending.findings}


@dataclass(frozen=True)
class Delivery:
    """What a channel is handed: the delivery id, its alert JSON and the round's report folder."""

    id: str
    document: dict[str, Any]
    report_dir: Path

    @property
    def body(self) -> bytes:
        """The alert JSON as UTF-8 bytes."""
        return json.dumps(self.document, indent=2, sort_keys=True).encode()


class Channel(Protocol):
    """Somewhere alerts go; key names it in the store."""

    key: str

    def send(self, delivery: Delivery) -> None:
        """Deliver, or raise DeliveryError."""


@dataclass
class ExecChannel:
    """--alert-exec CMD: CMD (split as a shell would, run without one) with the alert JSON on stdin."""

    command: str
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = "exec:" + self.command

    def send(self, delivery: Delivery) -> None:
        """Run the command; a non-zero exit or a timeout is a failed delivery."""
        env = {**os.environ, "CTSCAN_ALERT_ID": delivery.id,
               "CTSCAN_ALERT_COUNT": str(len(delivery.document["findings"])),
               "CTSCAN_ROUND": delivery.document["round"], "CTSCAN_REPORT_DIR": str(delivery.report_dir)}
        try:
            done = subprocess.run(shlex.split(self.command), input=delivery.body, env=env, capture_output=True,
                                  timeout=EXEC_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DeliveryError(f"--alert-exec {self.command!r}: {exc}") from exc
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip()[-200:]
            raise DeliveryError(f"--alert-exec {self.command!r} exited {done.returncode}"
                                + (f": {tail}" if tail else ""))


@dataclass
class WebhookChannel:
    """--alert-webhook URL: the alert JSON POSTed, retried and rate-limited, one Idempotency-Key per delivery."""

    url: str
    retries: int = 4
    timeout: float = 10.0
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = "webhook:" + self.url
        self._session = new_session()
        self._limiter = RateLimiter(WEBHOOK_RATE)

    def send(self, delivery: Delivery) -> None:
        """POST the JSON; a 2xx accepts it, anything else after the retries is a failed delivery."""
        try:
            request_with_retries(self._session, "POST", self.url, limiter=self._limiter, retries=self.retries,
                                 timeout=self.timeout, data=delivery.body, ok_statuses=WEBHOOK_OK,
                                 headers={"Content-Type": "application/json", "Idempotency-Key": delivery.id})
        except FetchError as exc:
            raise DeliveryError(f"--alert-webhook: {exc}") from exc


@dataclass(frozen=True)
class SmtpServer:
    """Where --smtp points: host, port, and whether TLS starts at once (smtps://, port 465) or by STARTTLS."""

    host: str
    port: int
    implicit_tls: bool

    @classmethod
    def parse(cls, text: str) -> SmtpServer:
        """'[smtp://|smtps://]HOST[:PORT]' -> the server (ConfigError on anything else).

        smtps:// is implicit TLS, port 465 by default; without a scheme, port 25 by default and port 465
        means implicit TLS too; smtp:// is never implicit TLS (STARTTLS when offered, whatever the port).
        """
        value = text.strip()
        scheme, sep, rest = value.partition("://")
        if not sep:
            scheme, rest = "", value
        scheme = scheme.lower()
        if scheme not in ("", "smtp", "smtps"):
            raise ConfigError(f"--smtp: the scheme must be smtp:// or smtps:// (implicit TLS), not {scheme}://")
        rest = rest.rstrip("/")
        problem = server_problem(rest) if rest else f"no host in {text!r}"
        if problem:
            raise ConfigError(f"--smtp: {problem}")
        host, port = parse_host_port(rest, SMTPS_PORT if scheme == "smtps" else SMTP_PORT)
        return cls(host, port, scheme == "smtps" or (not scheme and port == SMTPS_PORT))


@dataclass
class EmailChannel:
    """--alert-email ADDR --smtp [smtps://]HOST[:PORT]: a plain-text mail over TLS when it can, the CSV attached.

    TLS is implicit (smtps://, or port 465) or by STARTTLS when the server offers it; either way the
    server's certificate is verified against the system's CAs, or SSL_CERT_FILE's.
    """

    to: str
    smtp: str
    timeout: float = 10.0
    key: str = field(init=False)
    server: SmtpServer = field(init=False)

    def __post_init__(self) -> None:
        self.key = "email:" + self.to
        self.server = SmtpServer.parse(self.smtp)

    def message(self, delivery: Delivery) -> EmailMessage:
        """The mail of one delivery: the new findings, the round's diff.md, suspects.csv and the JSON attached."""
        doc = delivery.document
        findings = doc["findings"]
        msg = EmailMessage()
        msg["Subject"] = f"ctscan: {len(findings)} new finding(s), round {doc['round']}"
        msg["From"] = os.environ.get("CTSCAN_SMTP_FROM") or "ctscan@localhost"
        msg["To"] = self.to
        msg["Message-ID"] = f"<{delivery.id}@ctscan>"
        lines = [f"{len(findings)} new finding(s) in the ctscan watch round of {doc['round']} "
                 f"(source {doc['selection']['source']}); reports in {delivery.report_dir}.", ""]
        for f in findings:
            lines.append(f"- {f['code']} ({f['severity']}): {f['crtsh_url'] or f['sha256']}")
            lines.append(f"  sha256 {f['sha256']}")
            if f["evidence"]:
                lines.append(f"  {f['evidence']}")
            if f["related_sha256"]:
                lines.append(f"  paired with {f['related_sha256']}")
        diff_md = delivery.report_dir / "diff.md"
        if diff_md.is_file():
            lines += ["", "Changes since the previous round (diff.md):", "", diff_md.read_text(encoding="utf-8")]
        msg.set_content("\n".join(lines) + "\n")
        suspects = delivery.report_dir / "suspects.csv"
        if suspects.is_file():
            msg.add_attachment(suspects.read_bytes(), maintype="text", subtype="csv", filename="suspects.csv")
        msg.add_attachment(delivery.body, maintype="application", subtype="json", filename="alert.json")
        return msg

    def send(self, delivery: Delivery) -> None:
        """Send the mail; credentials (CTSCAN_SMTP_USER / CTSCAN_SMTP_PASSWORD) only over TLS."""
        server = self.server
        user, password = os.environ.get("CTSCAN_SMTP_USER"), os.environ.get("CTSCAN_SMTP_PASSWORD", "")
        where = f"--alert-email {self.to} via {self.smtp}"
        context = ssl.create_default_context()  # verifies the server: the system's CAs, or SSL_CERT_FILE's
        greeted = False
        try:
            if server.implicit_tls:
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(server.host, server.port, timeout=self.timeout,
                                                      context=context)
            else:
                smtp = smtplib.SMTP(server.host, server.port, timeout=self.timeout)
            greeted = True
            with smtp:
                smtp.ehlo()
                tls = server.implicit_tls
                if not tls and smtp.has_extn("starttls"):
                    smtp.starttls(context=context)
                    smtp.ehlo()
                    tls = True
                if user:
                    if not tls:
                        raise DeliveryError(f"--smtp {self.smtp} offers no STARTTLS: CTSCAN_SMTP_USER's "
                                            "password is not sent in the clear (smtps://HOST for implicit TLS)")
                    smtp.login(user, password)
                smtp.send_message(self.message(delivery))
        except ssl.SSLCertVerificationError as exc:
            raise DeliveryError(f"{where}: the server's TLS certificate is not trusted ({exc.verify_message}); "
                                "trust its CA with SSL_CERT_FILE=PEM, or fix the server's chain") from exc
        except ssl.SSLError as exc:
            hint = ""
            if server.implicit_tls and not greeted and exc.reason in _NOT_TLS:
                hint = (f"; port {server.port} does not start with TLS: for STARTTLS give "
                        f"--smtp smtp://{_host_port(server.host, server.port)}")
            raise DeliveryError(f"{where}: TLS failed: {exc}{hint}") from exc
        except (TimeoutError, smtplib.SMTPServerDisconnected) as exc:
            hint = ""
            if not server.implicit_tls and not greeted:  # no greeting: perhaps it waits for a TLS handshake
                hint = (" (a server that speaks TLS at once sends no greeting: for SMTPS give "
                        f"--smtp smtps://{_host_port(server.host, server.port)})")
            raise DeliveryError(f"{where}: {exc or 'timed out'}{hint}") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"{where}: {exc}") from exc


#: OpenSSL's reasons for a TLS handshake answered by something that is not TLS (an SMTP greeting)
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE"})


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class AlertOutcome:
    """What a round's alerting did: new pairs and deliveries sent per channel, and each failure."""

    new: dict[str, int] = field(default_factory=dict)
    delivered: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """For the round's alerts.json."""
        return {"new_pairs": self.new, "delivered_pairs": self.delivered, "failures": self.failures}


def send_alerts(store: CertStore, channels: Iterable[Channel], round_time: str, findings: Sequence[dict[str, str]],
                report_dir: Path, chosen: dict[str, Any]) -> AlertOutcome:
    """Record this round's new pairs per channel, then send every pending delivery of each channel."""
    outcome = AlertOutcome()
    for channel in channels:
        outcome.new[channel.key] = store.alert_record(channel.key, round_time, uuid.uuid4().hex, findings)
        outcome.delivered[channel.key] = 0
        for pending in store.alert_pending(channel.key):
            delivery = Delivery(pending.delivery, alert_document(pending, chosen), report_dir)
            try:
                channel.send(delivery)
            except DeliveryError as exc:
                store.alert_failed(pending.delivery, str(exc))
                outcome.failures.append(f"{exc} ({len(pending.findings)} alert(s) stay pending, attempt "
                                        f"{pending.attempts + 1})")
                log.warning("alert not delivered: %s", exc)
                break  # the channel is down: its later deliveries wait for the next round, in order
            store.alert_delivered(pending.delivery)
            outcome.delivered[channel.key] += len(pending.findings)
    return outcome
