"""Rounds over the certificate store: a store at the revision the previous round read is not read again, and
any write to it (a new certificate, a revocation, another program's UPDATE) or another selection is."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from scanner.core.config import Config
from scanner.pipeline import ScanResult, load_scan, run
from scanner.sources.base import RawCert, SourceState
from scanner.sources.store import CertStore, StoreOptions, read
from tests.synth import TestCA, der, utc

T0 = utc("2026-11-02T09:00")


class Store:
    """A store of one CA's certificates (two crt.sh CA ids), written between rounds."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / "store.sqlite3"
        self.ca = TestCA(name="ctscan Store Rounds CA")
        self.sha: dict[int, str] = {}

    def put(self, serial: int, dns: list[str], *, ca_id: int = 7) -> str:
        cert = self.ca.issue(serial=serial, not_before=T0 + timedelta(days=serial), days=90, cn=dns[0],
                             org="Cualtis SL", dns=dns)
        raw = RawCert(der(cert), "crtsh-sql", f"crtsh:{serial}", {"crtsh_id": serial, "issuer_ca_id": ca_id})
        with CertStore(self.path) as store:
            store.put_many([raw])
        self.sha[serial] = raw.digest()
        return raw.digest()

    def scan(self, name: str, previous: str | None = None, **options) -> ScanResult:
        config = Config(out_dir=self.root / name, source="store", store_path=self.path, registration="off",
                        cache_dir=self.root / "cache", workers=1, progress=False, quiet=True, **options)
        return run(config, previous=self.root / previous if previous else None, rounds=True)


def _answer(result: ScanResult) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (result.certs.sort_values("sha256").reset_index(drop=True),
            result.findings.sort_values(["sha256", "code", "name", "evidence"]).reset_index(drop=True))


def _same(built: ScanResult, scratch: ScanResult) -> None:
    (c1, f1), (c2, f2) = _answer(built), _answer(scratch)
    pd.testing.assert_frame_equal(c1, c2)
    pd.testing.assert_frame_equal(f1, f2)
    for key in ("read", "parsed", "certificates", "revoked", "findings", "suspects", "registrable_domains"):
        assert built.summary[key] == scratch.summary[key], key


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path)
    s.put(1, ["www.cualtis.net"])
    s.put(2, ["shop.cuatis.net"])  # a typo neighbour of the first
    s.put(3, ["mail.example.es"], ca_id=8)
    return s


def test_the_store_revision_moves_with_every_write_to_its_certificates_whoever_writes(store: Store) -> None:
    with CertStore(store.path) as db:
        before = db.revision()
    with CertStore(store.path) as db:
        assert db.revision() == before  # opening and reading write nothing
        list(db.iter_raw())
        assert db.revision() == before
    sha = store.put(4, ["api.example.es"])
    with CertStore(store.path) as db:
        after_put = db.revision()
        assert after_put != before
        db.update_revocations([(sha, T0 + timedelta(days=4, hours=2), "", "crtsh")])
        after_revocation = db.revision()
        assert after_revocation != after_put
    with sqlite3.connect(store.path) as conn:  # another program's write is seen too
        conn.execute("UPDATE certs SET revocation_reason = 'keyCompromise' WHERE sha256 = ?", (sha,))
    with CertStore(store.path) as db:
        assert db.revision() != after_revocation
    other = Store(store.root / "other")
    other.root.mkdir()
    other.put(1, ["www.cualtis.net"])
    with CertStore(other.path) as db:  # another store at the same count of writes is another store
        assert db.revision().split(":")[1] == "1" and db.revision() != before


def test_reading_the_store_opens_with_its_revision_and_the_selection(store: Store) -> None:
    items = list(read(StoreOptions(store.path)))
    assert isinstance(items[0], SourceState) and sum(isinstance(i, RawCert) for i in items) == 3
    (state,) = [i for i in read(StoreOptions(store.path, ca_ids=(8,))) if isinstance(i, SourceState)]
    assert state.token != items[0].token


def test_a_round_over_an_unchanged_store_does_not_read_it_and_gives_the_answer_of_a_scan_from_scratch(
        store: Store) -> None:
    first = store.scan("r1")
    assert first.summary["round"]["source_read"] and first.summary["round"]["parsed_now"] == 3
    kept = pd.read_parquet(store.root / "r1" / "finding-certs.parquet")  # all such a round reads of the certificates
    assert set(kept["sha256"]) == set(first.findings["sha256"]) | (set(first.findings["related_sha256"]) - {""})
    second = store.scan("r2", previous="r1")
    assert second.summary["round"]["nothing_new"] and not second.summary["round"]["source_read"]
    assert second.summary["read"] == first.summary["read"] == 3
    _same(load_scan(store.root / "r2"), first)
    third = store.scan("r3", previous="r2")  # and again on top of the round that did not read it
    assert not third.summary["round"]["source_read"]
    _same(load_scan(store.root / "r3"), first)


def test_a_store_written_since_the_previous_round_is_read_again(store: Store) -> None:
    store.scan("r1")
    store.scan("r2", previous="r1")
    # another program records a revocation: the next round must see it, not take the previous answer
    sha1 = store.sha[1]
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE certs SET revoked_at = ?, revocation_source = 'crtsh' WHERE sha256 = ?",
                     ("2026-11-03 12:00:00", sha1))
    revoked = store.scan("r3", previous="r2")
    assert revoked.summary["round"]["source_read"] and not revoked.summary["round"]["nothing_new"]
    assert revoked.summary["revoked"] == 1
    assert "early_revocation" in set(revoked.findings["code"])
    _same(revoked, store.scan("scratch-3"))
    store.put(5, ["login.cualtis.net"])
    arrived = store.scan("r4", previous="r3")
    assert arrived.summary["round"]["parsed_now"] == 1 and arrived.summary["certificates"] == 4
    _same(arrived, store.scan("scratch-4"))
    assert not store.scan("r5", previous="r4").summary["round"]["source_read"]


def test_another_selection_of_the_same_store_is_read_again(store: Store) -> None:
    store.scan("r1")
    narrowed = store.scan("r2", previous="r1", ca_ids=(7,))
    assert narrowed.summary["round"]["source_read"] and narrowed.summary["certificates"] == 2
    _same(narrowed, store.scan("scratch", ca_ids=(7,)))


def test_a_copy_of_the_store_is_read_again(store: Store) -> None:
    store.scan("r1")
    shutil.copy2(store.path, store.root / "copy.sqlite3")
    store.path = store.root / "copy.sqlite3"
    store.put(4, ["api.example.es"])  # a copy can be written apart from the store it copies
    second = store.scan("r2", previous="r1")
    assert second.summary["round"]["source_read"] and second.summary["certificates"] == 4
    _same(second, store.scan("scratch"))
