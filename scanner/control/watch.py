"""`ctscan watch`: scan rounds into dated folders, a `latest` link, the diff against the previous round, alerts."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from scanner.control.alerts import (
    AlertPolicy,
    Channel,
    EmailChannel,
    ExecChannel,
    WebhookChannel,
    alert_findings,
    selection,
    send_alerts,
)
from scanner.control.diff import ScanDiff, diff_scans, write_diff
from scanner.core.atomic import write_text_atomic
from scanner.core.config import Config
from scanner.core.times import iso
from scanner.pipeline import ScanResult, run
from scanner.sources.store import CertStore

log = logging.getLogger(__name__)

FOLDER_FORMAT = "%Y-%m-%dT%H-%M-%SZ"
LATEST = "latest"


@dataclass(frozen=True)
class WatchOptions:
    """How often to scan and where alerts go (the scan itself is the Config)."""

    every: timedelta | None = None  # None = one round (--once)
    policy: AlertPolicy = AlertPolicy()
    alert_exec: tuple[str, ...] = ()
    alert_webhooks: tuple[str, ...] = ()
    alert_emails: tuple[str, ...] = ()
    smtp: str | None = None  # HOST[:PORT], needed by alert_emails

    def channels(self, config: Config) -> list[Channel]:
        """The alert channels, in the order they are tried."""
        out: list[Channel] = [ExecChannel(c) for c in self.alert_exec]
        out += [WebhookChannel(u, retries=config.retries, timeout=config.timeout) for u in self.alert_webhooks]
        out += [EmailChannel(a, self.smtp or "", timeout=config.timeout) for a in self.alert_emails]
        return out


@dataclass
class RoundResult:
    """One round: its folder, exit status (0 done, 3 partial), the scan summary and the alerting."""

    folder: Path
    status: int
    summary: dict[str, Any]
    alerts: dict[str, Any] = field(default_factory=dict)
    partial_reasons: list[str] = field(default_factory=list)


def round_folder(base: Path, now: datetime) -> Path:
    """A new folder base/<UTC time> (a suffix when a round already took that second)."""
    stamp = now.astimezone(timezone.utc).strftime(FOLDER_FORMAT)
    folder, n = base / stamp, 1
    while folder.exists():
        folder, n = base / f"{stamp}-{n}", n + 1
    return folder


def previous_round(base: Path) -> Path | None:
    """The folder `latest` points at, when it points at a finished round."""
    link = base / LATEST
    target = link.resolve() if link.is_symlink() else None
    return target if target is not None and (target / "summary.json").is_file() else None


def point_latest(base: Path, folder: Path) -> None:
    """Make base/latest point at folder, atomically: a reader sees the old round or the new one."""
    tmp = base / f".{LATEST}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(folder.name, target_is_directory=True)
    os.replace(tmp, base / LATEST)


def run_round(config: Config, options: WatchOptions, *, now: datetime | None = None) -> RoundResult:
    """One round: scan into a new dated folder, diff against the previous round, point latest at it, alert."""
    now = now or datetime.now(timezone.utc)
    base = Path(config.out_dir)
    base.mkdir(parents=True, exist_ok=True)
    previous = previous_round(base)
    folder = round_folder(base, now)
    result = run(replace(config, out_dir=folder), previous=previous, rounds=True)
    reasons = list(result.summary.get("partial_reasons") or [])
    if previous is not None:
        try:
            write_diff(_diff_with(previous, folder, result), folder)
        except Exception as exc:  # noqa: BLE001  a diff that fails must not stop latest moving and alerts going
            log.debug("diff failed", exc_info=True)
            reasons.append(f"no diff against the previous round {previous.name}: {exc}")
    point_latest(base, folder)

    channels = options.channels(config)
    findings = alert_findings(result.findings, options.policy, result.certs)
    outcome = None
    if channels:
        with CertStore(config.store_file) as store:
            outcome = send_alerts(store, channels, iso(now), findings, folder, selection(config))
        reasons += [f"alert not delivered: {f}" for f in outcome.failures]
    alerts = {"round": iso(now), "previous_round": previous.name if previous else None,
              "alerting_findings": len(findings), **(outcome.as_dict() if outcome else {"channels": 0})}
    write_text_atomic(folder / "alerts.json", json.dumps(alerts, indent=2, sort_keys=True) + "\n")
    return RoundResult(folder, 3 if reasons else 0, result.summary, alerts, reasons)


def _diff_with(previous: Path, folder: Path, result: ScanResult) -> ScanDiff:
    """The diff against the previous round; a round that reused its tables compares the findings' certificates.

    Those tables are the previous round's own, so only time can have changed anything: certificates expired.
    """
    if result.summary.get("reused_from") != previous.name:
        return diff_scans(previous, folder)
    findings, certs = result.findings, result.certs  # the certificates with findings, nothing else
    rates = (result.rates, result.rates)  # of the whole selection, which certs is not
    return diff_scans({"certs": certs, "findings": findings, "summary": _summary_of(previous)},
                      {"certs": certs, "findings": findings, "summary": _summary_of(folder)}, rates=rates)


def _summary_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "summary.json").read_text())


@contextmanager
def _stop_on_signal(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C or SIGTERM during a round: finish it, then stop; a second Ctrl-C interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; a notebook's thread stops through `stop`
        return

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        log.warning("stopping after this round (Ctrl-C again to interrupt it)")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def watch(config: Config, options: WatchOptions, *, stop: threading.Event | None = None,
          on_round: Callable[[RoundResult], None] | None = None) -> int:
    """Run rounds (one, or one every options.every until stopped); the last round's exit status."""
    stop = stop or threading.Event()
    with _stop_on_signal(stop):
        while True:
            try:
                result = run_round(config, options)
                status = result.status
                if on_round is not None:
                    on_round(result)
            except Exception as exc:  # a round that fails is said; the next round tries again
                if options.every is None:
                    raise
                log.debug("round failed", exc_info=True)
                log.error("round failed: %s; next round in %s", exc, options.every)
                status = 1
            if options.every is None or stop.wait(options.every.total_seconds()):
                return status
