"""Read an RFC 6962 log: verified get-sth, then get-entries in parallel ranges, in index order, resumable."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import requests

from ...net import FetchError, RateLimiter, RetryableError
from ..base import RawCert, SourceError, SourceItem, SourceNotice
from .checkpoint_state import LogState, StateFile
from .context import SOURCE, Context, ms_to_datetime, skipped_log
from .leaf import LeafError, parse_rfc6962_entry
from .loglist import LogInfo
from .merkle import CompactRange
from .verify import VerifyError, sth_from_json, verify_tree_head

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

    state, path = ctx.load_state(log)
    first, start, end, reuse = ctx.index_range(head.tree_size, state)
    tree: CompactRange | None = None
    if reuse and state.stack is not None:
        try:
            tree = CompactRange.from_json(start, state.stack) if start == state.next_index else None
        except (ValueError, TypeError):
            tree = None
    elif start == 0:
        tree = CompactRange()
    if reuse and start > first:
        yield SourceNotice(f"CT log {log.name}: resumed at entry {start} (entries {first}..{start - 1} were "
                           f"read by an earlier run; delete {path.path} to read them again)")
    state = LogState(log.url, start, tree.to_json() if tree else None, head.tree_size, {"first": first})
    ctx.start_state(path, state)
    if start >= end:
        path.close()
        return

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
                return
            a_b = next(ranges, None)
            if a_b:
                window.append((*a_b, pool.submit(fetch_range, ctx, log, limiter, *a_b)))
            for k, (li_b64, ed_b64) in enumerate(raw):
                index = a + k
                where = f"{log.url}#{index}"
                item: SourceItem | None = None
                try:
                    leaf_input = base64.b64decode(li_b64, validate=True)
                    extra = base64.b64decode(ed_b64, validate=True)
                except (binascii.Error, ValueError) as exc:
                    tree = None  # without the leaf bytes the root cannot be recomputed
                    item = SourceError(SOURCE, where, f"entry is not base64: {exc}", stage="parse")
                else:
                    if tree is not None:
                        tree.push(0, hashlib.sha256(b"\x00" + leaf_input).digest())
                    try:
                        entry = parse_rfc6962_entry(leaf_input, extra)
                    except LeafError as exc:
                        item = SourceError(SOURCE, where, f"malformed log entry: {exc}",
                                           hashlib.sha256(leaf_input).hexdigest(), stage="parse")
                    else:
                        if ctx.filter.keep(entry):
                            item = RawCert(entry.cert_der, SOURCE, where,
                                           {"first_seen": ms_to_datetime(entry.timestamp)})
                if item is not None:
                    yield item
                    # Saved once the consumer asked for more: what it was handed is never handed again.
                    _advance(ctx, path, state, index + 1, tree)
            _advance(ctx, path, state, b, tree)
            bar.update(b - a)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
        path.close()

    if tree is not None and ctx.verify and end == head.tree_size and tree.size == end \
            and tree.root() != head.root_hash:
        yield SourceError(SOURCE, log.url, f"{log.name}: the {end} entries served do not hash to the signed "
                          f"root for tree size {head.tree_size} ({tree.root().hex()} != "
                          f"{head.root_hash.hex()}); the log served entries it did not commit to",
                          stage="verify")
        yield SourceNotice(f"CT log {log.name}: entries do not match the signed tree head of size "
                           f"{head.tree_size}", True)


def _advance(ctx: Context, path: StateFile, state: LogState, next_index: int,
             tree: CompactRange | None) -> None:
    state.next_index = next_index
    state.stack = tree.to_json() if tree is not None and tree.size == next_index else None
    ctx.save_state(path, state)
