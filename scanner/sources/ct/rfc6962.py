"""Read an RFC 6962 log: verified get-sth, then get-entries in parallel ranges, in index order, resumable.

What a read keeps goes to the store with its log index. With verification on and the read starting at
entry 0 (or resumed with the Merkle prefix of an earlier read), entries are held in the store as pending
until the recomputed root matches the signed tree head; only then are they handed on, so a log that
serves entries it did not sign contributes no certificate.

The steps, each usable alone: fetch_tree_head, plan_read, fetch_range (one batch, short answers asked
again) and fetch_batches (batches in parallel, in index order), check_batch (decode, hash into the tree,
filter), commit_batch (store and hand on), check_root.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import requests

from scanner.core.bounded import response_json
from scanner.core.net import FetchError, RateLimiter, RetryableError
from scanner.sources.base import RawCert, SourceError, SourceItem, SourceNotice
from scanner.sources.ct.context import (
    SOURCE,
    Context,
    ms_to_datetime,
    older_head,
    resumed_notice,
    skipped_log,
    unreachable,
)
from scanner.sources.ct.issuers import IssuerFilter
from scanner.sources.ct.leaf import LeafError, parse_rfc6962_entry
from scanner.sources.ct.loglist import LogInfo
from scanner.sources.ct.merkle import CompactRange
from scanner.sources.ct.verify import (
    TreeHead,
    VerifyError,
    check_final_tree_head,
    sth_from_json,
    verify_tree_head,
)
from scanner.sources.store import CTProgress

RawEntry = tuple[str, str]  # (leaf_input, extra_data) as base64, decoded per entry so one bad entry stays one error


def _json_object(resp: requests.Response) -> None:
    try:
        body = response_json(resp, "CT log answer")
    except ValueError as exc:
        raise RetryableError(f"{resp.url} answered {resp.status_code} with a body that is not JSON ({exc})",
                             status=resp.status_code, body=resp.content[:200].decode("latin-1")) from None
    if not isinstance(body, dict):
        raise RetryableError(f"{resp.url} answered JSON that is not an object", body=resp.text[:200])


def fetch_tree_head(ctx: Context, log: LogInfo, limiter: RateLimiter) -> TreeHead:
    """The log's signed tree head, its signature checked unless verification is off; FetchError or VerifyError."""
    resp = ctx.get(log.url + "ct/v1/get-sth", limiter, validate=_json_object)
    head = sth_from_json(response_json(resp), log.name)
    if ctx.verify:
        verify_tree_head(log.key, head, log.name)
        check_final_tree_head(log.final_tree_head, head.tree_size, head.root_hash,
                              f"{log.name}: tree head for size {head.tree_size}")
    return head


@dataclass
class LogRead:
    """Where one read of a log stands; the steps below move it on."""

    log: LogInfo
    head: TreeHead
    first: int  # the first index asked for
    end: int  # the index to stop before
    progress: CTProgress  # entries [progress.first, progress.next) are read
    tree: CompactRange | None  # Merkle prefix of [0, progress.next); None when the root cannot be recomputed
    hold: bool  # entries wait in the store as pending until the root is checked


def merkle_prefix(saved: CTProgress | None, start: int, reuse: bool) -> CompactRange | None:
    """The Merkle prefix of [0, start) to hash on from: empty at entry 0, an earlier read's, or None."""
    if reuse and saved is not None and saved.stack is not None and start == saved.next:
        try:
            return CompactRange.from_json(start, saved.stack)
        except (ValueError, TypeError):
            return None
    return CompactRange() if start == 0 else None


def plan_read(ctx: Context, log: LogInfo, head: TreeHead) -> LogRead:
    """Which entries this read fetches, from which Merkle prefix, and whether it can hold them for the root check."""
    saved = ctx.saved(log)
    first, start, end, reuse = ctx.index_range(head.tree_size, saved)
    tree = merkle_prefix(saved, start, reuse)
    # Held back until the root is checked: only when the read can reach the signed tree size from entry 0.
    hold = ctx.verify and tree is not None and end == head.tree_size
    progress = CTProgress(first, start, head.tree_size, tree.to_json() if tree else None)
    return LogRead(log, head, first, end, progress, tree, hold)


def _opening(ctx: Context, read: LogRead) -> Iterator[SourceItem]:
    """What a read says before fetching: where it resumed, and the earlier entries it cannot hold back."""
    log, first, start, end, size = read.log, read.first, read.progress.next, read.end, read.head.tree_size
    if start > first:
        yield resumed_notice(log, first, start)
    if read.hold:
        return
    yield from ctx.stored(log, first, start)
    if ctx.verify:
        why = (f"the read starts at entry {first}" if first > 0 else
               f"it stops at entry {end} of {size}" if end < size else
               "an earlier read left no Merkle prefix to resume from")
        yield SourceNotice(f"CT log {log.name}: the tree head signature was checked, but the entries read "
                           f"could not be checked against its root ({why})")


def fetch_range(ctx: Context, log: LogInfo, limiter: RateLimiter, start: int, end: int) -> list[RawEntry]:
    """Entries [start, end) of a log; logs answer with fewer than asked, so ask again for the rest."""
    url = log.url + "ct/v1/get-entries"
    out: list[RawEntry] = []
    while start + len(out) < end:
        first = start + len(out)
        resp = ctx.get(url, limiter, params={"start": first, "end": end - 1}, validate=_json_object)
        entries = response_json(resp).get("entries")
        if not isinstance(entries, list) or not entries:
            raise FetchError(f"{url}?start={first}&end={end - 1}",
                             "answered no entries inside the tree; the log is broken or lagging",
                             resp.status_code, resp.text[:200])
        for e in entries[:end - first]:
            if not isinstance(e, dict):
                e = {}
            out.append((str(e.get("leaf_input", "")), str(e.get("extra_data", ""))))
    return out


class BatchFailed(Exception):
    """The entries [start, end) could not be fetched; cause says why."""

    def __init__(self, start: int, end: int, cause: FetchError):
        super().__init__(str(cause))
        self.start, self.end, self.cause = start, end, cause


def fetch_batches(ctx: Context, log: LogInfo, limiter: RateLimiter, start: int,
                  end: int) -> Iterator[tuple[int, int, list[RawEntry]]]:
    """(a, b, entries) of [start, end) in index order, options.parallel batches in flight; BatchFailed ends them."""
    parallel, size = max(1, ctx.options.parallel), max(1, ctx.options.batch)
    ranges = ((a, min(end, a + size)) for a in range(start, end, size))
    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="ct-get-entries")
    window: deque[tuple[int, int, Future[list[RawEntry]]]] = deque()

    def submit() -> None:
        a_b = next(ranges, None)
        if a_b:
            window.append((*a_b, pool.submit(fetch_range, ctx, log, limiter, *a_b)))

    try:
        for _ in range(parallel):
            submit()
        while window:
            a, b, fut = window.popleft()
            try:
                raw = fut.result()
            except FetchError as exc:
                raise BatchFailed(a, b, exc) from exc
            submit()
            yield a, b, raw
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


@dataclass
class Batch:
    """One fetched batch, decoded: the certificates the filter keeps and the entries that could not be read."""

    start: int
    end: int
    kept: list[tuple[int, RawCert]] = field(default_factory=list)
    problems: list[SourceError] = field(default_factory=list)
    hashed: bool = True  # every leaf went into the tree (False: one was not base64, the root is lost)


def check_batch(log: LogInfo, issuers: IssuerFilter, start: int, raw: list[RawEntry],
                tree: CompactRange | None) -> Batch:
    """Decode entries start.. of one batch, hash each leaf into tree (when there is one), keep the CA's."""
    batch = Batch(start, start + len(raw))
    for k, (li_b64, ed_b64) in enumerate(raw):
        index = start + k
        where = f"{log.url}#{index}"
        try:
            leaf_input = base64.b64decode(li_b64, validate=True)
            extra = base64.b64decode(ed_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            batch.hashed, tree = False, None  # without the leaf bytes the root cannot be recomputed
            batch.problems.append(SourceError(SOURCE, where, f"entry is not base64: {exc}", stage="parse"))
            continue
        if tree is not None:
            tree.push(0, hashlib.sha256(b"\x00" + leaf_input).digest())
        try:
            entry = parse_rfc6962_entry(leaf_input, extra)
        except LeafError as exc:
            batch.problems.append(SourceError(SOURCE, where, f"malformed log entry: {exc}",
                                              hashlib.sha256(leaf_input).hexdigest(), stage="parse"))
            continue
        if issuers.keep(entry):
            batch.kept.append((index, RawCert(entry.cert_der, SOURCE, where,
                                              {"first_seen": ms_to_datetime(entry.timestamp)})))
    return batch


def _stop_holding(ctx: Context, read: LogRead, upto: int) -> Iterator[SourceItem]:
    """The root check became impossible: say so, and hand on what was held back before entry `upto`."""
    read.hold = False
    yield SourceNotice(f"CT log {read.log.name}: an entry could not be decoded, so the entries read could "
                       "not be checked against the signed root")
    ctx.store.ct_confirm(ctx.selection, read.log.url)
    yield from ctx.stored(read.log, read.first, upto)


def commit_batch(ctx: Context, read: LogRead, batch: Batch) -> Iterator[SourceItem]:
    """Store a checked batch with the read's new resume point; yield its problems and, unless held, its certificates."""
    if not batch.hashed:
        read.tree = None
        if read.hold:
            yield from _stop_holding(ctx, read, batch.start)
    read.progress = read.progress._replace(next=batch.end, stack=read.tree.to_json() if read.tree else None)
    ctx.commit(read.log, batch.kept, read.progress, pending=read.hold)
    yield from batch.problems
    if not read.hold:
        for _, item in batch.kept:
            yield item


def read_entries(ctx: Context, read: LogRead, limiter: RateLimiter) -> Generator[SourceItem, None, bool]:
    """Fetch, check and commit [progress.next, end) batch by batch; returns True when the log stopped answering."""
    log, start = read.log, read.progress.next
    bar = ctx.bar(log, read.end - read.first, start - read.first)
    batches = fetch_batches(ctx, log, limiter, start, read.end)
    try:
        for a, b, raw in batches:
            yield from commit_batch(ctx, read, check_batch(log, ctx.filter, a, raw, read.tree))
            bar.update(b - a)
    except BatchFailed as exc:
        yield from unreachable(log, f"entries {exc.start}..{exc.end - 1} of {log.name}", exc.start, read.end,
                               exc.cause)
        return True
    finally:
        batches.close()  # a consumer that stops early must not leave requests in flight
        bar.close()
    return False


def check_root(ctx: Context, read: LogRead) -> Iterator[SourceItem]:
    """Compare the held entries' root with the signed one: hand them all on, or none with an error."""
    log, head, tree = read.log, read.head, read.tree
    assert tree is not None
    if tree.size == head.tree_size and tree.root() == head.root_hash:
        ctx.store.ct_confirm(ctx.selection, log.url)
        yield from ctx.stored(log, read.first, read.end)
        return
    ctx.store.ct_forget(ctx.selection, log.url)
    got = tree.root().hex() if tree.size == head.tree_size else f"a tree of {tree.size} entries"
    yield SourceError(SOURCE, log.url, f"{log.name}: the {read.end} entries served do not hash to the signed "
                      f"root for tree size {head.tree_size} ({got} != {head.root_hash.hex()}); the log served "
                      "entries it did not commit to, so none of its certificates are reported", stage="verify")
    yield SourceNotice(f"CT log {log.name}: entries do not match the signed tree head of size "
                       f"{head.tree_size}; nothing from this log is reported", True)


def read_rfc6962_log(log: LogInfo, ctx: Context) -> Iterator[SourceItem]:
    """Yield the audited CA's certificates (and unreadable entries) of one RFC 6962 log."""
    limiter = ctx.limiter()
    try:
        head = fetch_tree_head(ctx, log, limiter)
    except (FetchError, VerifyError) as exc:
        yield from skipped_log(log, "tree head", exc, ctx)
        return
    older = older_head(ctx, log, head.tree_size)
    if older is not None:
        yield from older
        return
    read = plan_read(ctx, log, head)
    yield from _opening(ctx, read)
    if read.progress.next < read.end:
        stopped = yield from read_entries(ctx, read, limiter)
        if stopped:
            if read.hold:  # what this run read stays pending for a rerun to check; earlier checked reads stand
                yield from ctx.stored(log, read.first, read.end)
            return
    if read.hold:
        yield from check_root(ctx, read)
