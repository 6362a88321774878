"""Registration status of registrable domains: recorded answers, the cache, then RDAP/WHOIS/DNS.

The pipeline submits names while it parses certificates; lookups run meanwhile on an asyncio
loop in a worker thread. Every answer is tri-state and carries its evidence; a failure is
UNKNOWN, never UNREGISTERED.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from scanner.core.cache import Cache
from scanner.core.config import Config
from scanner.core.net import Gate
from scanner.core.records import REGISTRATION_COLUMNS, Registration, RegistrationStatus, coerce
from scanner.enrich.dns import DnsClient
from scanner.enrich.lookups import failed_to_connect, utc_now
from scanner.enrich.rdap import RdapClient, json_loads
from scanner.enrich.whois import WhoisClient

log = logging.getLogger(__name__)

CACHE_NAMESPACE = "registration"
#: How long an answer is trusted: registrations rarely end, but a free name can be taken any day.
CACHE_TTL = {
    RegistrationStatus.REGISTERED.value: timedelta(days=30),
    RegistrationStatus.UNREGISTERED.value: timedelta(days=1),
}
_DATE_COLUMNS = [name for name, dtype in REGISTRATION_COLUMNS.items() if dtype.startswith("datetime")]
_KNOWN = (RegistrationStatus.REGISTERED.value, RegistrationStatus.UNREGISTERED.value)
_FLUSH_EVERY = 256  # cache writes are batched: one transaction per this many network answers


def _iso(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


#: A result row: the values of REGISTRATION_COLUMNS in order. Tuples, because a 100k-row table is
#: built column-wise with zip(*rows). Dates stay datetimes for answers of this run and are ISO
#: strings for recorded answers and cache hits: both become the same column, and formatting them
#: only where a string is needed (the cache) keeps it out of the per-lookup path.
Row = tuple[Any, ...]
_STATUS, _METHOD = 1, 2


def _row(reg: Registration) -> Row:
    return (reg.domain, reg.status.value, *reg[2:])


def _cache_row(row: Row) -> list[Any]:
    """The JSON value the cache keeps for one row: the row without its domain, dates as ISO strings."""
    return [row[1], row[2], row[3], row[4], _iso(row[5]), _iso(row[6]), row[7]]


def normalise_domain(name: str) -> str:
    """Lower case, no surrounding spaces or trailing dot."""
    return name.strip().lower().rstrip(".")


def load_registry_answers(paths: Iterable[Path]) -> dict[str, Row]:
    """Known answers (registered / unregistered) from registrations.csv files of earlier runs."""
    answers: dict[str, Row] = {}
    for path in paths:
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read recorded registry answers {path}: {exc}") from exc
        missing = {"domain", "status"} - set(df.columns)
        if missing:
            raise ValueError(
                f"{path} is not a registrations.csv (missing columns {', '.join(sorted(missing))}); "
                f"expected the columns {', '.join(REGISTRATION_COLUMNS)}"
            )
        for rec in df.to_dict("records"):
            status = str(rec.get("status", "")).strip().lower()
            if status not in _KNOWN:
                continue  # a recorded unknown is no answer: ask again
            values = {name: (rec.get(name) or None) for name in REGISTRATION_COLUMNS}
            values["domain"] = normalise_domain(str(rec["domain"]))
            values["status"] = status
            attempts = str(rec.get("attempts", "")).strip()
            values["attempts"] = int(attempts) if attempts.isdigit() else 0
            answers[values["domain"]] = tuple(values[name] for name in REGISTRATION_COLUMNS)
    return answers


def registration_frame(rows: list[Row]) -> pd.DataFrame:
    """Row tuples (dates as datetimes or ISO strings) -> a frame with exactly REGISTRATION_COLUMNS."""
    names = list(REGISTRATION_COLUMNS)
    transposed = list(zip(*rows)) if rows else [()] * len(names)
    columns: dict[str, Any] = {}
    for name, values in zip(names, transposed):
        dtype = REGISTRATION_COLUMNS[name]
        if dtype.startswith("datetime"):
            series = pd.Series(values, dtype="object")
            columns[name] = pd.to_datetime(series, utc=True, format="ISO8601", errors="coerce").astype(dtype)
        elif name in ("server", "detail", "method"):
            columns[name] = pd.Series(["" if v is None else v for v in values], dtype=dtype)
        else:
            # Built in the schema's dtype at once: a second cast of 100k strings costs as much again.
            columns[name] = pd.Series(list(values), dtype=dtype)
    return coerce(pd.DataFrame(columns), REGISTRATION_COLUMNS)


@dataclass
class _Counts:
    recorded: int = 0
    cache_hits: int = 0
    network: int = 0
    network_failures: int = 0
    offline: int = 0
    switched_off: int = 0
    errors: int = 0


@dataclass
class _Batch:
    """One submitted batch: done is set when its last name is answered."""

    remaining: int
    done: asyncio.Future[None]

    def one_finished(self) -> None:
        """Count one answered name; the last one releases the batch."""
        self.remaining -= 1
        if self.remaining <= 0 and not self.done.done():
            self.done.set_result(None)


@dataclass
class _Lane:
    """Domains waiting for one registry service; its own workers so a slow registry starves no other."""

    queue: collections.deque[tuple[str, _Batch]] = field(default_factory=collections.deque)
    workers: int = 0


class RegistrationService:
    """Looks up registrable domains in the background; results() waits and returns the table."""

    def __init__(
        self,
        config: Config,
        *,
        progress: bool | None = None,
        cache: Cache | None = None,
        backoff_base: float = 0.5,
    ):
        self.config = config
        self.mode = config.registration
        self._backoff_base = backoff_base
        if cache is not None:
            self._cache: Cache | None = cache
        elif config.use_cache and self.mode != "off":
            self._cache = Cache.from_config(config)
        else:
            self._cache = None
        self._recorded = load_registry_answers(config.registry_answers)
        self._rows: dict[str, Row] = {}
        self._order: dict[str, None] = {}
        self._pending: list[concurrent.futures.Future[None]] = []
        self._counts = _Counts()
        self._to_cache: list[Row] = []
        self._lanes: dict[str, _Lane] = {}
        self._lane_by_parent: dict[str, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._rdap: RdapClient | None = None
        self._whois: WhoisClient | None = None
        self._dns: DnsClient | None = None
        self._notice: str | None = None
        self._warned = False
        self._closed = False
        show = progress if progress is not None else config.progress
        if show is None:
            show = sys.stderr.isatty() and not config.quiet
        self._bar = tqdm(total=0, unit="domain", desc="registration", file=sys.stderr, disable=not show)

    # --- public API -----------------------------------------------------------------------

    def submit(self, domains: Iterable[str]) -> None:
        """Queue registrable domains for lookup (duplicates ignored); returns at once."""
        if self._closed:
            raise RuntimeError("RegistrationService is closed")
        fresh: list[str] = []
        with self._lock:
            for raw in domains:
                name = normalise_domain(raw)
                if name and name not in self._order:
                    self._order[name] = None
                    fresh.append(name)
        if not fresh:
            return
        self._bar.total += len(fresh)
        self._bar.refresh()
        loop = self._ensure_loop()
        self._pending.append(asyncio.run_coroutine_threadsafe(self._process(fresh), loop))

    def results(self) -> pd.DataFrame:
        """Wait for every submitted lookup; one row per domain, columns REGISTRATION_COLUMNS."""
        self._wait()
        rows = [self._rows[name] for name in self._order if name in self._rows]
        return registration_frame(rows)

    def summary(self) -> dict[str, Any]:
        """Counts: lookups by status and by method, cache hits, recorded answers, network failures."""
        self._wait()
        by_status: collections.Counter[str] = collections.Counter()
        by_method: collections.Counter[str] = collections.Counter()
        for row in self._rows.values():
            by_status[row[_STATUS]] += 1
            by_method[row[_METHOD] or "none"] += 1
        c = self._counts
        return {
            "domains": len(self._rows),
            "by_status": {s.value: by_status.get(s.value, 0) for s in RegistrationStatus},
            "by_method": dict(by_method),
            "recorded_answers": c.recorded,
            "cache_hits": c.cache_hits,
            "network_lookups": c.network,
            "network_failures": c.network_failures,
            "offline_unknown": c.offline,
            "switched_off": c.switched_off,
            "internal_errors": c.errors,
        }

    @property
    def notice(self) -> str | None:
        """One plain sentence when the network was unreachable, else None."""
        return self._notice

    def close(self) -> None:
        """Stop: lookups still running are abandoned (answers so far are cached), the thread ends."""
        if self._closed:
            return
        self._closed = True
        try:
            for future in self._pending:
                future.cancel()
            self._pending = []
        finally:
            if self._loop is not None and self._thread is not None:
                asyncio.run_coroutine_threadsafe(self._close_clients(), self._loop).result()
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join()
                self._loop.close()
                self._loop = self._thread = None
            self._bar.close()
            if self._cache is not None:
                self._cache.close()

    def __enter__(self) -> RegistrationService:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the worker thread ----------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=self._run_loop, args=(loop,), name="ctscan-registration", daemon=True
            )
            thread.start()
            self._loop, self._thread = loop, thread
        return self._loop

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def _wait(self) -> None:
        while self._pending:
            pending, self._pending = self._pending, []
            for future in pending:
                future.result()
        if self._loop is not None and self._to_cache:
            asyncio.run_coroutine_threadsafe(self._flush_soon(), self._loop).result()
        self._check_network()

    async def _flush_soon(self) -> None:
        self._flush_cache()

    async def _close_clients(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._flush_cache()
        if self._rdap is not None:
            await self._rdap.close()

    def _store(self, rows: list[Row]) -> None:
        for row in rows:
            self._rows[row[0]] = row
        self._bar.update(len(rows))

    async def _process(self, names: list[str]) -> None:
        """Answer one submitted batch: recorded answers, then the cache, then the network."""
        if self.mode == "off":
            now = utc_now().isoformat()
            self._store(
                [
                    _row_of(
                        name, RegistrationStatus.UNKNOWN, "none", "registration lookups switched off", now
                    )
                    for name in names
                ]
            )
            self._counts.switched_off += len(names)
            return
        rest = names
        if self._recorded:
            hits = [self._recorded[n] for n in rest if n in self._recorded]
            self._store(hits)
            self._counts.recorded += len(hits)
            rest = [n for n in rest if n not in self._recorded]
        if self._cache is not None and rest:
            rest = self._from_cache(rest)
        if not rest:
            return
        if self.config.offline:
            now = utc_now().isoformat()
            detail = "offline: not in the cache or the recorded answers"
            self._store([_row_of(n, RegistrationStatus.UNKNOWN, "none", detail, now) for n in rest])
            self._counts.offline += len(rest)
            return
        loop = asyncio.get_running_loop()
        batch = _Batch(len(rest), loop.create_future())
        lane_of = self._lane_of
        for name in rest:
            self._enqueue(lane_of(name), name, batch)
        await batch.done

    def _from_cache(self, names: list[str]) -> list[str]:
        assert self._cache is not None
        # The stored text, decoded here one value at a time: each list lives only until its row tuple
        # is built, so 100k cache hits leave no 100k lists behind to make the cyclic GC rescan the heap
        # (measured: 4 full collections per 100k hits become 1 or 2; the GC stays on for every thread).
        return self._split_cached(names, self._cache.get_many_text(CACHE_NAMESPACE, names))

    def _split_cached(self, names: list[str], cached: dict[str, str]) -> list[str]:
        hits: list[Row] = []
        rest: list[str] = []
        width = len(REGISTRATION_COLUMNS) - 1
        any_method = self.mode == "auto"
        for name in names:
            text = cached.get(name)
            try:
                value = json_loads(text) if text is not None else None
            except ValueError:
                value = None
            # value = the row without its domain; anything else (an older layout) is a miss
            if (
                isinstance(value, list)
                and len(value) == width
                and value[0] in _KNOWN
                and (any_method or value[1] == self.mode)
            ):
                hits.append((name, *value))
            else:
                rest.append(name)
        self._store(hits)
        self._counts.cache_hits += len(hits)
        return rest

    def _flush_cache(self) -> None:
        if self._cache is None or not self._to_cache:
            return
        batch, self._to_cache = self._to_cache, []
        by_status: dict[str, dict[str, list[Any]]] = collections.defaultdict(dict)
        for row in batch:
            by_status[row[_STATUS]][row[0]] = _cache_row(row)
        for status, items in by_status.items():
            self._cache.put_many(CACHE_NAMESPACE, items, CACHE_TTL[status])

    # --- lanes and lookups ----------------------------------------------------------------

    def _clients(self) -> tuple[RdapClient, WhoisClient, DnsClient]:
        if self._rdap is None or self._whois is None or self._dns is None:
            gate = Gate(self.config.lookup_concurrency)
            base = self._backoff_base
            self._rdap = RdapClient(self.config, gate=gate, backoff_base=base)
            self._whois = WhoisClient(self.config, gate=gate, backoff_base=base)
            self._dns = DnsClient(self.config, gate=gate, backoff_base=base)
        return self._rdap, self._whois, self._dns

    def _lane_of(self, name: str) -> str:
        # Names under one parent (everything after the first label) share a registry service.
        parent = name.partition(".")[2]
        lane = self._lane_by_parent.get(parent)
        if lane is None:
            lane = self._lane_by_parent[parent] = self._lane_for(name)
        return lane

    def _lane_for(self, name: str) -> str:
        rdap, _, _ = self._clients()
        if self.mode == "dns":
            return "dns"
        assert rdap.bootstrap is not None
        bases = rdap.bootstrap.base_urls(name) if self.mode != "whois" else ()
        if bases:
            return "rdap:" + bases[0]
        return ("whois:" if self.mode != "rdap" else "rdap:") + name.rsplit(".", 1)[-1]

    def _enqueue(self, lane_key: str, name: str, batch: _Batch) -> None:
        lane = self._lanes.get(lane_key)
        if lane is None:
            lane = self._lanes[lane_key] = _Lane()
        lane.queue.append((name, batch))
        if lane.workers < self.config.lookup_concurrency:
            lane.workers += 1
            task = asyncio.get_running_loop().create_task(self._worker(lane))
            # The loop keeps only weak references to tasks: hold them until they end.
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _worker(self, lane: _Lane) -> None:
        rdap, whois, dns = self._clients()
        # With one method there is no chain to walk: call it directly (this loop is the hot path).
        single = {"rdap": rdap.lookup, "whois": whois.lookup, "dns": dns.lookup}.get(self.mode)
        queue, rows, counts, bar = lane.queue, self._rows, self._counts, self._bar
        try:
            while queue:
                name, batch = queue.popleft()
                try:
                    if single is not None:
                        reg = await single(name)
                        no_connection = failed_to_connect(reg)
                    else:
                        reg, no_connection = await self._lookup(name)
                except Exception as exc:  # one odd domain must not stop the batch
                    log.warning("registration lookup of %s failed unexpectedly: %s", name, exc, exc_info=True)
                    counts.errors += 1
                    reg = Registration(
                        name,
                        RegistrationStatus.UNKNOWN,
                        self.mode if self.mode != "auto" else "none",
                        detail=f"internal error: {type(exc).__name__}: {exc}",
                        checked_at=utc_now(),
                    )
                    no_connection = False
                row = _row(reg)
                rows[name] = row
                bar.update()
                counts.network += 1
                if no_connection:
                    counts.network_failures += 1
                if self._cache is not None and row[_STATUS] in _KNOWN:
                    self._to_cache.append(row)
                    if len(self._to_cache) >= _FLUSH_EVERY:
                        self._flush_cache()
                batch.one_finished()
        finally:
            lane.workers -= 1

    async def _lookup(self, name: str) -> tuple[Registration, bool]:
        """One domain through auto mode's chain; also says whether it failed for want of a connection."""
        rdap, whois, dns = self._clients()
        first = await (rdap.lookup(name) if rdap.covers(name) else whois.lookup(name))
        if first.status is not RegistrationStatus.UNKNOWN:
            return first, False
        last = await dns.lookup(name)
        if last.status is not RegistrationStatus.UNKNOWN:
            return (
                Registration(
                    name,
                    last.status,
                    last.method,
                    last.server,
                    f"{last.detail}; {first.method} gave no answer: {first.detail}",
                    last.checked_at,
                    last.registered_at,
                    first.attempts + last.attempts,
                ),
                False,
            )
        combined = Registration(
            name,
            RegistrationStatus.UNKNOWN,
            first.method,
            first.server,
            f"{first.method}: {first.detail}; dns: {last.detail}",
            last.checked_at,
            None,
            first.attempts + last.attempts,
        )
        # The DNS fallback only times out when offline (UDP has no "refused"): the first method decides.
        return combined, failed_to_connect(first)

    def _check_network(self) -> None:
        c = self._counts
        if c.network and c.network_failures == c.network:
            self._notice = f"No network: {c.network} domain(s) could not be checked and are marked unknown"
            if not self._warned:
                log.warning("%s; check the connection or proxy, or use --offline with a cache.", self._notice)
                self._warned = True
        else:
            self._notice = None


def _row_of(name: str, status: RegistrationStatus, method: str, detail: str, now: str) -> Row:
    return (name, status.value, method, "", detail, now, None, 0)
