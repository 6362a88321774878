"""The RFC 6962 reader's steps, each on its own: prefix, one batch fetched, one batch checked, committed, the root."""

from __future__ import annotations

import base64
import hashlib

import pytest

from scanner.core.net import FetchError
from scanner.sources.base import RawCert, SourceError, SourceNotice
from scanner.sources.ct.context import Context
from scanner.sources.ct.issuers import IssuerFilter
from scanner.sources.ct.loglist import RFC6962, LogInfo
from scanner.sources.ct.merkle import CompactRange
from scanner.sources.ct.options import CtOptions
from scanner.sources.ct.rfc6962 import (
    LogRead,
    check_batch,
    check_root,
    commit_batch,
    fetch_range,
    merkle_prefix,
    plan_read,
)
from scanner.sources.ct.verify import TreeHead
from scanner.sources.store import CertStore, CTProgress
from tests.loopback.ct_server import CTServer, LogEntrySpec, LogKey, RFC6962Log, mth, rfc6962_log_entries
from tests.synth import TestCA, der, utc


@pytest.fixture(scope="module")
def log_entries() -> dict:
    """Six entries, the even ones issued by the audited CA."""
    ca, other = TestCA(name="Steps CA"), TestCA(name="Steps Other CA")
    specs = []
    for i in range(6):
        owner = ca if i % 2 == 0 else other
        specs.append(LogEntrySpec(der(owner.issue(serial=40 + i, not_before=utc("2024-03-01T00:00"),
                                                  dns=[f"s{i}.example.com"])), (der(owner.cert),)))
    entries, hashes = rfc6962_log_entries(specs)
    raw = [(base64.b64encode(li).decode(), base64.b64encode(ed).decode()) for li, ed in entries]
    return {"ca": ca, "entries": entries, "hashes": hashes, "raw": raw}


def a_log(url: str = "https://log.test/") -> LogInfo:
    return LogInfo(name="Steps log", api=RFC6962, url=url, key=b"", log_id=b"")


def context(log_entries: dict, **options) -> Context:
    options.setdefault("retries", 0)
    return Context(CtOptions(progress=False, **options), IssuerFilter([log_entries["ca"].cert]), CertStore(":memory:"))


def test_the_merkle_prefix_is_empty_at_entry_0_an_earlier_reads_when_resumed_and_unknown_otherwise():
    assert merkle_prefix(None, 0, False).size == 0
    earlier = CompactRange()
    earlier.extend([hashlib.sha256(bytes([i])).digest() for i in range(5)])
    saved = CTProgress(0, 5, 9, earlier.to_json())
    resumed = merkle_prefix(saved, 5, True)
    assert resumed is not None and resumed.root() == earlier.root()
    assert merkle_prefix(saved._replace(stack=[["x", "y"]]), 5, True) is None  # a broken stack is no prefix
    assert merkle_prefix(None, 5, False) is None


def test_a_short_get_entries_answer_is_asked_again_for_the_rest(log_entries):
    key = LogKey()
    entries, hashes = log_entries["entries"], log_entries["hashes"]
    with CTServer(RFC6962Log(entries, key.sth(6, mth(hashes)), max_batch=2)) as srv:
        ctx = context(log_entries)
        got = fetch_range(ctx, a_log(srv.url), ctx.limiter(), 1, 6)
        asked = [r for r in srv.requests if "get-entries" in r]
    assert got == log_entries["raw"][1:6]
    assert len(asked) == 3  # 1-2, 3-4, 5


def test_a_log_answering_no_entries_inside_its_tree_is_a_fetch_error(log_entries):
    key = LogKey()
    # max_batch 0: every get-entries answer is an empty list, however many entries the tree holds
    with CTServer(RFC6962Log(log_entries["entries"], key.sth(6, mth(log_entries["hashes"])), max_batch=0)) as srv:
        ctx = context(log_entries)
        with pytest.raises(FetchError, match="no entries inside the tree"):
            fetch_range(ctx, a_log(srv.url), ctx.limiter(), 2, 6)


def test_a_checked_batch_keeps_the_cas_entries_hashes_every_leaf_and_names_the_broken_one(log_entries):
    raw = list(log_entries["raw"])
    raw[3] = (base64.b64encode(b"\x00\x00" + b"\x01" * 9).decode(), "")  # a leaf that is not a MerkleTreeLeaf
    tree = CompactRange()
    batch = check_batch(a_log(), IssuerFilter([log_entries["ca"].cert]), 0, raw, tree)
    assert [i for i, _ in batch.kept] == [0, 2, 4]
    assert all(isinstance(r, RawCert) and r.provenance == f"https://log.test/#{i}" for i, r in batch.kept)
    assert [(p.provenance, p.stage) for p in batch.problems] == [("https://log.test/#3", "parse")]
    assert batch.hashed and tree.size == 6  # a malformed leaf is still hashed: the root stays checkable


def test_an_entry_that_is_not_base64_loses_the_root_check(log_entries):
    raw = list(log_entries["raw"])
    raw[1] = ("not base64!", "")
    batch = check_batch(a_log(), IssuerFilter([log_entries["ca"].cert]), 10, raw, CompactRange())
    assert not batch.hashed and (batch.start, batch.end) == (10, 16)
    assert "not base64" in batch.problems[0].error and batch.problems[0].provenance == "https://log.test/#11"


def held_read(ctx: Context, log_entries: dict, root: bytes | None = None) -> LogRead:
    """A verified read of the whole six-entry tree from entry 0, as plan_read makes it."""
    hashes = log_entries["hashes"]
    head = TreeHead(6, 0, root if root is not None else mth(hashes), b"")
    read = plan_read(ctx, a_log(), head)
    assert read.hold and read.tree is not None and (read.first, read.progress.next, read.end) == (0, 0, 6)
    return read


def test_a_held_batch_is_stored_pending_and_handed_on_only_when_the_root_matches(log_entries):
    ctx = context(log_entries)
    read = held_read(ctx, log_entries)
    batch = check_batch(read.log, ctx.filter, 0, log_entries["raw"], read.tree)
    assert list(commit_batch(ctx, read, batch)) == []  # held: nothing handed on yet
    assert read.progress.next == 6 and list(ctx.stored(read.log, 0, 6)) == []
    items = list(check_root(ctx, read))
    assert [r.provenance for r in items] == [f"https://log.test/#{i}" for i in (0, 2, 4)]


def test_held_entries_whose_root_differs_are_forgotten_with_a_verify_error(log_entries):
    ctx = context(log_entries)
    read = held_read(ctx, log_entries, root=hashlib.sha256(b"forged").digest())
    list(commit_batch(ctx, read, check_batch(read.log, ctx.filter, 0, log_entries["raw"], read.tree)))
    items = list(check_root(ctx, read))
    assert [type(i) for i in items] == [SourceError, SourceNotice]
    assert items[0].stage == "verify" and items[1].partial
    assert ctx.saved(read.log) is None  # no resume point: a rerun reads the log again from entry 0
    assert ctx.store.ct_confirm(ctx.selection, read.log.url) == 0  # and nothing is left pending to trust


def test_a_batch_that_cannot_be_hashed_releases_what_was_held_and_says_why(log_entries):
    ctx = context(log_entries)
    read = held_read(ctx, log_entries)
    list(commit_batch(ctx, read, check_batch(read.log, ctx.filter, 0, log_entries["raw"][:4], read.tree)))
    broken = [("not base64!", ""), *log_entries["raw"][5:]]
    items = list(commit_batch(ctx, read, check_batch(read.log, ctx.filter, 4, broken, read.tree)))
    assert not read.hold and read.tree is None
    assert isinstance(items[0], SourceNotice) and "could not be checked against the signed root" in items[0].message
    assert [i.provenance for i in items if isinstance(i, RawCert)] == ["https://log.test/#0", "https://log.test/#2"]
    assert [i.provenance for i in items if isinstance(i, SourceError)] == ["https://log.test/#4"]
