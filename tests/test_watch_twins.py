"""Alerts once per issuance: a precertificate alerted before its certificate was logged is not alerted again
under the certificate's hash; and a round after one with no findings still gets its diff."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest

from scanner.cli import main
from tests.loopback.ct_server import LogEntrySpec
from tests.synth import der
from tests.test_watch import Day, _hook
from tests.test_watch_ct import LogDay

pytestmark = pytest.mark.slow


def _alerted(log: Path) -> list[tuple[str, str]]:
    if not log.exists():
        return []
    return [(f["sha256"], f["code"]) for line in log.read_text().splitlines()
            for f in json.loads(line)["doc"]["findings"]]


def test_a_precertificate_alerted_first_is_not_alerted_again_when_its_certificate_is_logged(tmp_path, monkeypatch):
    day = LogDay(tmp_path, "rfc6962")
    try:
        hook, log = _hook(tmp_path, monkeypatch)
        day.issue("early", 1, ["www.example.es"], precert=True, final=False)
        day.revoke(1, timedelta(hours=4))
        day.issue("unregistered", 2, ["shop.never-registered.es"], precert=True, final=False)
        day.publish()
        assert main(day.argv(hook)) == 0
        first = _alerted(log)
        assert {code for _, code in first} == {"early_revocation", "unregistered_domain"}
        precerts = {day.sha["early"], day.sha["unregistered"]}
        assert {sha for sha, _ in first} == precerts
        day.issue("early", 1, ["www.example.es"], precert=False, final=True)
        day.issue("unregistered", 2, ["shop.never-registered.es"], precert=False, final=True)
        day.publish()
        assert main(day.argv(hook)) == 0
        assert _alerted(log) == first  # the certificates are the same two issuances
        latest = (day.out / "latest").resolve()
        alerts = json.loads((latest / "alerts.json").read_text())
        assert alerts["alerting_findings"] == 2 and sum(alerts["new_pairs"].values()) == 0
    finally:
        day.close()


def test_a_round_after_a_round_without_findings_gets_its_diff(tmp_path):
    day = Day(tmp_path)
    day.issue("quiet", 1, ["www.example.es"])
    assert main(day.argv()) == 0
    day.issue("early", 2, ["api.example.es"], revoked_after=timedelta(hours=3))
    assert main(day.argv()) == 0
    md = (day.latest() / "diff.md").read_text()
    assert "`early_revocation`" in md
    assert os.path.getsize(day.latest() / "diff.csv") > 0


def test_rounds_with_nothing_new_say_their_own_source_notices_not_every_earlier_rounds(tmp_path, monkeypatch):
    day = LogDay(tmp_path, "rfc6962")
    try:
        hook, log = _hook(tmp_path, monkeypatch)
        day.issue("plain", 1, ["www.example.es"])
        counts = []
        for k in range(4):
            # the log grows by another CA's certificate each round: nothing new for the audited CA, yet the
            # source says each round where it resumed, a different entry each time
            other = der(day.other.issue(serial=5000 + k, not_before=day.t0, days=90, dns=[f"x{k}.example.net"]))
            day.specs.append(LogEntrySpec(other, (der(day.other.cert),), False, b"", 1_700_000_000_000 + k))
            day.publish()
            assert main(day.argv(hook)) == 0
            summary = json.loads(((day.out / "latest").resolve() / "summary.json").read_text())
            counts.append(len(summary["notices"]))
        assert summary["reused_from"]
        assert counts[1] == counts[2] == counts[3]  # not one more each round
    finally:
        day.close()


@pytest.mark.parametrize("kind", ["rfc6962", "tiled"])
def test_a_round_while_the_log_is_down_keeps_what_earlier_rounds_read_and_is_partial(tmp_path, monkeypatch, kind):
    day = LogDay(tmp_path, kind)
    try:
        hook, log = _hook(tmp_path, monkeypatch)
        day.issue("early", 1, ["www.example.es"])
        day.revoke(1, timedelta(hours=4))
        day.issue("unregistered", 2, ["shop.never-registered.es"])
        day.publish()
        assert main(day.argv(hook)) == 0
        first = json.loads(((day.out / "latest").resolve() / "summary.json").read_text())
    finally:
        day.close()  # the log goes down
    assert main(day.argv(hook)) == 3
    latest = (day.out / "latest").resolve()
    summary = json.loads((latest / "summary.json").read_text())
    assert summary["certificates"] == first["certificates"] == 2
    assert summary["findings"] == first["findings"]
    assert any("unreachable" in r for r in summary["partial_reasons"])
    assert "no longer suspect" not in (latest / "diff.md").read_text()
