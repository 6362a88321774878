"""Each source read from a notebook: its own small options, no scan Config, one store over two reads."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from scanner.core.config import Config
from scanner.sources import crtsh_json, crtsh_sql, ct, files
from scanner.sources import store as store_source
from scanner.sources.base import RawCert, SourceError, SourceItem, SourceNotice
from scanner.sources.store import CertStore
from tests.loopback.crtsh_server import CrtshServer
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
from tests.loopback.pg import CertwatchDB, certwatch_pg  # noqa: F401  (the fixture)
from tests.synth import TestCA, der, pem, utc

DAY0 = utc("2024-03-01T00:00")


@pytest.fixture(autouse=True)
def no_config(monkeypatch):
    """Building a scan's Config anywhere in these tests is a failure: the sources must not need one."""
    def refuse(self) -> None:
        raise AssertionError("a source built a Config")

    monkeypatch.setattr(Config, "__post_init__", refuse)


def split(items: list[SourceItem]) -> tuple[list[RawCert], list[SourceError], list[SourceNotice]]:
    return ([i for i in items if isinstance(i, RawCert)], [i for i in items if isinstance(i, SourceError)],
            [i for i in items if isinstance(i, SourceNotice)])


def shas(raws: list[RawCert]) -> Counter:
    return Counter(hashlib.sha256(r.der).hexdigest() for r in raws)


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA(name="Notebook Issuing CA")


@pytest.fixture(scope="module")
def ders(ca) -> list[bytes]:
    """Six certificates of the CA, one every eight hours from DAY0."""
    return [der(ca.issue(serial=300 + n, not_before=DAY0 + timedelta(hours=8 * n), cn=f"n{n}.example.com",
                         dns=[f"n{n}.example.com"], days=3650)) for n in range(6)]


def test_crtsh_sql_is_read_from_a_notebook_twice_with_one_store(tmp_path, certwatch_pg: CertwatchDB, ders):  # noqa: F811
    certwatch_pg.reset()
    ca_id = certwatch_pg.add_ca("C=XX, O=ctscan Test PKI, CN=Notebook Issuing CA")
    certwatch_pg.add_certs(ca_id, ders)
    options = crtsh_sql.CrtshSqlOptions(dsn=certwatch_pg.dsn, ca_ids=[ca_id], since=DAY0,
                                        until=DAY0 + timedelta(days=3), retries=0)
    with CertStore(tmp_path / "store.sqlite3") as store:
        first, errors, _ = split(list(crtsh_sql.read(options, store=store, base_delay=0.01)))
        assert errors == [] and shas(first) == shas([RawCert(d, "", "") for d in ders])
        # every window now fails at crt.sh: the second read must come from the store alone
        certwatch_pg.fault("57014", DAY0, DAY0 + timedelta(days=3), fail_first=1000)
        second, errors, notices = split(list(crtsh_sql.read(options, store=store, base_delay=0.01)))
        assert store.count() == len(ders)  # the caller's store stays open after each read
    certwatch_pg.clear_faults()
    assert errors == [] and not any(n.partial for n in notices)
    assert shas(second) == shas(first)
    assert {r.extra["crtsh_id"] for r in second} == {r.extra["crtsh_id"] for r in first}


def test_crtsh_sql_options_take_a_notebooks_lists_and_name_the_defaults_of_a_scan():
    options = crtsh_sql.CrtshSqlOptions(ca_ids=["12", 7], ca_names=["Let's Encrypt"])
    assert options.ca_ids == (12, 7) and options.ca_names == ("Let's Encrypt",)
    assert options.dsn == "postgresql://guest@crt.sh:5432/certwatch"
    assert (options.since, options.until, options.refresh_days, options.refresh_revocations) == (None, None, 7.0, False)


def test_crtsh_json_is_read_from_a_notebook_twice_with_one_store(tmp_path, ders):
    with CrtshServer() as server:
        for n, d in enumerate(ders[:4]):
            server.state.add(500 + n, d, 7, DAY0, ("q", "example.com"))
        options = crtsh_json.CrtshJsonOptions(url=server.url, identities=["example.com"], ca_ids=[7], rate=0,
                                              retries=1, timeout=2)
        with CertStore(tmp_path / "store.sqlite3") as store:
            first, errors, _ = split(list(crtsh_json.read(options, store=store, base_delay=0.01)))
            assert errors == [] and server.state.hits["d"] == 4
            second, errors, notices = split(list(crtsh_json.read(options, store=store, base_delay=0.01)))
    assert errors == [] and not any(n.partial for n in notices)
    assert shas(second) == shas(first) == shas([RawCert(d, "", "") for d in ders[:4]])
    assert server.state.hits["d"] == 4  # the second read downloaded nothing: the store had every certificate


def test_crtsh_json_without_a_store_reads_into_one_that_lasts_the_read(ders):
    with CrtshServer() as server:
        server.state.add(600, ders[0], 7, DAY0, ("q", "one.example.com"))
        options = crtsh_json.CrtshJsonOptions(url=server.url, identities=("one.example.com",), rate=0, retries=0)
        raws, errors, notices = split(list(crtsh_json.read(options)))
    assert errors == [] and [r.extra["crtsh_id"] for r in raws] == [600]
    assert any("every issuer" in n.message for n in notices)  # no ca_ids: every issuer is kept, and it says so


def ct_world(ca: TestCA, tmp_path: Path) -> tuple[list[LogEntrySpec], set[str], Path, dict[bytes, bytes]]:
    """Twelve log entries, every third one the CA's; the CA's PEM file; both issuers by SHA-256."""
    other = TestCA(name="Someone Else CA")
    specs, mine = [], set()
    for i in range(12):
        owner = ca if i % 3 == 0 else other
        d = der(owner.issue(serial=900 + i, not_before=DAY0, dns=[f"ct{i}.example.com"]))
        specs.append(LogEntrySpec(d, (der(owner.cert),), timestamp=1_700_000_000_000 + i))
        if owner is ca:
            mine.add(hashlib.sha256(d).hexdigest())
    issuer = tmp_path / "issuer.pem"
    issuer.write_bytes(pem(ca.cert))
    return specs, mine, issuer, {hashlib.sha256(der(c.cert)).digest(): der(c.cert) for c in (ca, other)}


@pytest.mark.parametrize("api", ["rfc6962", "static-ct-api"])
def test_a_ct_log_is_read_from_a_notebook_twice_with_one_store(tmp_path, ca, api):
    specs, mine, issuer, issuers = ct_world(ca, tmp_path)
    key = LogKey()
    if api == "rfc6962":
        entries, hashes = rfc6962_log_entries(specs)
        server = CTServer(RFC6962Log(entries, key.sth(len(entries), mth(hashes)), max_batch=5))
    else:
        leaves, hashes = tiled_log_leaves(specs)
        server = CTServer(TiledLog(b"".join(hashes), key.checkpoint("notebook.test", len(hashes), mth(hashes)),
                                   tile_leaf=leaves.__getitem__, issuers=issuers))
    with server as srv:
        lg = key.log_json("Notebook log", url=srv.url) if api == "rfc6962" else \
            key.log_json("Notebook log", monitoring_url=srv.url, submission_url="https://notebook.test/")
        lists = tmp_path / "log_list.json"
        lists.write_text(json.dumps(log_list([lg]) if api == "rfc6962" else log_list(tiled=[lg])))
        options = ct.CtOptions(log_list=lists, logs=["Notebook log"], issuer_certs=[issuer], batch=4, progress=False)
        with CertStore(tmp_path / "store.sqlite3") as store:
            first, errors, _ = split(list(ct.read(options, store=store)))
            asked = len(srv.requests)
            second, errors_again, notices = split(list(ct.read(options, store=store)))
        entry_requests = [r for r in srv.requests[asked:] if "get-entries" in r or "/tile/" in r]
    assert errors == errors_again == []
    assert {hashlib.sha256(c.der).hexdigest() for c in first} == mine and len(first) == len(mine)
    assert [(c.der, c.provenance) for c in second] == [(c.der, c.provenance) for c in first]
    assert entry_requests == []  # the second read asked for the tree head only
    assert any("resumed at entry 12" in n.message for n in notices)


def test_files_and_the_store_are_read_through_their_options(tmp_path, ders):
    folder = tmp_path / "certs"
    (folder / "reports").mkdir(parents=True)
    (folder / "a.der").write_bytes(ders[0])
    (folder / "b.der").write_bytes(ders[1])
    (folder / "reports" / "old.der").write_bytes(ders[2])
    raws, errors, _ = split(list(files.read(files.FilesOptions([folder], exclude=[folder / "reports"]))))
    assert errors == [] and shas(raws) == shas([RawCert(d, "", "") for d in ders[:2]])
    with CertStore(tmp_path / "store.sqlite3") as store:
        store.put_many([RawCert(d, "crtsh-sql", f"crtsh:{n}", {"crtsh_id": n, "issuer_ca_id": 4 if n % 2 else 9})
                        for n, d in enumerate(ders)])
    stored, errors, _ = split(list(store_source.read(store_source.StoreOptions(tmp_path / "store.sqlite3",
                                                                               ca_ids=(4,)))))
    assert errors == [] and sorted(r.extra["crtsh_id"] for r in stored) == [1, 3, 5]

