"""static-ct-api logs as real ones behave past the simple case: partial tiles dropped or served full, rewritten history."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from scanner.sources import ct
from scanner.sources.base import RawCert, SourceError, SourceNotice
from tests.loopback.ct_server import (
    TILE,
    CTServer,
    LogEntrySpec,
    LogKey,
    TiledLog,
    log_list,
    mth,
    tiled_log_leaves,
)
from tests.synth import TestCA, der, utc

ORIGIN = "tiles.example.org/2026h1"
PARTIAL = re.compile(r"^tile/(?:data|0)/((?:x\d{3}/)*\d{3})\.p/\d+$")


@pytest.fixture(scope="module")
def specs() -> list[LogEntrySpec]:
    """600 entries cycling over a few real certificates and precertificates of one CA."""
    ca = TestCA(name="Tiles CA")
    when = utc("2025-06-01T00:00")
    certs = [ca.issue(serial=10 + i, not_before=when, dns=[f"t{i}.example.com"], precert=i % 2 == 1)
             for i in range(6)]
    return [LogEntrySpec(der(certs[i % 6]), (der(ca.cert),), i % 6 % 2 == 1, b"\0" * 32, 1_750_000_000_000 + i)
            for i in range(600)]


class GrownLog(TiledLog):
    """A log that has grown past the checkpoint it serves: `partial` says how it answers a partial tile request.

    "omit": 404 for a partial level-0 or data tile whose full tile exists (static-ct-api allows dropping it);
    "full": the full tile instead of the partial one.
    """

    def __init__(self, *args, partial: str, **kw):
        super().__init__(*args, **kw)
        self.partial, self.asked = partial, []

    def answer(self, path: str, query: dict[str, list[str]]):
        self.asked.append(path)
        m = PARTIAL.match(path)
        if m:
            head = path.partition(".p/")[0]
            if (int(m.group(1).replace("x", "").replace("/", "")) + 1) * TILE <= self.n:  # its full tile exists
                if self.partial == "omit":
                    return 404, b"partial tile no longer served", {}
                return super().answer(head, query)
        return super().answer(path, query)


def grown_log(key: LogKey, specs: list[LogEntrySpec], signed_size: int, partial: str) -> GrownLog:
    leaves, hashes = tiled_log_leaves(specs)
    checkpoint = key.checkpoint(ORIGIN, signed_size, mth(hashes[:signed_size]))
    return GrownLog(b"".join(hashes), checkpoint, tile_leaf=leaves.__getitem__, partial=partial)


def grown_server(key: LogKey, specs: list[LogEntrySpec], signed_size: int, partial: str) -> CTServer:
    return CTServer(grown_log(key, specs, signed_size, partial))


def options(tmp_path: Path, key: LogKey, url: str, **kw) -> ct.CtOptions:
    path = tmp_path / "log_list.json"
    path.write_text(json.dumps(log_list(tiled=[key.log_json("Tiles", monitoring_url=url,
                                                            submission_url=f"https://{ORIGIN}/")])))
    return ct.CtOptions(log_list=path, logs=("Tiles",), retries=1, timeout=5.0, progress=False, **kw)


def indexes(items: list) -> list[int]:
    return [int(i.provenance.rsplit("#", 1)[1]) for i in items if isinstance(i, RawCert)]


@pytest.mark.parametrize("partial", ["omit", "full"])
def test_a_partial_tile_dropped_or_served_full_still_gives_exactly_the_signed_entries(tmp_path, specs, partial):
    key = LogKey()
    with grown_server(key, specs, 300, partial) as srv:
        items = list(ct.read(options(tmp_path, key, srv.url)))
    errors = [i for i in items if isinstance(i, SourceError)]
    assert not errors, errors[0].error
    assert not [n for n in items if isinstance(n, SourceNotice) and n.partial]
    assert indexes(items) == list(range(300))  # entries 300.. of the full tile are not the signed tree's
    certs = [i for i in items if isinstance(i, RawCert)]
    assert all(c.der == specs[k].cert_der for k, c in zip(range(300), certs, strict=True))
    if partial == "omit":
        assert "tile/0/001.p/44" in srv.log.asked and "tile/0/001" in srv.log.asked
        assert "tile/data/001" in srv.log.asked


def test_a_rerun_after_the_log_grew_past_a_dropped_partial_tile_resumes_without_gap_or_repeat(tmp_path, specs):
    key, store = LogKey(), tmp_path / "store.sqlite"
    with grown_server(key, specs, 300, "omit") as srv:
        first = indexes(list(ct.read(options(tmp_path, key, srv.url), store=store)))
        srv.log = grown_log(key, specs, 520, "omit")  # the same log, later
        second = list(ct.read(options(tmp_path, key, srv.url), store=store))
        asked = srv.log.asked
    assert first == list(range(300))
    assert not [i for i in second if isinstance(i, SourceError)]
    assert [n.message for n in second if isinstance(n, SourceNotice) and "resumed at entry 300" in n.message]
    assert indexes(second) == list(range(520))  # 0..299 from the store, then 300..519 from the log, once each
    assert "tile/data/000" not in asked  # nothing before the resume point is fetched again


@pytest.mark.parametrize("later_size", [520, 300])
def test_a_log_that_rewrote_entries_an_earlier_run_read_is_a_verify_error_and_nothing_newer_is_read(
        tmp_path, specs, later_size):
    key, store = LogKey(), tmp_path / "store.sqlite"
    rewritten = list(specs)
    rewritten[5] = replace(specs[5], timestamp=specs[5].timestamp + 1)  # one SCT time changed: another tree
    with grown_server(key, specs, 300, "full") as srv:
        assert indexes(list(ct.read(options(tmp_path, key, srv.url), store=store))) == list(range(300))
        srv.log = grown_log(key, rewritten, later_size, "full")
        items = list(ct.read(options(tmp_path, key, srv.url), store=store))
    errors = [i for i in items if isinstance(i, SourceError)]
    assert [e.stage for e in errors] == ["verify"] and "rewrote entries it had signed" in errors[0].error
    assert [n for n in items if isinstance(n, SourceNotice) and n.partial]
    assert indexes(items) == list(range(300))  # what the earlier signed read kept, and nothing past it
