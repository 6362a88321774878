"""crtsh-sql against a real PostgreSQL holding the certwatch tables (pgserver, local socket).

The test database stands in for crt.sh's libx509pq functions with SQL functions over a side table
(see loopback/pg.py), because that C extension cannot be installed here.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from scanner.core.config import Config
from scanner.parse.certs import record_from_raw
from scanner.sources.base import RawCert, SourceError, SourceNotice
from scanner.sources.crtsh_sql import CrtshSqlOptions, read, reason_name, safe_dsn, serial_octets
from scanner.sources.store import CertStore
from tests.loopback.pg import CertwatchDB, certwatch_pg  # noqa: F401  (the fixture)
from tests.synth import TestCA, der, utc

REPO = Path(__file__).resolve().parents[1]
DAY0 = utc("2024-03-01T00:00")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def issued() -> dict[str, list[tuple[int, bytes]]]:
    """Real certificates of two CAs: 'ours' 3 a day for 10 days from DAY0, 'other' 2 a day."""
    ours, other = TestCA(name="Ours Issuing CA"), TestCA(name="Other Issuing CA")
    out: dict[str, list[tuple[int, bytes]]] = {"ours": [], "other": []}
    for day in range(10):
        for k in range(3):
            serial = 1000 + day * 10 + k
            nb = DAY0 + timedelta(days=day, hours=2 + 6 * k)
            out["ours"].append((serial, der(ours.issue(serial=serial, not_before=nb, cn=f"h{serial}.example.com",
                                                       dns=[f"h{serial}.example.com"]))))
        for k in range(2):
            serial = 5000 + day * 10 + k
            out["other"].append((serial, der(other.issue(serial=serial, not_before=DAY0 + timedelta(days=day, hours=3),
                                                         cn=f"o{serial}.example.net"))))
    return out


@pytest.fixture
def db(certwatch_pg: CertwatchDB, issued) -> CertwatchDB:  # noqa: F811
    """The certwatch database loaded with both CAs (ours = ca id 1, other = ca id 2)."""
    certwatch_pg.reset()
    ours = certwatch_pg.add_ca("C=XX, O=ctscan Test PKI, CN=Ours Issuing CA")
    other = certwatch_pg.add_ca("C=XX, O=ctscan Test PKI, CN=Other Issuing CA")
    assert (ours, other) == (1, 2)
    certwatch_pg.add_certs(ours, [d for _, d in issued["ours"]])
    certwatch_pg.add_certs(other, [d for _, d in issued["other"]])
    # revoked 5 hours after issue for key compromise; another one without a reason code
    certwatch_pg.revoke(ours, 1001, DAY0 + timedelta(hours=13), 1)
    certwatch_pg.revoke(ours, 1050, DAY0 + timedelta(days=6), None)
    return certwatch_pg


def make_config(tmp_path: Path, db: CertwatchDB, **kw) -> Config:
    base = dict(out_dir=tmp_path / "out", source="crtsh-sql", dsn=db.dsn, ca_ids=(1,),
                since=DAY0, until=DAY0 + timedelta(days=10), store_path=tmp_path / "store.sqlite3",
                cache_dir=tmp_path / "cache", retries=2, timeout=5)
    base.update(kw)
    return Config(**base)


def run(config: Config, **kw) -> tuple[list[RawCert], list[SourceError], list[SourceNotice]]:
    kw.setdefault("base_delay", 0.01)
    kw.setdefault("target_rows", None)
    items = list(read(CrtshSqlOptions.from_config(config), store=config.store_file, **kw))
    return ([i for i in items if isinstance(i, RawCert)], [i for i in items if isinstance(i, SourceError)],
            [i for i in items if isinstance(i, SourceNotice)])


def expected(issued, name="ours", start=DAY0, end=DAY0 + timedelta(days=10)) -> set[str]:
    from cryptography import x509
    return {sha(d) for _, d in issued[name]
            if start <= x509.load_der_x509_certificate(d).not_valid_before_utc < end}


def test_sql_source_yields_only_the_chosen_ca_in_the_date_range_with_crtsh_facts(tmp_path, db, issued):
    config = make_config(tmp_path, db, since=DAY0 + timedelta(days=1), until=DAY0 + timedelta(days=4))
    raws, errors, notices = run(config)
    assert errors == [] and not any(n.partial for n in notices)
    got = [sha(r.der) for r in raws]
    assert len(got) == len(set(got)) == 9
    assert set(got) == expected(issued, start=DAY0 + timedelta(days=1), end=DAY0 + timedelta(days=4))
    for raw in raws:
        assert raw.source == "crtsh-sql"
        assert raw.provenance == f"crtsh:{raw.extra['crtsh_id']}"
        assert raw.extra["issuer_ca_id"] == 1
        record = record_from_raw(raw)
        # the earliest of the two CT log entries is the first sighting
        assert record["first_seen"] == record["not_before"]
        assert record["crtsh_id"] == raw.extra["crtsh_id"]


def test_crl_revoked_rows_become_revocation_date_and_rfc5280_reason_names(tmp_path, db):
    raws, errors, _ = run(make_config(tmp_path, db))
    assert errors == []
    by_serial = {record_from_raw(r)["serial"]: record_from_raw(r) for r in raws}
    early = by_serial[format(1001, "x").zfill(4)]
    assert early["revoked_at"] == DAY0 + timedelta(hours=13)
    assert early["revocation_reason"] == "keyCompromise"
    assert early["revocation_source"] == "crtsh"
    no_reason = by_serial[format(1050, "x").zfill(4)]
    assert no_reason["revoked_at"] == DAY0 + timedelta(days=6) and no_reason["revocation_reason"] == ""
    assert by_serial[format(1002, "x").zfill(4)]["revoked_at"] is None


def test_reason_codes_map_to_cryptography_reason_flag_values():
    assert [reason_name(c) for c in (0, 1, 4, 5, 9, None)] == [
        "unspecified", "keyCompromise", "superseded", "cessationOfOperation", "privilegeWithdrawn", ""]
    assert reason_name(7) == "unknownReason(7)"


def test_ca_name_is_resolved_through_the_ca_table_and_the_match_is_announced(tmp_path, db, issued):
    raws, errors, notices = run(make_config(tmp_path, db, ca_ids=(), ca_names=("ours issuing",)))
    assert errors == []
    assert any("matched 1 crt.sh CA" in n.message and "1 'C=XX, O=ctscan Test PKI, CN=Ours Issuing CA'" in n.message
               for n in notices)
    assert {sha(r.der) for r in raws} == expected(issued)


def test_a_ca_name_matching_nothing_is_an_error_and_the_run_is_partial(tmp_path, db):
    raws, errors, notices = run(make_config(tmp_path, db, ca_ids=(), ca_names=("No Such CA",)))
    assert raws == []
    assert "No Such CA" in errors[0].error
    assert any(n.partial for n in notices)


def test_finished_windows_are_served_from_the_store_on_a_second_run_without_the_database(tmp_path, db, issued):
    config = make_config(tmp_path, db)
    first, errors, _ = run(config)
    assert errors == []
    # every certificate now fails on the server: anything not served from the store would be an error
    db.fault("57014", DAY0, DAY0 + timedelta(days=10), fail_first=1000)
    second, errors, notices = run(make_config(tmp_path, db, retries=0))
    assert errors == [] and not any(n.partial for n in notices)
    assert Counter(sha(r.der) for r in second) == Counter(sha(r.der) for r in first)
    revoked = [r for r in second if r.extra.get("revoked_at")]
    assert {r.extra.get("revocation_reason", "") for r in revoked} == {"keyCompromise", ""}


def test_replica_recovery_conflicts_are_retried_until_the_window_completes(tmp_path, db, issued):
    db.fault("40001", DAY0 + timedelta(days=2), DAY0 + timedelta(days=3), fail_first=2)
    raws, errors, notices = run(make_config(tmp_path, db, retries=3))
    assert errors == [] and not any(n.partial for n in notices)
    assert Counter(sha(r.der) for r in raws) == Counter(expected(issued))


def test_a_connection_dropped_mid_window_is_resumed_without_duplicates(tmp_path, db, issued):
    # itersize 1: the first certificate of the day is handed on before the server kills the connection
    db.fault("drop", DAY0 + timedelta(days=4, hours=8), DAY0 + timedelta(days=5), fail_first=1)
    raws, errors, _ = run(make_config(tmp_path, db, retries=2), itersize=1)
    assert errors == []
    assert Counter(sha(r.der) for r in raws) == Counter(expected(issued))


def test_a_window_that_keeps_failing_is_an_error_naming_it_and_a_partial_notice(tmp_path, db, issued):
    db.fault("57014", DAY0 + timedelta(days=3), DAY0 + timedelta(days=4), fail_first=1000,
             message="canceling statement due to statement timeout")
    config = make_config(tmp_path, db, retries=1)
    raws, errors, notices = run(config)
    assert len(errors) == 1
    assert "2024-03-04T00:00:00+00:00" in errors[0].provenance and "ca_id=1" in errors[0].provenance
    assert "57014" in errors[0].error and "statement timeout" in errors[0].error
    assert errors[0].stage == "source"
    assert [n.partial for n in notices] == [True] and "2024-03-04" in notices[0].message
    assert {sha(r.der) for r in raws} == expected(issued) - expected(issued, start=DAY0 + timedelta(days=3),
                                                                    end=DAY0 + timedelta(days=4))
    # the failed window was not checkpointed: once the replica heals, a rerun fetches exactly it
    db.clear_faults()
    again, errors, _ = run(config)
    assert errors == [] and {sha(r.der) for r in again} == expected(issued)


def test_an_unreachable_database_is_one_error_and_the_fetch_stops(tmp_path, db):
    config = make_config(tmp_path, db, dsn="postgresql://guest@127.0.0.1:1/certwatch", timeout=1, retries=1)
    raws, errors, notices = run(config)
    assert raws == [] and len(errors) == 1
    assert "cannot connect" in errors[0].error and "127.0.0.1" in errors[0].provenance
    assert notices[-1].partial and "nothing from there" in notices[-1].message


def test_no_ca_is_an_error_not_an_empty_scan(tmp_path, db):
    raws, errors, notices = run(make_config(tmp_path, db, ca_ids=()))
    assert raws == [] and "--ca-id" in errors[0].error and notices[-1].partial


CHILD = """
import json, sys, time
from datetime import datetime, timedelta
from scanner.sources.crtsh_sql import CrtshSqlOptions, read
a = json.loads(sys.argv[1])
options = CrtshSqlOptions(dsn=a["dsn"], ca_ids=(1,), since=datetime.fromisoformat(a["since"]),
                          until=datetime.fromisoformat(a["until"]))
for item in read(options, store=a["store"], target_rows=None, itersize=1):
    time.sleep(0.15)  # a slow consumer, so the parent can kill us half way
"""


def done_windows(store: Path) -> list[tuple[str, str]]:
    if not store.exists():
        return []
    try:
        with sqlite3.connect(store) as conn:
            return conn.execute("SELECT win_start, win_end FROM checkpoints").fetchall()
    except sqlite3.OperationalError:
        return []


def test_kill_9_in_the_middle_of_a_fetch_then_rerun_gives_the_full_set_once(tmp_path, db, issued):
    store = tmp_path / "store.sqlite3"
    args = json.dumps({"dsn": db.dsn, "since": DAY0.isoformat(), "until": (DAY0 + timedelta(days=10)).isoformat(),
                       "store": str(store)})
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", CHILD, args], env=env)
    deadline = time.monotonic() + 20
    while len(done_windows(store)) < 3 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.02)
    time.sleep(0.2)  # land the kill inside a window, after some of its certificates were stored
    child.send_signal(signal.SIGKILL)
    child.wait()
    finished = done_windows(store)
    assert 3 <= len(finished) < 10, "the child was meant to die half way"
    with CertStore(store) as cs:
        assert 0 < cs.count() < 30
    # Every finished window is poisoned on the server: the rerun must take them from the store.
    for start, end in finished:
        db.fault("57014", datetime.fromisoformat(start).replace(tzinfo=timezone.utc),
                 datetime.fromisoformat(end).replace(tzinfo=timezone.utc), fail_first=1000)
    raws, errors, notices = run(make_config(tmp_path, db, retries=0))
    assert errors == [] and not any(n.partial for n in notices)
    shas = Counter(sha(r.der) for r in raws)
    assert max(shas.values()) == 1
    assert set(shas) == expected(issued)
    with CertStore(store) as cs:
        assert cs.count() == 30
        assert len(cs.done_windows(next(iter({k for k, in sqlite3.connect(store).execute(
            "SELECT key FROM checkpoints")})))) == 10


def recording(monkeypatch) -> list[tuple[datetime, datetime]]:
    """Every window the fetcher asks the (real) database for, in order."""
    from scanner.sources import crtsh_sql

    asked: list[tuple[datetime, datetime]] = []
    original = crtsh_sql._Fetcher.window

    def window(self, start, end):
        asked.append((start, end))
        return original(self, start, end)

    monkeypatch.setattr(crtsh_sql._Fetcher, "window", window)
    return asked


def facts(raws: list[RawCert]) -> Counter:
    return Counter((sha(r.der), r.extra.get("revoked_at"), r.extra.get("revocation_reason") or "") for r in raws)


def test_a_run_without_until_resumed_two_hours_later_rereads_only_the_refresh_span(tmp_path, db, issued, monkeypatch):
    asked = recording(monkeypatch)
    now = DAY0 + timedelta(days=20, minutes=30)
    config = make_config(tmp_path, db, since=None, until=None)
    first, errors, _ = run(config, now=now, target_rows=50_000)
    assert errors == [] and {sha(r.der) for r in first} == expected(issued)
    asked.clear()
    later = now + timedelta(hours=2)
    second, errors, notices = run(config, now=later, target_rows=50_000)
    assert errors == [] and not any(n.partial for n in notices)
    assert facts(second) == facts(first)
    assert asked, "the days crt.sh still fills up are read again"
    assert all(end > later - timedelta(days=7) for _, end in asked), asked
    assert min(start for start, _ in asked) < later - timedelta(days=6)


def test_two_runs_with_different_ranges_share_the_windows_they_have_in_common(tmp_path, db, issued, monkeypatch):
    asked = recording(monkeypatch)
    run(make_config(tmp_path, db, since=DAY0, until=DAY0 + timedelta(days=6)))
    asked.clear()
    raws, errors, _ = run(make_config(tmp_path, db, since=DAY0 + timedelta(days=2, hours=5),
                                      until=DAY0 + timedelta(days=10)))
    assert errors == []
    assert {sha(r.der) for r in raws} == expected(issued, start=DAY0 + timedelta(days=2, hours=5))
    assert asked and min(start for start, _ in asked) == DAY0 + timedelta(days=6)


def late_certificate(db: CertwatchDB, not_before: datetime) -> bytes:
    """A certificate of 'ours' that crt.sh learns about only now (logged late or backdated)."""
    late = der(TestCA(name="Ours Issuing CA").issue(serial=9999, not_before=not_before, cn="late.example.com",
                                                     dns=["late.example.com"]))
    db.add_certs(1, [late])
    return late


@pytest.mark.parametrize("refresh_days, found", [(7.0, True), (0.0, False)])
def test_a_certificate_crtsh_gains_for_a_window_that_ended_two_days_ago_is_found_within_refresh_days(
        tmp_path, db, issued, refresh_days, found):
    now = DAY0 + timedelta(days=12)  # the last day of the range ended 2 days ago
    config = make_config(tmp_path, db, refresh_days=refresh_days)
    first, errors, _ = run(config, now=now)
    assert errors == [] and len(first) == 30
    late = late_certificate(db, DAY0 + timedelta(days=9, hours=5))
    second, errors, notices = run(config, now=now + timedelta(hours=1))
    assert errors == [] and not any(n.partial for n in notices)
    assert (sha(late) in {sha(r.der) for r in second}) is found
    assert len(second) == 30 + found


def test_refresh_days_must_not_be_negative(tmp_path, db):
    from scanner.core.config import ConfigError

    with pytest.raises(ConfigError, match="--refresh-days"):
        make_config(tmp_path, db, refresh_days=-1)


def test_offline_rerun_serves_the_refresh_span_from_the_store(tmp_path, db, issued):
    now = DAY0 + timedelta(days=12)
    first, _, _ = run(make_config(tmp_path, db), now=now)
    second, errors, notices = run(make_config(tmp_path, db, offline=True), now=now + timedelta(days=1))
    assert errors == [] and not any(n.partial for n in notices)
    assert facts(second) == facts(first)
    assert any("served from the store without re-reading" in n.message for n in notices)


def test_a_refreshed_window_that_fails_still_reports_what_an_earlier_run_stored(tmp_path, db, issued):
    now = DAY0 + timedelta(days=12)
    first, _, _ = run(make_config(tmp_path, db), now=now)
    db.fault("57014", DAY0 + timedelta(days=8), DAY0 + timedelta(days=10), fail_first=1000)
    second, errors, notices = run(make_config(tmp_path, db, retries=0), now=now)
    assert errors and all("window failed" in e.error for e in errors)
    assert any(n.partial and "only as an earlier run stored it" in n.message for n in notices)
    assert Counter(sha(r.der) for r in second) == Counter(sha(r.der) for r in first)


def test_refresh_revocations_reads_crl_revoked_again_for_stored_certificates(tmp_path, db, issued):
    config = make_config(tmp_path, db)
    run(config)
    serial_of = {format(s, "x").zfill(4): s for s, _ in issued["ours"]}
    db.revoke(1, 1012, DAY0 + timedelta(days=1, hours=20), 1)  # crt.sh saw a new CRL entry
    db.conn.execute("UPDATE crl_revoked SET reason_code = 4 WHERE serial_number = %s",  # and a changed reason
                    (serial_octets(1050),))

    def revoked(raws):
        return {serial_of[record_from_raw(r)["serial"]]: (r.extra.get("revoked_at"), r.extra.get("revocation_reason"))
                for r in raws if r.extra.get("revoked_at")}

    plain, errors, _ = run(config)
    assert errors == [] and set(revoked(plain)) == {1001, 1050}  # the store's revocations, unchanged
    refreshed, errors, notices = run(make_config(tmp_path, db, refresh_revocations=True))
    assert errors == [] and not any(n.partial for n in notices)
    assert revoked(refreshed) == {1001: (DAY0 + timedelta(hours=13), "keyCompromise"),
                                  1012: (DAY0 + timedelta(days=1, hours=20), "keyCompromise"),
                                  1050: (DAY0 + timedelta(days=6), "superseded")}
    # crt.sh stops listing one: it stays revoked (a CRL drops entries once the certificate expires)
    db.conn.execute("DELETE FROM crl_revoked WHERE serial_number = %s", (serial_octets(1001),))
    again, _, _ = run(make_config(tmp_path, db, refresh_revocations=True))
    assert revoked(again) == revoked(refreshed)


def test_refresh_revocations_that_cannot_read_crl_revoked_reports_the_stored_ones_as_partial(tmp_path, db, issued):
    first, _, _ = run(make_config(tmp_path, db))
    db.conn.execute("ALTER TABLE crl_revoked RENAME TO crl_revoked_away")
    try:
        raws, errors, notices = run(make_config(tmp_path, db, refresh_revocations=True, retries=0))
    finally:
        db.conn.execute("ALTER TABLE crl_revoked_away RENAME TO crl_revoked")
    assert facts(raws) == facts(first)
    assert len(errors) == 1 and "revocations could not be re-read" in errors[0].error
    assert any(n.partial and "--refresh-revocations" in n.message for n in notices)


def test_checkpoints_of_the_older_range_keyed_layout_are_ignored_not_trusted(tmp_path, db, issued):
    # an older ctscan's key held the range; its windows were never cut by this one and are left alone
    with CertStore(tmp_path / "store.sqlite3") as store:
        old_key = json.dumps({"source": "crtsh-sql", "dsn": safe_dsn(db.dsn), "ca_ids": [1],
                              "since": DAY0.replace(tzinfo=None).isoformat(),
                              "until": (DAY0 + timedelta(days=10)).replace(tzinfo=None).isoformat()}, sort_keys=True)
        store.mark_window_done(old_key, (DAY0, DAY0 + timedelta(days=10)), 0)
    raws, errors, _ = run(make_config(tmp_path, db))
    assert errors == [] and {sha(r.der) for r in raws} == expected(issued)


def test_a_failing_window_is_tried_once_plus_retries_times_then_reported_with_the_count(tmp_path, db):
    db.fault("57014", DAY0 + timedelta(days=3), DAY0 + timedelta(days=4), fail_first=1000,
             message="canceling statement due to statement timeout")
    _, errors, _ = run(make_config(tmp_path, db, retries=2))
    assert len(errors) == 1 and "after 3 attempt(s)" in errors[0].error
    tripped = db.conn.execute("SELECT last_value FROM test_fault_calls").fetchone()[0]
    assert tripped == 3  # each attempt trips the fault once, at the window's first certificate


def test_an_unreachable_database_is_tried_once_plus_retries_times(tmp_path, db):
    config = make_config(tmp_path, db, dsn="postgresql://guest@127.0.0.1:1/certwatch", timeout=1, retries=2)
    _, errors, _ = run(config)
    assert len(errors) == 1 and "cannot connect" in errors[0].error and "after 3 attempt(s); check --dsn" in errors[0].error
