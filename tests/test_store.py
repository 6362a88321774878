"""The local certificate store: one row per SHA-256, facts that survive refetches, checkpoints, reading it as a source."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from scanner.core.config import Config
from scanner.sources.base import RawCert, SourceNotice
from scanner.sources.store import CertStore, StoreOptions, read
from tests.synth import TestCA, der, utc

T0 = utc("2024-02-01T00:00")


@pytest.fixture(scope="module")
def ders() -> list[bytes]:
    ca = TestCA(name="Store Test CA")
    return [der(ca.issue(serial=300 + n, not_before=T0 + timedelta(days=n), cn=f"s{n}.example.org")) for n in range(5)]


def raw(d: bytes, **extra) -> RawCert:
    return RawCert(d, "crtsh-sql", f"crtsh:{extra.get('crtsh_id', 0)}", extra)


def test_the_same_certificate_stored_twice_is_one_row_that_keeps_its_revocation(tmp_path, ders):
    with CertStore(tmp_path / "s.sqlite3") as store:
        store.put_many([raw(ders[0], crtsh_id=11, issuer_ca_id=4, first_seen=T0 + timedelta(hours=3),
                            revoked_at=T0 + timedelta(hours=5), revocation_reason="keyCompromise",
                            revocation_source="crtsh")])
        # a later fetch that knows an earlier sighting but nothing of the revocation
        store.put_many([raw(ders[0], crtsh_id=11, issuer_ca_id=4, first_seen=T0 + timedelta(hours=1))])
        assert store.count() == 1
        (back,) = list(store.iter_raw())
    assert back.der == ders[0] and back.provenance == "crtsh:11"
    assert back.extra == {"crtsh_id": 11, "issuer_ca_id": 4, "first_seen": T0 + timedelta(hours=1),
                          "revoked_at": T0 + timedelta(hours=5), "revocation_reason": "keyCompromise",
                          "revocation_source": "crtsh"}
    assert back.extra["first_seen"].tzinfo is not None


def test_iter_raw_filters_by_issuer_ca_and_notbefore_range(tmp_path, ders):
    with CertStore(tmp_path / "s.sqlite3") as store:
        store.put_many([raw(d, crtsh_id=n, issuer_ca_id=4 if n < 4 else 5) for n, d in enumerate(ders)])
        got = [r.extra["crtsh_id"] for r in store.iter_raw(ca_ids=[4], not_before_from=T0 + timedelta(days=1),
                                                          not_before_to=T0 + timedelta(days=3))]
        assert sorted(got) == [1, 2]
        assert store.has(hashlib.sha256(ders[4]).hexdigest()) and not store.has("00" * 32)


def test_known_crtsh_ids_answers_for_more_ids_than_sqlite_binds_at_once(tmp_path, ders):
    with CertStore(tmp_path / "s.sqlite3") as store:
        store.put_many([raw(ders[0], crtsh_id=5), raw(ders[1], crtsh_id=2500)])
        assert store.known_crtsh_ids(range(3000)) == {5, 2500}
        assert [r.extra["crtsh_id"] for r in store.iter_raw(crtsh_ids=list(range(3000)))] in ([5, 2500], [2500, 5])


def test_checkpoints_are_per_key_and_can_be_cleared(tmp_path, ders):
    path = tmp_path / "s.sqlite3"
    with CertStore(path) as store:
        store.put_many([raw(ders[0], crtsh_id=1)], done_window=("a", T0, T0 + timedelta(days=1), 1))
        store.mark_window_done("a", (T0 + timedelta(days=1), T0 + timedelta(days=2)))
        store.mark_window_done("b", (T0, T0 + timedelta(days=9)))
    with CertStore(path) as store:  # they survive closing the file
        assert store.done_windows("a") == [(T0, T0 + timedelta(days=1)), (T0 + timedelta(days=1), T0 + timedelta(days=2))]
        store.clear_windows("a")
        assert store.done_windows("a") == [] and len(store.done_windows("b")) == 1


def test_read_store_yields_only_the_chosen_cas_without_the_network(tmp_path, ders):
    path = tmp_path / "s.sqlite3"
    with CertStore(path) as store:
        store.put_many([raw(d, crtsh_id=n, issuer_ca_id=4 if n % 2 else 9) for n, d in enumerate(ders)])
    config = Config(out_dir=tmp_path, store_path=path, ca_ids=(4,), dsn="postgresql://nobody@127.0.0.1:1/x")
    assert sorted(r.extra["crtsh_id"] for r in read(StoreOptions.from_config(config)) if isinstance(r, RawCert)) == [1, 3]
    everything = Config(out_dir=tmp_path, store_path=path)
    assert len([r for r in read(StoreOptions.from_config(everything)) if isinstance(r, RawCert)]) == 5


def test_read_store_of_a_missing_file_says_so_and_marks_the_run_partial(tmp_path):
    (item,) = list(read(StoreOptions(tmp_path / "none.sqlite3")))
    assert isinstance(item, SourceNotice) and item.partial and "does not exist" in item.message
    assert not (tmp_path / "none.sqlite3").exists()


def test_pending_alert_deliveries_come_in_the_order_they_were_formed_even_within_one_second(tmp_path):
    finding = {"crtsh_url": "", "severity": "low", "evidence": "e", "related_sha256": ""}
    with CertStore(tmp_path / "s.sqlite3") as store:
        # two rounds in the same second; the later delivery's id sorts first
        store.alert_record("exec:x", "2026-12-01T10:00:00Z", "ffff", [{**finding, "sha256": "a" * 64, "code": "c"}])
        store.alert_record("exec:x", "2026-12-01T10:00:00Z", "0000", [{**finding, "sha256": "b" * 64, "code": "c"}])
        assert [p.delivery for p in store.alert_pending("exec:x")] == ["ffff", "0000"]

