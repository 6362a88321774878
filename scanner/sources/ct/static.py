"""Read a static-ct-api (tiled) log: verified checkpoint, data tiles checked against hash tiles and the root."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests

from scanner.core.net import FetchError, RateLimiter, RetryableError
from scanner.sources.base import RawCert, SourceError, SourceItem, SourceNotice
from scanner.sources.ct.context import (
    SOURCE,
    Context,
    maybe_gunzip,
    ms_to_datetime,
    older_head,
    resumed_notice,
    skipped_log,
    unreachable,
)
from scanner.sources.ct.leaf import LeafError, LogEntry, iter_tile_leaves
from scanner.sources.ct.loglist import LogInfo
from scanner.sources.ct.merkle import (
    TILE_HEIGHT,
    TILE_WIDTH,
    CompactRange,
    aligned_pieces,
    perfect_root,
    tile_path,
    tile_width,
)
from scanner.sources.ct.verify import (
    Checkpoint,
    VerifyError,
    check_final_tree_head,
    parse_checkpoint,
    verify_checkpoint,
)
from scanner.sources.store import CTProgress

HASH = 32


def tile_url(prefix: str, level: int | str, n: int, width: int) -> str:
    """URL of a hash tile (level 0-5) or data tile (level 'data'), with `.p/W` for partial tiles."""
    return f"{prefix}tile/{level}/{tile_path(n)}" + (f".p/{width}" if width < TILE_WIDTH else "")


class TileReader:
    """Hash tiles (LRU-cached), data tiles and issuers (cached for good) of one log at one tree size."""

    def __init__(self, ctx: Context, log: LogInfo, tree_size: int, limiter: RateLimiter, cache_tiles: int = 64):
        self.ctx, self.log, self.size, self.limiter = ctx, log, tree_size, limiter
        self._tiles: OrderedDict[tuple[int, int], list[bytes]] = OrderedDict()
        self._max = cache_tiles
        self._lock = threading.Lock()
        self.issuers: dict[bytes, bytes | None] = {}
        self.failed_issuers: list[tuple[bytes, str]] = []  # reported by the reader, then cleared

    def hash_tile(self, level: int, n: int) -> list[bytes]:
        """The hashes of tile (level, n) at this tree size."""
        key = (level, n)
        with self._lock:
            if key in self._tiles:
                self._tiles.move_to_end(key)
                return self._tiles[key]
        width = tile_width(level, n, self.size)
        expected = width * HASH

        def check(resp: requests.Response) -> None:
            got = len(_hash_tile_body(resp.content, expected))
            if got not in (expected, TILE_WIDTH * HASH):
                raise RetryableError(f"{resp.url}: hash tile of {got} bytes, expected {expected}")

        body = _hash_tile_body(self._tile(level, n, width, validate=check).content, expected)[:expected]
        hashes = [body[i:i + HASH] for i in range(0, expected, HASH)]
        with self._lock:
            self._tiles[key] = hashes
            while len(self._tiles) > self._max:
                self._tiles.popitem(last=False)
        return hashes

    def node(self, height: int, index: int) -> bytes:
        """Hash of the perfect subtree of 2^height leaves at `index`, from the tile level just below it."""
        level, rest = divmod(height, TILE_HEIGHT)
        first = index << rest
        tile, off = divmod(first, TILE_WIDTH)
        return perfect_root(self.hash_tile(level, tile)[off:off + (1 << rest)])

    def data_tile(self, n: int) -> bytes:
        """Raw TileLeaf bytes of data tile n (gzip undone, whether by Content-Encoding or as stored)."""
        width = tile_width(0, n, self.size)
        resp = self._tile("data", n, width, bound="ct_tile")
        return maybe_gunzip(resp.content, url=resp.url)

    def _tile(self, level: int | str, n: int, width: int, **kwargs: Any) -> requests.Response:
        """Tile (level, n) of `width` entries; a partial tile the log no longer serves is read from its full tile.

        static-ct-api lets a log drop a partial tile once the full one exists, and lets a client ask for
        the full one instead: the first `width` entries of a full tile are the partial tile.
        """
        try:
            return self.ctx.get(tile_url(self.log.url, level, n, width), self.limiter, **kwargs)
        except FetchError as exc:
            if width >= TILE_WIDTH or exc.status != 404:
                raise
        return self.ctx.get(tile_url(self.log.url, level, n, TILE_WIDTH), self.limiter, **kwargs)

    def issuer(self, fingerprint: bytes) -> bytes | None:
        """The issuer certificate with this SHA-256, fetched once per run; None (and noted) if unavailable."""
        if fingerprint in self.issuers:
            return self.issuers[fingerprint]

        def check(resp: requests.Response) -> None:
            if hashlib.sha256(resp.content).digest() != fingerprint:
                raise RetryableError(f"{resp.url}: issuer certificate does not hash to its name")

        try:
            der: bytes | None = self.ctx.get(f"{self.log.url}issuer/{fingerprint.hex()}", self.limiter,
                                             validate=check, bound="ct_issuer").content
        except FetchError as exc:
            der = None
            self.failed_issuers.append((fingerprint, str(exc)))
        self.issuers[fingerprint] = der
        return der


@dataclass
class TileResult:
    """One fetched data tile with its level-0 hashes: entries, or where decoding broke."""

    n: int
    hashes: list[bytes]
    entries: list[LogEntry]
    decode_error: str = ""  # entries past len(entries) could not be decoded
    mismatch: int | None = None  # first entry index whose leaf hash differs from the hash tile


def _hash_tile_body(content: bytes, expected: int) -> bytes:
    """A hash tile's bytes, gzip undone; a full tile served for a partial one keeps its full length."""
    if len(content) in (expected, TILE_WIDTH * HASH):
        return content
    return maybe_gunzip(content, expected)


def fetch_tile(reader: TileReader, n: int) -> TileResult:
    """Data tile n and its level-0 hash tile, each leaf checked against its hash."""
    hashes = reader.hash_tile(0, n)
    data = reader.data_tile(n)
    entries: list[LogEntry] = []
    error = ""
    try:
        entries.extend(iter_tile_leaves(data))  # keeps the entries decoded before a break
    except LeafError as exc:
        error = str(exc)
    # More entries than hashes: a full data tile served for a partial one; the first len(hashes) are the tile.
    if not error and len(entries) < len(hashes):
        error = f"data tile holds {len(entries)} entries, its hash tile {len(hashes)}"
    result = TileResult(n, hashes, entries[:len(hashes)], error)
    for i, entry in enumerate(result.entries):
        if entry.leaf_hash != hashes[i]:
            result.mismatch = n * TILE_WIDTH + i
            break
    return result


def fetch_checkpoint(ctx: Context, log: LogInfo, limiter: RateLimiter) -> Checkpoint:
    """The log's checkpoint, its signature checked unless verification is off; FetchError or VerifyError."""
    text = ctx.get(log.url + "checkpoint", limiter).content
    if ctx.verify:
        cp = verify_checkpoint(text, log.key, log.origin, log.name)[0]
        check_final_tree_head(log.final_tree_head, cp.tree_size, cp.root_hash,
                              f"{log.name}: checkpoint for size {cp.tree_size}")
        return cp
    return parse_checkpoint(text, log.name)


def read_static_log(log: LogInfo, ctx: Context) -> Iterator[SourceItem]:
    """Yield the audited CA's certificates (and unreadable entries) of one static-ct-api log."""
    limiter = ctx.limiter()
    try:
        cp = fetch_checkpoint(ctx, log, limiter)
    except (FetchError, VerifyError) as exc:
        yield from skipped_log(log, "checkpoint", exc, ctx)
        return
    older = older_head(ctx, log, cp.tree_size)
    if older is not None:
        yield from older
        return

    size = cp.tree_size
    saved = ctx.saved(log)
    first, start, end, reuse = ctx.index_range(size, saved)
    if reuse and start > first:
        yield resumed_notice(log, first, start)
    # Tiles are checked against the signed checkpoint before anything is kept, so what the store
    # holds from earlier reads was checked too.
    yield from ctx.stored(log, first, start)
    earlier = _earlier_prefix(saved, start) if reuse and ctx.verify else None
    progress = CTProgress(first, start, size, earlier.to_json() if earlier else None)
    if start >= end:
        if earlier is not None and start == size and earlier.root() != cp.root_hash:
            yield from _rewritten(log, size, start, cp.root_hash, earlier.root())
        return

    reader = TileReader(ctx, log, size, limiter)
    parallel = max(1, ctx.options.parallel)
    first_tile, last_tile = start // TILE_WIDTH, (end - 1) // TILE_WIDTH
    bar = ctx.bar(log, end - first, start - first)
    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="ct-tiles")
    where = f"{log.name} at tree size {size}"
    try:
        prefix = CompactRange()
        if ctx.verify:
            for h, i in aligned_pieces(0, first_tile * TILE_WIDTH):
                prefix.push(h, reader.node(h, i))
        n = first_tile
        while n <= last_tile:
            batch = list(range(n, min(last_tile + 1, n + parallel)))
            n = batch[-1] + 1
            try:
                results = list(pool.map(lambda t: fetch_tile(reader, t), batch))
            except FetchError as exc:
                yield from unreachable(log, f"tiles {batch[0]}..{batch[-1]} of {log.name}",
                                       max(start, batch[0] * TILE_WIDTH), end, exc)
                return
            bad = next((r for r in results if r.mismatch is not None), None)
            if bad is not None and ctx.verify:
                yield SourceError(SOURCE, f"{log.url}#{bad.mismatch}", f"{where}: entry {bad.mismatch} of data "
                                  f"tile {bad.n} does not hash to its level-0 tile entry; the log serves "
                                  "entries it did not commit to", stage="verify")
                yield SourceNotice(f"CT log {log.name}: data tile {bad.n} does not match its hash tile; "
                                   f"stopped at entry {max(start, bad.n * TILE_WIDTH)}", True)
                return
            if ctx.verify:
                grown = prefix.copy()
                for r in results:
                    grown.extend(r.hashes)
                check = grown.copy()
                for h, i in aligned_pieces(grown.size, size):
                    check.push(h, reader.node(h, i))
                if check.root() != cp.root_hash:
                    yield SourceError(SOURCE, f"{log.url}#{batch[0] * TILE_WIDTH}", f"{where}: tiles "
                                      f"{batch[0]}..{batch[-1]} do not hash to the checkpoint root "
                                      f"({check.root().hex()} != {cp.root_hash.hex()}); the log serves tiles "
                                      "it did not sign", stage="verify")
                    yield SourceNotice(f"CT log {log.name}: hash tiles do not match the signed checkpoint of "
                                       f"size {size}; stopped at entry {max(start, batch[0] * TILE_WIDTH)}", True)
                    return
                if earlier is not None:
                    # The entries an earlier run read must still be this tree's first ones: the same
                    # resume point a rerun reaches, or a log that rewrote what it had signed.
                    seen = prefix.copy()
                    seen.extend(results[0].hashes[:start - first_tile * TILE_WIDTH])
                    if seen.stack != earlier.stack:
                        yield from _rewritten(log, size, start, seen.root(), earlier.root())
                        return
                    earlier = None
            running = prefix.copy()
            if ctx.verify:
                prefix = grown
            for r in results:
                items = list(_tile_items(log, reader, r, start, end, ctx))
                done = min(end, (r.n + 1) * TILE_WIDTH)
                running.extend(r.hashes[:done - r.n * TILE_WIDTH])
                progress = progress._replace(next=done, stack=running.to_json() if ctx.verify else None)
                ctx.commit(log, [(index, item) for index, item in items if isinstance(item, RawCert)], progress)
                for _, item in items:
                    yield item
                bar.update(done - max(start, r.n * TILE_WIDTH))
    except FetchError as exc:  # a hash tile or issuer outside a batch fetch
        yield from unreachable(log, log.name, progress.next, end, exc)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()


def _earlier_prefix(saved: CTProgress | None, start: int) -> CompactRange | None:
    """The Merkle prefix of [0, start) an earlier verified read saved, when it ends where this read resumes."""
    if saved is None or saved.stack is None or saved.next != start:
        return None
    try:
        return CompactRange.from_json(start, saved.stack)
    except (ValueError, TypeError):
        return None


def _rewritten(log: LogInfo, size: int, start: int, now: bytes, before: bytes) -> Iterator[SourceItem]:
    """The error and notice of a log whose signed tree no longer begins with the entries read before."""
    yield SourceError(SOURCE, f"{log.url}#{start}", f"{log.name} at tree size {size}: its first {start} entries "
                      f"hash to {now.hex()}, but to {before.hex()} when an earlier run read them under an earlier "
                      "checkpoint; the log rewrote entries it had signed (a split view), so nothing newer is read "
                      "from it", stage="verify")
    yield SourceNotice(f"CT log {log.name}: its tree at size {size} does not extend the one read before; "
                       f"stopped at entry {start}", True)


def _tile_items(log: LogInfo, reader: TileReader, r: TileResult, start: int, end: int,
                ctx: Context) -> Iterator[tuple[int, SourceItem]]:
    """(index, item) for the entries of one checked tile in [start, end): kept certificates and problems."""
    base = r.n * TILE_WIDTH
    for i in range(len(r.hashes)):
        index = base + i
        if index < start or index >= end:
            continue
        where = f"{log.url}#{index}"
        item: SourceItem | None
        if i < len(r.entries):
            entry = r.entries[i]
            item = RawCert(entry.cert_der, SOURCE, where, {"first_seen": ms_to_datetime(entry.timestamp)}) \
                if ctx.filter.keep(entry, reader.issuer) else None
        else:
            # The issuer of an undecodable entry is unknown: report it rather than risk missing the CA's.
            item = SourceError(SOURCE, where, f"data tile {r.n} of {log.name} cannot be decoded from entry "
                               f"{base + len(r.entries)} on: {r.decode_error}", stage="parse")
        for fp, why in reader.failed_issuers:
            yield index, SourceError(SOURCE, f"{log.url}issuer/{fp.hex()}", f"{log.name}: issuer certificate "
                                     f"{fp.hex()} is unavailable ({why}); entries it issued (from entry {index} "
                                     "on) cannot be attributed to a CA and were not kept")
            yield index, SourceNotice(f"CT log {log.name}: an issuer certificate could not be fetched; some "
                                      "entries could not be attributed", True)
        reader.failed_issuers.clear()
        if item is not None:
            yield index, item
