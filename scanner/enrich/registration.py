"""Registration status of registrable domains: recorded answers, the cache, then the network, fastest first.

`--registration auto` asks in the order that answers fastest: zone files (`--zone-file`), then the
delegation check (the TLD's own servers: delegated = registered, in one UDP round trip), then the
registry (RDAP, or WHOIS for TLDs without RDAP and when RDAP answers nothing readable) only for
the names the first two cannot settle (not delegated, SERVFAIL, silence). A name is unregistered only when the registry says so. RDAP
registration dates (for registered_after_issuance) are asked for every name with
`--registration-dates all`, else only for the names `look_up_dates` is given (the flagged ones).

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
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
from tqdm import tqdm

from scanner.core.cache import Cache
from scanner.core.config import Config
from scanner.core.net import Gate
from scanner.core.records import REGISTRATION_COLUMNS, Registration, RegistrationStatus, coerce
from scanner.core.times import duration_text
from scanner.enrich.delegation import DELEGATED, DelegationClient
from scanner.enrich.dns import DnsClient
from scanner.enrich.lookups import failed_to_connect, utc_now
from scanner.enrich.rdap import RdapClient, json_loads
from scanner.enrich.whois import WhoisClient
from scanner.enrich.zonefile import ZoneRead, read_zone_files
from scanner.parse.domains import registrable_domains

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
    zone_file: int = 0  # names found delegated in --zone-file files
    delegated: int = 0  # names the delegation check settled (registered)
    to_registry: int = 0  # names the delegation check could not settle, handed to RDAP/WHOIS
    dates_asked: int = 0  # registered names asked of RDAP/WHOIS for their registration date
    dates_found: int = 0


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


class _Job(NamedTuple):
    """One name waiting in a lane: its batch, and what an earlier step found (prior) or the row to date."""

    name: str
    batch: _Batch
    prior: Registration | None = None  # auto mode: the delegation check's unsettled answer
    dating: Row | None = None  # a registered row (delegation, zone file) asked again for its date


@dataclass
class _Lane:
    """Names waiting for one service (a TLD's DNS servers, a registry); its own workers, so none starves another."""

    kind: str  # "delegation", "registry" (auto's second step, and dates) or a single method's name
    queue: collections.deque[_Job] = field(default_factory=collections.deque)
    urgent: collections.deque[_Job] = field(default_factory=collections.deque)  # names of suspect certificates
    workers: int = 0
    rate: float = 0.0  # requests per second this lane is held to (0 = none)
    done: int = 0
    active: int = 0  # names taken by a worker and not answered yet
    started: float = 0.0

    def pending(self) -> int:
        """Names still waiting here or being looked up."""
        return len(self.queue) + len(self.urgent) + self.active


_SETTLING = ("zone-file", "delegation")  # methods that settle registered without a date
#: Auto mode takes "unregistered" only from the registry: a cached `--registration dns` NXDOMAIN is
#: asked again (a registered name on clientHold gives NXDOMAIN too).
_REGISTRY_METHODS = ("rdap", "whois")
_UNREGISTERED = RegistrationStatus.UNREGISTERED.value
_NO_DATE = "; no registration date: "
_OFFLINE = "offline: not in the cache, the recorded answers or the zone files"
_ETA_EVERY = 0.5  # seconds between two estimates of the time left, in the progress bar
_FLUSH_SECONDS = 5.0  # cache writes at least this often, so a killed run resumes from nearly where it was


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
        self._flushed_at = time.monotonic()
        self._lanes: dict[str, _Lane] = {}
        self._lane_by_parent: dict[str, str] = {}
        self._urgent: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._rdap: RdapClient | None = None
        self._whois: WhoisClient | None = None
        self._dns: DnsClient | None = None
        self._delegation: DelegationClient | None = None
        # --zone-file: names wait until every name is in (results()), then one pass over the zones
        self._zone_files = tuple(config.zone_files) if self.mode == "auto" else ()
        self._held: list[_Job] = []
        self._zones_read = not self._zone_files  # set on the loop's thread, where names are held or sent on
        self._zones_scheduled = False
        self._zone_read: ZoneRead | None = None
        self._dates_all = self.mode == "auto" and config.registration_dates == "all"
        self._eta_at = 0.0
        self._notice: str | None = None
        self._warned = False
        self._closed = False
        show = progress if progress is not None else config.progress
        if show is None:
            show = sys.stderr.isatty() and not config.quiet
        self._bar = tqdm(total=0, unit="domain", desc="registration", file=sys.stderr, disable=not show)

    # --- public API -----------------------------------------------------------------------

    def submit(self, domains: Iterable[str], *, first: Iterable[str] = ()) -> None:
        """Queue registrable domains for lookup (duplicates ignored); returns at once.

        first: names on already-suspect certificates (revoked, short-lived, ...): answered before the rest.
        """
        if self._closed:
            raise RuntimeError("RegistrationService is closed")
        fresh: list[str] = []
        with self._lock:
            self._urgent.update(normalise_domain(n) for n in first)
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

    def look_up_dates(self, domains: Iterable[str]) -> int:
        """Ask the registry for the registration date of these names where a zone file or delegation settled them.

        For `--registration-dates flagged`: after a first detection pass, the names of flagged
        certificates. Waits for the answers (results() then has the dates); returns how many were asked.
        """
        self._wait()
        if self.mode != "auto" or self.config.offline:
            return 0
        wanted = [n for n in dict.fromkeys(normalise_domain(d) for d in domains) if self._wants_date(n)]
        if not wanted:
            return 0
        self._bar.total += len(wanted)
        self._bar.refresh()
        loop = self._ensure_loop()
        self._pending.append(asyncio.run_coroutine_threadsafe(self._date(wanted), loop))
        self._wait()
        return len(wanted)

    def seed(self, registrations: pd.DataFrame) -> None:
        """Take a registrations table (of this run) as answers already given, e.g. before look_up_dates."""
        for rec in registrations[list(REGISTRATION_COLUMNS)].itertuples(index=False, name=None):
            values = [None if v is None or v is pd.NA or v is pd.NaT else v for v in rec]
            for i in (5, 6):  # checked_at, registered_at
                if values[i] is not None:
                    values[i] = pd.Timestamp(values[i]).to_pydatetime()
            values[7] = int(values[7]) if values[7] is not None else 0
            name = values[0]
            if name not in self._order:
                self._order[name] = None
            self._rows[name] = tuple(values)

    def summary(self) -> dict[str, Any]:
        """Counts: lookups by status and by method, cache hits, recorded answers, network failures, dates."""
        self._wait()
        by_status: collections.Counter[str] = collections.Counter()
        by_method: collections.Counter[str] = collections.Counter()
        for row in self._rows.values():
            by_status[row[_STATUS]] += 1
            by_method[row[_METHOD] or "none"] += 1
        c = self._counts
        out: dict[str, Any] = {
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
        if self.mode == "auto":
            out["settled_by"] = {"zone_file": c.zone_file, "delegation": c.delegated,
                                 "registry_after_delegation": c.to_registry}
            out["registration_dates"] = {"mode": self.config.registration_dates, "asked": c.dates_asked,
                                         "found": c.dates_found}
            if self._zone_read is not None:
                z = self._zone_read
                out["zone_files"] = {"files": len(self._zone_files), "lines": z.lines, "owners": z.owners,
                                     "found": len(z.hits), "seconds": round(z.seconds, 3)}
        if self._rdap is not None and self._rdap.politeness:
            out["rdap_rates"] = {origin: {"per_second": p.rate, "source": p.source}
                                 for origin, p in sorted(self._rdap.politeness.items())}
        return out

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
        if not self._zones_scheduled and self._zone_files and self._loop is not None:
            # every name is in: read the zone files once, then the names they did not settle go on
            self._zones_scheduled = True
            self._pending.append(asyncio.run_coroutine_threadsafe(self._read_zones(), self._loop))
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
        if self._delegation is not None:
            await self._delegation.close()

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
        undated = [n for n in names if self._wants_date(n)] if self._dates_all and not self.config.offline else []
        if not rest and not undated:
            return
        if self.config.offline and self._zones_read:
            now = utc_now().isoformat()
            self._store([_row_of(n, RegistrationStatus.UNKNOWN, "none", _OFFLINE, now) for n in rest])
            self._counts.offline += len(rest)
            return
        loop = asyncio.get_running_loop()
        batch = _Batch(len(rest) + len(undated), loop.create_future())
        for name in undated:  # --registration-dates all: an earlier run's delegation answer still wants its date
            self._bar.total += 1
            self._enqueue(self._registry_lane(name), _Job(name, batch, None, self._rows[name]))
        if not self._zones_read:
            self._held.extend(_Job(name, batch) for name in rest)
        else:
            lane_of = self._lane_of
            for name in rest:
                self._enqueue(lane_of(name), _Job(name, batch))
        await batch.done

    async def _read_zones(self) -> None:
        """One streaming pass over the zone files for every held name; the names not in them go on."""
        self._zones_read = True  # names submitted from now on go straight to the network
        held, self._held = self._held, []
        if not held:
            return
        wanted = {job.name for job in held}
        loop = asyncio.get_running_loop()
        read = await loop.run_in_executor(None, read_zone_files, self._zone_files, wanted)
        self._zone_read = read
        for problem in read.unreadable:
            log.warning("%s", problem)
        log.info("zone files: %d of %d names found delegated, %d lines read in %.1fs",
                 len(read.hits), len(wanted), read.lines, read.seconds)
        for job in held:
            hit = read.hits.get(job.name)
            if hit is None and self.config.offline:  # a zone file is local: offline reads it too
                self._counts.offline += 1
                self._finish(job, Registration(job.name, RegistrationStatus.UNKNOWN, "none", "", _OFFLINE, utc_now()),
                             False, network=False)
                continue
            if hit is None:
                self._enqueue(self._lane_of(job.name), job)
                continue
            reg = Registration(job.name, RegistrationStatus.REGISTERED, "zone-file", hit.path, hit.detail(),
                               hit.file_time, None, 0)
            self._counts.zone_file += 1
            if not self.config.offline:
                self._date_too(job, reg)
            self._finish(job, reg, False, network=False)

    async def _date(self, names: list[str]) -> None:
        batch = _Batch(len(names), asyncio.get_running_loop().create_future())
        for name in names:
            self._enqueue(self._registry_lane(name), _Job(name, batch, None, self._rows[name]))
        await batch.done

    def _wants_date(self, name: str) -> bool:
        row = self._rows.get(name)
        return (row is not None and row[_STATUS] == RegistrationStatus.REGISTERED.value
                and row[_METHOD] in _SETTLING and row[6] is None)

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
                and (value[1] == self.mode or (any_method and (value[0] != _UNREGISTERED
                                                               or value[1] in _REGISTRY_METHODS)))
            ):
                hits.append((name, *value))
            else:
                rest.append(name)
        self._store(hits)
        self._counts.cache_hits += len(hits)
        return rest

    def _flush_cache(self) -> None:
        self._flushed_at = time.monotonic()
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
            self._delegation = DelegationClient(self.config, gate=gate, backoff_base=base)
        return self._rdap, self._whois, self._dns

    def _lane_of(self, name: str) -> str:
        """The lane of a name's first network step."""
        if self.mode == "auto":
            return "delegation:" + name.rsplit(".", 1)[-1]
        return self._registry_lane(name)

    def _registry_lane(self, name: str) -> str:
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

    def _enqueue(self, lane_key: str, job: _Job) -> None:
        lane = self._lanes.get(lane_key)
        if lane is None:
            kind = "delegation" if lane_key.startswith("delegation:") else (
                "registry" if self.mode == "auto" else self.mode)
            lane = self._lanes[lane_key] = _Lane(kind, started=time.monotonic())
            if lane_key.startswith("rdap:"):
                lane.rate = self._clients()[0].rate_of(lane_key[5:])
        (lane.urgent if job.name in self._urgent else lane.queue).append(job)
        if lane.workers < self.config.lookup_concurrency:
            lane.workers += 1
            task = asyncio.get_running_loop().create_task(self._worker(lane))
            # The loop keeps only weak references to tasks: hold them until they end.
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _worker(self, lane: _Lane) -> None:
        rdap, whois, dns = self._clients()
        delegation = self._delegation
        assert delegation is not None
        # With one method there is no chain to walk: call it directly (this loop is the hot path).
        single = {"rdap": rdap.lookup, "whois": whois.lookup, "dns": dns.lookup}.get(lane.kind)
        queue, urgent = lane.queue, lane.urgent
        try:
            while queue or urgent:
                job = urgent.popleft() if urgent else queue.popleft()
                name = job.name
                lane.active += 1
                try:
                    if single is not None:
                        reg = await single(name)
                        no_connection = failed_to_connect(reg)
                    elif lane.kind == "delegation":
                        found = await delegation.lookup(name)
                        if found.state != DELEGATED:
                            # not delegated, or no answer: the registry decides
                            self._counts.to_registry += 1
                            lane.done += 1
                            self._enqueue(self._registry_lane(name), job._replace(prior=found.as_registration()))
                            continue
                        reg, no_connection = found.as_registration(), False
                        self._counts.delegated += 1
                    elif job.dating is not None:
                        reg, no_connection = await self._dated(job.dating, rdap, whois)
                    else:
                        reg, no_connection = await self._after_delegation(name, job.prior, rdap, whois)
                except Exception as exc:  # one odd domain must not stop the batch
                    log.warning("registration lookup of %s failed unexpectedly: %s", name, exc, exc_info=True)
                    self._counts.errors += 1
                    reg = Registration(
                        name,
                        RegistrationStatus.UNKNOWN,
                        self.mode if self.mode != "auto" else "none",
                        detail=f"internal error: {type(exc).__name__}: {exc}",
                        checked_at=utc_now(),
                    )
                    no_connection = False
                finally:
                    lane.active -= 1
                lane.done += 1
                self._date_too(job, reg)
                self._finish(job, reg, no_connection)
        finally:
            lane.workers -= 1

    def _date_too(self, job: _Job, reg: Registration) -> None:
        """--registration-dates all: a name a zone file or delegation settled waits, in its batch, for its date."""
        if self._dates_all and job.dating is None and reg.status is RegistrationStatus.REGISTERED \
                and reg.method in _SETTLING:
            job.batch.remaining += 1
            self._bar.total += 1
            self._enqueue(self._registry_lane(job.name), _Job(job.name, job.batch, None, _row(reg)))

    def _finish(self, job: _Job, reg: Registration, no_connection: bool, *, network: bool = True) -> None:
        row = _row(reg)
        self._rows[job.name] = row
        self._bar.update()
        if network:
            self._counts.network += 1
            if no_connection:
                self._counts.network_failures += 1
        if self._cache is not None and row[_STATUS] in _KNOWN:
            self._to_cache.append(row)
            if len(self._to_cache) >= _FLUSH_EVERY or time.monotonic() - self._flushed_at > _FLUSH_SECONDS:
                self._flush_cache()
        now = time.monotonic()
        if now - self._eta_at > _ETA_EVERY and not self._bar.disable:
            self._eta_at = now
            self._bar.set_postfix_str(self.eta_text(), refresh=False)
        job.batch.one_finished()

    def estimated_seconds_left(self) -> float | None:
        """How long the queued lookups will take: the slowest lane, at its rate limit or its pace so far."""
        now = time.monotonic()
        worst: float | None = None
        for lane in list(self._lanes.values()):
            pending = lane.pending()
            if not pending:
                continue
            pace = lane.rate or (lane.done / (now - lane.started) if lane.done and now > lane.started else 0.0)
            if not pace:
                continue
            left = pending / pace
            worst = left if worst is None else max(worst, left)
        return worst

    def eta_text(self) -> str:
        """'about 3.2 h left' for the progress bar ('' when nothing is queued or the pace is not known yet)."""
        left = self.estimated_seconds_left()
        if left is None:
            return ""
        return f"about {left:.0f} s left" if left < 90 else f"about {duration_text(left / 3600)} left"

    async def _after_delegation(self, name: str, prior: Registration | None, rdap: RdapClient,
                                whois: WhoisClient) -> tuple[Registration, bool]:
        """Auto mode's registry step for a name the delegation check could not settle (RDAP, else WHOIS)."""
        reg = await (rdap.lookup(name) if rdap.covers(name) else whois.lookup(name))
        if reg.method == "rdap" and reg.status is RegistrationStatus.UNKNOWN and _rdap_answered(reg):
            # The RDAP service answered, but nothing readable (403, 400, a web page, a 429 to the end):
            # the registry's WHOIS may still say.
            other = await whois.lookup(name)
            if other.status is not RegistrationStatus.UNKNOWN:
                reg = other._replace(detail=f"{other.detail}; after RDAP: {reg.detail}",
                                     attempts=reg.attempts + other.attempts)
            else:
                reg = reg._replace(detail=f"{reg.detail}; whois: {other.detail}",
                                   attempts=reg.attempts + other.attempts)
        if prior is None:
            return reg, failed_to_connect(reg)
        attempts = reg.attempts + prior.attempts
        if reg.status is not RegistrationStatus.UNKNOWN:
            return reg._replace(detail=f"{reg.detail}; {prior.detail}", attempts=attempts), False
        combined = reg._replace(detail=f"{reg.method}: {reg.detail}; {prior.detail}", attempts=attempts)
        return combined, failed_to_connect(reg)

    async def _dated(self, row: Row, rdap: RdapClient, whois: WhoisClient) -> tuple[Registration, bool]:
        """A registered row (zone file, delegation) with the registry's registration date added when it has one."""
        name = row[0]
        self._counts.dates_asked += 1
        reg = await (rdap.lookup(name) if rdap.covers(name) else whois.lookup(name))
        kept = Registration(name, RegistrationStatus.REGISTERED, *row[2:])
        if reg.status is RegistrationStatus.REGISTERED:
            if reg.registered_at is not None:
                self._counts.dates_found += 1
            return reg._replace(detail=f"{reg.detail}; {row[4]}", attempts=reg.attempts + (row[7] or 0)), False
        # The zone's own delegation outweighs a registry that says otherwise or does not answer.
        evidence = str(row[4] or "").split(_NO_DATE)[0]
        return kept._replace(detail=f"{evidence}{_NO_DATE}{reg.method}: {reg.detail}"), False

    def _check_network(self) -> None:
        c = self._counts
        if c.network and c.network_failures == c.network:
            self._notice = f"No network: {c.network} domain(s) could not be checked and are marked unknown"
            if not self._warned:
                log.warning("%s; check the connection or proxy, or use --offline with a cache.", self._notice)
                self._warned = True
        elif c.offline:
            # each row says "offline" in its evidence; the run says how many, once
            self._notice = (f"Offline: {c.offline} domain(s) not in the cache, the recorded answers or the zone "
                            "files are marked unknown (not unregistered); run without --offline to look them up")
            if not self._warned:
                log.warning("%s", self._notice)
                self._warned = True
        else:
            self._notice = None


def _rdap_answered(reg: Registration) -> bool:
    """Whether an unknown RDAP answer came from a server that answered (not refused, unreachable or silent)."""
    return not failed_to_connect(reg) and "no answer within" not in reg.detail and "TLS failed" not in reg.detail


def _row_of(name: str, status: RegistrationStatus, method: str, detail: str, now: str) -> Row:
    return (name, status.value, method, "", detail, now, None, 0)


def flagged_domains(certs: pd.DataFrame, flagged: pd.Series, max_per_cert: int) -> list[str]:
    """The registrable domains of the flagged certificates (a boolean mask over certs), for look_up_dates."""
    if certs.empty or not bool(flagged.any()):
        return []
    return sorted(registrable_domains(certs.loc[flagged.to_numpy(dtype=bool)], max_per_cert))


def add_registration_dates(config: Config, registrations: pd.DataFrame, domains: Iterable[str]
                           ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """`--registration-dates flagged`: these names' registration dates from the registry -> (table, counts).

    A service of its own, after detection: the table is taken as this run's answers, the names it
    settled without a date (zone file, delegation) are asked of RDAP/WHOIS, and the table returns
    with their dates.
    """
    settled = registrations["method"].isin(_SETTLING) & (registrations["status"] == "registered")
    undated = set(registrations.loc[(settled & registrations["registered_at"].isna()).to_numpy(bool), "domain"])
    domains = [d for d in domains if d in undated]
    if not domains or config.registration != "auto" or config.offline:
        return registrations, {"mode": config.registration_dates, "asked": 0, "found": 0}
    with RegistrationService(config) as service:
        service.seed(registrations)
        asked = service.look_up_dates(domains)
        table = service.results() if asked else registrations
        return table, service.summary().get("registration_dates", {"asked": asked})
