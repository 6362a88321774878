"""Read an RFC 6962 log: verified get-sth, then get-entries in parallel ranges, in index order, resumable.

What a read keeps goes to the store with its log index. With verification on and the read starting at
entry 0 (or resumed with the Merkle prefix of an earlier read), entries are held in the store as pending
until the recomputed root matches the signed tree head; only then are they handed on, so a log that
serves entries it did not sign contributes no certificate.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import requests

from scanner.core.net import FetchError, RateLimiter, RetryableError
from scanner.sources.base import RawCert, SourceError, SourceItem, SourceNotice
from scanner.sources.ct.context import SOURCE, Context, ms_to_datetime, resumed_notice, skipped_log
from scanner.sources.ct.leaf import LeafError, parse_rfc6962_entry
from scanner.sources.ct.loglist import LogInfo
from scanner.sources.ct.merkle import CompactRange
from scanner.sources.ct.verify import VerifyError, sth_from_json, verify_tree_head
from scanner.sources.store import CTProgress

RawEntry = tuple[str, str]  # (leaf_input, extra_data) as base64, decoded per entry so one bad entry stays one error


def _json_object(resp: requests.Response) -> None:
    try:
        body = resp.json()
    except ValueError:
        raise RetryableError(f"{resp.url} answered {resp.status_code} with a body that is not JSON",
                             status=resp.status_code, body=resp.text[:200]) from None
    if not isinstance(body, dict):
        raise RetryableError(f"{resp.url} answered JSON that is not an object", body=resp.text[:200])


def fetch_range(ctx: Context, log: LogInfo, limiter: RateLimiter, start: int, end: int) -> list[RawEntry]:
    """Entries [start, end) of a log; logs answer with fewer than asked, so ask again for the rest."""
    url = log.url + "ct/v1/get-entries"
    out: list[RawEntry] = []
    while start + len(out) < end:
        first = start + len(out)
        resp = ctx.get(url, limiter, params={"start": first, "end": end - 1}, validate=_json_object)
        entries = resp.json().get("entries")
        if not isinstance(entries, list) or not entries:
            raise FetchError(f"{url}?start={first}&end={end - 1}",
                             "answered no entries inside the tree; the log is broken or lagging",
                             resp.status_code, resp.text[:200])
        for e in entries[:end - first]:
            if not isinstance(e, dict):
                e = {}
            out.append((str(e.get("leaf_input", "")), str(e.get("extra_data", ""))))
    return out


def _ranges(start: int, end: int, batch: int) -> Iterator[tuple[int, int]]:
    for a in range(start, end, batch):
        yield a, min(end, a + batch)


def read_rfc6962_log(log: LogInfo, ctx: Context) -> Iterator[SourceItem]:
    """Yield the audited CA's certificates (and unreadable entries) of one RFC 6962 log."""
    limiter = ctx.limiter()
    try:
        resp = ctx.get(log.url + "ct/v1/get-sth", limiter, validate=_json_object)
        head = sth_from_json(resp.json(), log.name)
        if ctx.verify:
            verify_tree_head(log.key, head, log.name)
    except (FetchError, VerifyError) as exc:
        yield from skipped_log(log, "tree head", exc)
        return

    saved = ctx.saved(log)
    first, start, end, reuse = ctx.index_range(head.tree_size, saved)
    tree: CompactRange | None = None
    if reuse and saved is not None and saved.stack is not None and start == saved.next:
        try:
            tree = CompactRange.from_json(start, saved.stack)
        except (ValueError, TypeError):
            tree = None
    elif start == 0:
        tree = CompactRange()
    # Held back until the root is checked: only when the read can reach the signed tree size from entry 0.
    hold = ctx.verify and tree is not None and end == head.tree_size
    if reuse and start > first:
        yield resumed_notice(log, first, start)
    if not hold:
        yield from ctx.stored(log, first, start)
        if ctx.verify:
            why = (f"the read starts at entry {first}" if first > 0 else
                   f"it stops at entry {end} of {head.tree_size}" if end < head.tree_size else
                   "an earlier read left no Merkle prefix to resume from")
            yield SourceNotice(f"CT log {log.name}: the tree head signature was checked, but the entries read "
                               f"could not be checked against its root ({why})")
    progress = CTProgress(first, start, head.tree_size, tree.to_json() if tree else None)
    if start < end:
        tree, hold, stopped = yield from _read_entries(log, ctx, limiter, progress, tree, end, hold)
        if stopped:
            if hold:  # what this run read stays pending for a rerun to check; earlier checked reads stand
                yield from ctx.stored(log, first, end)
            return
    if not hold:
        return
    assert tree is not None
    if tree.size == head.tree_size and tree.root() == head.root_hash:
        ctx.store.ct_confirm(ctx.selection, log.url)  # type: ignore[union-attr]
        yield from ctx.stored(log, first, end)
        return
    ctx.store.ct_forget(ctx.selection, log.url)  # type: ignore[union-attr]
    got = tree.root().hex() if tree.size == head.tree_size else f"a tree of {tree.size} entries"
    yield SourceError(SOURCE, log.url, f"{log.name}: the {end} entries served do not hash to the signed "
                      f"root for tree size {head.tree_size} ({got} != {head.root_hash.hex()}); the log served "
                      "entries it did not commit to, so none of its certificates are reported", stage="verify")
    yield SourceNotice(f"CT log {log.name}: entries do not match the signed tree head of size "
                       f"{head.tree_size}; nothing from this log is reported", True)


def _read_entries(log: LogInfo, ctx: Context, limiter: RateLimiter, progress: CTProgress,
                  tree: CompactRange | None, end: int, hold: bool
                  ) -> Generator[SourceItem, None, tuple[CompactRange | None, bool, bool]]:
    """Fetch [progress.next, end) in parallel ranges; store (and unless held, yield) what the CA issued.

    Returns the Merkle prefix reached, whether entries are still held for the root check, and whether
    the read stopped before `end`.
    """
    start, first = progress.next, progress.first
    bar = ctx.bar(log, end - first, start - first)
    pool = ThreadPoolExecutor(max_workers=max(1, ctx.config.ct_parallel), thread_name_prefix="ct-get-entries")
    ranges = _ranges(start, end, max(1, ctx.config.ct_batch))
    window: deque[tuple[int, int, Future[list[RawEntry]]]] = deque()
    try:
        for _ in range(max(1, ctx.config.ct_parallel)):
            a_b = next(ranges, None)
            if a_b:
                window.append((*a_b, pool.submit(fetch_range, ctx, log, limiter, *a_b)))
        while window:
            a, b, fut = window.popleft()
            try:
                raw = fut.result()
            except FetchError as exc:
                yield SourceError(SOURCE, f"{log.url}#{a}", f"cannot read entries {a}..{b - 1} of {log.name}: "
                                  f"{exc}; rerun to resume at entry {a}")
                yield SourceNotice(f"CT log {log.name}: stopped at entry {a} of {end} (log unreachable); "
                                   "rerun to resume", True)
                return tree, hold, True
            a_b = next(ranges, None)
            if a_b:
                window.append((*a_b, pool.submit(fetch_range, ctx, log, limiter, *a_b)))
            kept: list[tuple[int, RawCert]] = []
            problems: list[SourceItem] = []
            for k, (li_b64, ed_b64) in enumerate(raw):
                index = a + k
                where = f"{log.url}#{index}"
                try:
                    leaf_input = base64.b64decode(li_b64, validate=True)
                    extra = base64.b64decode(ed_b64, validate=True)
                except (binascii.Error, ValueError) as exc:
                    tree = None  # without the leaf bytes the root cannot be recomputed
                    problems.append(SourceError(SOURCE, where, f"entry is not base64: {exc}", stage="parse"))
                    continue
                if tree is not None:
                    tree.push(0, hashlib.sha256(b"\x00" + leaf_input).digest())
                try:
                    entry = parse_rfc6962_entry(leaf_input, extra)
                except LeafError as exc:
                    problems.append(SourceError(SOURCE, where, f"malformed log entry: {exc}",
                                                hashlib.sha256(leaf_input).hexdigest(), stage="parse"))
                    continue
                if ctx.filter.keep(entry):
                    kept.append((index, RawCert(entry.cert_der, SOURCE, where,
                                                {"first_seen": ms_to_datetime(entry.timestamp)})))
            if tree is None and hold:
                hold = False  # a leaf that cannot be hashed: the root check is impossible, say so below
                yield SourceNotice(f"CT log {log.name}: an entry could not be decoded, so the entries read could "
                                   "not be checked against the signed root")
                ctx.store.ct_confirm(ctx.selection, log.url)  # type: ignore[union-attr]
                yield from ctx.stored(log, first, a)
            progress = progress._replace(next=b, stack=tree.to_json() if tree is not None else None)
            ctx.commit(log, kept, progress, pending=hold)
            yield from problems
            if not hold:
                for _, item in kept:
                    yield item
            bar.update(b - a)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
    return tree, hold, False
