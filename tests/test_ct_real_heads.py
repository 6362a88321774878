"""Tree heads as real logs serve them: an older head than an earlier run read to (a stale replica or cache)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from scanner.sources import ct
from scanner.sources.base import RawCert, SourceError, SourceNotice
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
from tests.synth import TestCA, der, utc

ORIGIN = "heads.example.org/2026h1"


@pytest.fixture(scope="module")
def specs() -> list[LogEntrySpec]:
    """300 entries cycling over a few real certificates of one CA."""
    ca = TestCA(name="Heads CA")
    certs = [der(ca.issue(serial=20 + i, not_before=utc("2025-06-01T00:00"), dns=[f"h{i}.example.com"]))
             for i in range(4)]
    return [LogEntrySpec(certs[i % 4], (der(ca.cert),), False, b"", 1_750_000_000_000 + i) for i in range(300)]


def rfc6962_log(key: LogKey, specs: list[LogEntrySpec], signed: int) -> RFC6962Log:
    entries, hashes = rfc6962_log_entries(specs)
    return RFC6962Log(entries, key.sth(signed, mth(hashes[:signed])), size=signed)


def tiled_log(key: LogKey, specs: list[LogEntrySpec], signed: int) -> TiledLog:
    leaves, hashes = tiled_log_leaves(specs)
    return TiledLog(b"".join(hashes[:signed]), key.checkpoint(ORIGIN, signed, mth(hashes[:signed])),
                    tile_leaf=leaves.__getitem__)


def options(tmp_path: Path, key: LogKey, api: str, url: str, final: tuple[int, bytes] | None = None) -> ct.CtOptions:
    obj = (key.log_json("Heads", url=url) if api == "rfc6962" else
           key.log_json("Heads", monitoring_url=url, submission_url=f"https://{ORIGIN}/"))
    if final is not None:
        obj["state"] = {"readonly": {"timestamp": "2025-12-01T00:00:00Z", "final_tree_head": {
            "sha256_root_hash": base64.b64encode(final[1]).decode(), "tree_size": final[0]}}}
    path = tmp_path / "log_list.json"
    path.write_text(json.dumps(log_list([obj]) if api == "rfc6962" else log_list(tiled=[obj])))
    return ct.CtOptions(log_list=path, logs=("Heads",), retries=1, timeout=5.0, progress=False, batch=64)


def indexes(items: list) -> list[int]:
    return [int(i.provenance.rsplit("#", 1)[1]) for i in items if isinstance(i, RawCert)]


@pytest.mark.parametrize("api", ["rfc6962", "static"])
def test_an_older_tree_head_than_an_earlier_run_read_keeps_every_entry_read_since(tmp_path, specs, api):
    key, store = LogKey(), tmp_path / "store.sqlite"
    make = rfc6962_log if api == "rfc6962" else tiled_log
    with CTServer(make(key, specs, 300)) as srv:
        first = list(ct.read(options(tmp_path, key, api, srv.url), store=store))
        srv.log = make(key, specs, 200)  # the next round meets a replica (or cache) 100 entries behind
        asked = len(srv.requests)
        stale = list(ct.read(options(tmp_path, key, api, srv.url), store=store))
        srv.log = make(key, specs, 300)  # and the round after, the log as it is
        again = list(ct.read(options(tmp_path, key, api, srv.url), store=store))
    assert indexes(first) == indexes(stale) == indexes(again) == list(range(300))
    assert not [i for i in first + stale + again if isinstance(i, SourceError)]
    assert [n for n in stale if isinstance(n, SourceNotice) and "older than the 300" in n.message]
    assert len(srv.requests) - asked == 2  # the stale round asked its tree head only; the next asked it again


@pytest.mark.parametrize("api", ["rfc6962", "static"])
def test_a_readonly_log_signing_another_root_for_its_final_size_is_refused(tmp_path, specs, api):
    key = LogKey()
    make = rfc6962_log if api == "rfc6962" else tiled_log
    _, hashes = tiled_log_leaves(specs) if api == "static" else rfc6962_log_entries(specs)
    frozen = (300, mth(hashes))
    with CTServer(make(key, specs, 300)) as srv:
        good = list(ct.read(options(tmp_path, key, api, srv.url, frozen)))
        other = list(specs)
        other[7] = other[8]  # the same size, another tree: what the log list froze is not what it now signs
        srv.log = make(key, other, 300)
        bad = list(ct.read(options(tmp_path, key, api, srv.url, frozen), store=tmp_path / "s.sqlite"))
    assert indexes(good) == list(range(300))
    errors = [i for i in bad if isinstance(i, SourceError)]
    assert [e.stage for e in errors] == ["verify"] and "final tree head" in errors[0].error
    assert not indexes(bad) and [n for n in bad if isinstance(n, SourceNotice) and n.partial]
