"""A day in the life of `ctscan watch --source ct`: a loopback CT log and a CRL that grow between rounds.

Round 1 alerts the findings the log and CRL already show, round 2 only what the log and CRL gained
since (new certificates and precertificates of the audited CA, a typo neighbour, an early revocation
of a certificate round 1 saw unrevoked), round 3 nothing, reusing round 2's answer.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from scanner.cli import main
from scanner.pipeline import load_scan
from scanner.sources.ct.issuers import spki_sha256
from tests.loopback.ct_server import (
    CTServer,
    LogEntrySpec,
    LogKey,
    RFC6962Log,
    TiledLog,
    log_list,
    mth,
    rfc6962_log_entries,
    tiled_log_leaves,
)
from tests.synth import TestCA, der, pem
from tests.test_watch import HOOK, REGISTRATIONS

pytestmark = pytest.mark.slow

ORIGIN = "watch.test/log"
#: What this CA's reviewer asked to be told of: every finding at low and above (typo neighbours are medium).
MIN_SEVERITY = ("low", "medium", "high")


class LogDay:
    """The audited CA's certificates in a CT log (RFC 6962 or tiled) among another CA's, and its CRL."""

    def __init__(self, root: Path, kind: str) -> None:
        self.root, self.kind = root, kind
        self.ca, self.other = TestCA(name="ctscan CT Watch CA"), TestCA(name="Someone Else CA")
        self.key = LogKey()
        self.t0 = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(days=20)
        self.specs: list[LogEntrySpec] = []
        self.revoked: list[tuple[int, datetime, None]] = []
        self.sha: dict[str, str] = {}  # label -> the SHA-256 a report names it by (the certificate, else its precert)
        self.logged: set[str] = set()  # every SHA-256 of the audited CA's entries
        self.crl = root / "ca.crl"
        self.issuer = root / "ca.pem"
        self.issuer.write_bytes(pem(self.ca.cert))
        self.answers = root / "registrations.csv"
        self.answers.write_text(REGISTRATIONS)
        self.out, self.store = root / "out", root / "store.sqlite3"
        self._write_crl()
        self.server: CTServer | None = None

    def issue(self, label: str, serial: int, dns: list[str], *, precert: bool = False, final: bool = True) -> None:
        """Log a certificate of the audited CA, its precertificate first when precert (only it when not final)."""
        when = self.t0 + timedelta(days=serial)
        stamp = int(when.timestamp() * 1000)
        if precert:
            pre = der(self.ca.issue(serial=serial, not_before=when, days=90, cn=dns[0], org="Example SL", dns=dns,
                                    precert=True))
            self.specs.append(LogEntrySpec(pre, (der(self.ca.cert),), True, spki_sha256(self.ca.cert), stamp))
            self.logged.add(hashlib.sha256(pre).hexdigest())
            self.sha[label] = hashlib.sha256(pre).hexdigest()
        if final:
            cert = der(self.ca.issue(serial=serial, not_before=when, days=90, cn=dns[0], org="Example SL", dns=dns))
            self.specs.append(LogEntrySpec(cert, (der(self.ca.cert),), False, b"", stamp + 1))
            self.logged.add(hashlib.sha256(cert).hexdigest())
            self.sha[label] = hashlib.sha256(cert).hexdigest()
        # another CA's certificate beside each: the log is not the audited CA's alone
        noise = der(self.other.issue(serial=serial, not_before=when, days=90, dns=[f"n{serial}.example.net"]))
        self.specs.append(LogEntrySpec(noise, (der(self.other.cert),), False, b"", stamp + 2))

    def revoke(self, serial: int, after: timedelta) -> None:
        """Put serial on the CRL, revoked `after` its notBefore."""
        self.revoked.append((serial, self.t0 + timedelta(days=serial) + after, None))
        self._write_crl()

    def _write_crl(self) -> None:
        now = datetime.now(timezone.utc).replace(microsecond=0)
        self.crl.write_bytes(der(self.ca.crl(self.revoked, this_update=now - timedelta(hours=1))))

    def _log(self) -> RFC6962Log | TiledLog:
        """The log as it stands: every entry logged so far under a tree head signed for its size."""
        stamp = 1_700_000_000_000 + len(self.specs) * 1000  # a later tree head for a larger tree
        if self.kind == "rfc6962":
            entries, hashes = rfc6962_log_entries(self.specs)
            return RFC6962Log(entries, self.key.sth(len(entries), mth(hashes), stamp), max_batch=4)
        leaves, hashes = tiled_log_leaves(self.specs)
        issuers = {hashlib.sha256(d).digest(): d for d in (der(self.ca.cert), der(self.other.cert))}
        return TiledLog(b"".join(hashes), self.key.checkpoint(ORIGIN, len(hashes), mth(hashes), stamp),
                        tile_leaf=leaves.__getitem__, issuers=issuers)

    def publish(self) -> None:
        """The log's server answers with every entry issued so far (started on the first call)."""
        if self.server is None:
            self.server = CTServer(self._log()).__enter__()
            url = self.server.url
            entry = (self.key.log_json("Watched log", url=url) if self.kind == "rfc6962" else
                     self.key.log_json("Watched log", monitoring_url=url, submission_url=f"https://{ORIGIN}/"))
            lists = log_list([entry]) if self.kind == "rfc6962" else log_list(tiled=[entry])
            (self.root / "log_list.json").write_text(json.dumps(lists))
        else:
            self.server.log = self._log()

    def close(self) -> None:
        if self.server is not None:
            self.server.__exit__(None, None, None)

    def argv(self, hook: str) -> list[str]:
        """The `ctscan watch --once --source ct` command line of this day.

        Not --offline: that would leave the (loopback) log unasked; the registry answers cover every name.
        """
        return ["watch", "--once", "--source", "ct", "--log-list", str(self.root / "log_list.json"),
                "--log", "Watched log", "--issuer-cert", str(self.issuer), "--crl", str(self.crl),
                "--registry-answers", str(self.answers), "--cache", str(self.root / "cache"),
                "--store", str(self.store), "--retries", "1", "--out", str(self.out), "-q",
                "--min-severity", "low", "--alert-exec", hook]

    def rounds(self) -> list[Path]:
        """The round folders, oldest first."""
        return sorted(p for p in self.out.iterdir() if p.is_dir() and not p.is_symlink())


def _morning(day: LogDay) -> None:
    day.issue("early1", 1, ["www.example.es"], precert=True)
    day.revoke(1, timedelta(hours=4))
    day.issue("unregistered", 2, ["shop.never-registered.es"])
    day.issue("doomed", 3, ["api.example.es"], precert=True)  # fine this morning, revoked by the afternoon
    day.issue("plain", 4, ["mail.example.es"], precert=True)


def _afternoon(day: LogDay) -> None:
    day.issue("typo", 5, ["www.exmaple.es"], precert=True)  # one transposition from the subscriber's O
    day.issue("early2", 6, ["pay.example.es"], precert=True, final=False)  # only its precertificate logged
    day.revoke(6, timedelta(hours=6))
    day.revoke(3, timedelta(days=2))  # round 1 saw it unrevoked
    day.issue("later", 7, ["mail.example.es"])


def _pairs(findings: list[dict]) -> set[tuple[str, str]]:
    return {(f["sha256"], f["code"]) for f in findings}


def _round_pairs(folder: Path) -> set[tuple[str, str]]:
    """The (sha256, code) pairs of a round's findings that alert at --min-severity low."""
    findings = pd.read_parquet(folder / "findings.parquet")
    keep = findings["severity"].isin(MIN_SEVERITY)
    return set(zip(findings.loc[keep, "sha256"], findings.loc[keep, "code"]))


def _calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture(params=["rfc6962", "tiled"])
def log_day(request, tmp_path: Path):
    day = LogDay(tmp_path, request.param)
    yield day
    day.close()


def test_three_rounds_over_a_growing_ct_log_alert_the_existing_findings_then_only_the_new_ones_then_nothing(
        log_day: LogDay, tmp_path, monkeypatch):
    day = log_day
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    log = tmp_path / "hook.jsonl"
    monkeypatch.setenv("HOOK_LOG", str(log))
    hook = f"{sys.executable} {script}"

    _morning(day)
    day.publish()
    assert main(day.argv(hook)) == 0
    first = _calls(log)
    assert len(first) == 1
    assert first[0]["doc"]["selection"]["source"] == "ct"
    round1 = day.rounds()[0]
    assert _pairs(first[0]["doc"]["findings"]) == _round_pairs(round1)
    assert {(day.sha["early1"], "early_revocation"), (day.sha["unregistered"], "unregistered_domain")} <= \
        _round_pairs(round1)
    assert day.sha["doomed"] not in {sha for sha, _ in _round_pairs(round1)}  # not yet revoked

    first_size = len(day.specs)
    _afternoon(day)
    day.publish()
    assert main(day.argv(hook)) == 0
    calls = _calls(log)
    assert len(calls) == 2
    round2 = day.rounds()[1]
    new = _pairs(calls[1]["doc"]["findings"])
    assert new == _round_pairs(round2) - _round_pairs(round1)
    assert {(day.sha["typo"], "typo_neighbour"), (day.sha["early2"], "early_revocation"),
            (day.sha["doomed"], "early_revocation")} <= new
    assert not {sha for sha, _ in new} & {day.sha["early1"], day.sha["unregistered"]}
    # the round's diff against round 1: each new code counted in diff.md, each new certificate in diff.csv
    diff_md = (round2 / "diff.md").read_text()
    for code in {code for _, code in new}:
        count = len({sha for sha, c in new if c == code})
        assert f"{count} new certificate{'s' if count > 1 else ''} with `{code}`" in diff_md, code
    changes = pd.read_csv(round2 / "diff.csv")
    assert {sha for sha, _ in new} <= set(changes.loc[changes["kind"] == "new_suspect", "sha256"])
    summary2 = json.loads((round2 / "summary.json").read_text())
    assert summary2["round"]["built_on"] == round1.name and "reused_from" not in summary2
    # the log was read on from where round 1 stopped, and only the 4 new entries of the CA were parsed
    assert any(f"resumed at entry {first_size}" in n for n in summary2["notices"])
    assert summary2["round"]["parsed_now"] == 4

    asked = len(day.server.requests)
    assert main(day.argv(hook)) == 0  # the log and the CRL gained nothing: no alert
    assert not [r for r in day.server.requests[asked:] if "get-entries" in r or "/tile/data/" in r]
    assert len(_calls(log)) == 2
    round3 = day.rounds()[2]
    assert (tmp_path / "out" / "latest").resolve() == round3
    summary3 = json.loads((round3 / "summary.json").read_text())
    assert summary3["reused_from"] == round2.name and summary3["round"]["nothing_new"]
    assert summary3["round"]["parsed_now"] == 0 and summary3["certificates"] == summary2["certificates"]
    assert json.loads((round3 / "alerts.json").read_text())["new_pairs"] == {f"exec:{hook}": 0}
    assert _round_pairs(round3) == _round_pairs(round2)
    certs = load_scan(round3).certs
    named = (set(certs["sha256"]) | set(certs["precert_sha256"].dropna())) - {""}
    assert named == day.logged  # every certificate and precertificate of the audited CA in the log, no other
    assert set(certs["sha256"]) == set(day.sha.values())
