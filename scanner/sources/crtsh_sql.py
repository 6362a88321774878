"""Source: crt.sh's public PostgreSQL replica, one CA's certificates by notBefore window, resumable.

The query walks the (issuer_ca_id, notBefore) index one window at a time, each window one
statement whose rows are streamed (libpq single-row or chunked mode), so memory stays flat whatever
the row count. crt.sh:5432 is PgBouncer in statement pooling mode (crtsh/certwatch_db#78): a
transaction block or a server-side cursor ends the connection ("long transactions not allowed"), and
a prepared statement is gone by the next statement, so every statement runs alone in autocommit.
Every window is written to the local store and checkpointed under (DSN, CA ids) with its absolute
notBefore range, so any later run whose range overlaps serves those windows from the store; windows
that ended less than --refresh-days ago are read again, because crt.sh keeps gaining late-logged and
backdated certificates for them (a log's MMD is 24 h, CAs backdate notBefore by up to 48 h). The
replica is a hot standby: recovery conflicts, dropped connections and statement timeouts are retried with a new connection,
and a window that still fails is reported (error + partial notice), never skipped in silence.
"""

from __future__ import annotations

import hashlib
import json
import logging
from array import array
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import tenacity
from cryptography import x509
from psycopg.conninfo import conninfo_to_dict

from scanner.core.config import Config
from scanner.core.der import element
from scanner.core.net import RetryableError, retrying
from scanner.core.times import iso
from scanner.sources.base import RawCert, SourceError, SourceItem, SourceNotice
from scanner.sources.store import CertStore, opened_store

log = logging.getLogger(__name__)

SOURCE = "crtsh-sql"
DEFAULT_WINDOW = timedelta(days=1)
# The longest TLS validity allowed since 2020-09-01: by default a scan covers every unexpired certificate.
DEFAULT_LOOKBACK = timedelta(days=398)
MIN_WINDOW = timedelta(hours=1)
MAX_WINDOW = timedelta(days=7)

#: crl_revoked.reason_code (RFC 5280 CRLReason) -> cryptography's ReasonFlags value.
REASON_NAMES: dict[int, str] = {
    0: x509.ReasonFlags.unspecified.value,
    1: x509.ReasonFlags.key_compromise.value,
    2: x509.ReasonFlags.ca_compromise.value,
    3: x509.ReasonFlags.affiliation_changed.value,
    4: x509.ReasonFlags.superseded.value,
    5: x509.ReasonFlags.cessation_of_operation.value,
    6: x509.ReasonFlags.certificate_hold.value,
    8: x509.ReasonFlags.remove_from_crl.value,
    9: x509.ReasonFlags.privilege_withdrawn.value,
    10: x509.ReasonFlags.aa_compromise.value,
}

# The (issuer_ca_id, x509_notBefore(certificate)) index answers the WHERE clause; no ORDER BY, because
# a sort target can tempt the planner into walking the whole id index of a multi-billion row table.
WINDOW_QUERY = """
SELECT c.id, c.issuer_ca_id, c.certificate,
       (SELECT min(e.entry_timestamp) FROM ct_log_entry e WHERE e.certificate_id = c.id) AS first_seen,
       cr.revocation_date, cr.reason_code, cr.ca_id IS NOT NULL AS revoked
  FROM certificate c
  LEFT JOIN crl_revoked cr
         ON cr.ca_id = c.issuer_ca_id AND cr.serial_number = x509_serialNumber(c.certificate)
 WHERE c.issuer_ca_id = ANY(%(ca_ids)s)
   AND x509_notBefore(c.certificate) >= %(start)s
   AND x509_notBefore(c.certificate) < %(end)s
"""

# Revocations of stored certificates, by the (issuer CA, serial) pairs crl_revoked is keyed on.
REVOCATION_QUERY = """
SELECT k.ca_id, k.serial, cr.revocation_date, cr.reason_code
  FROM unnest(%(ca_ids)s::integer[], %(serials)s::bytea[]) AS k(ca_id, serial)
  JOIN crl_revoked cr ON cr.ca_id = k.ca_id AND cr.serial_number = k.serial
"""
REVOCATION_BATCH = 1000

CA_EXACT_QUERY = "SELECT id, name FROM ca WHERE lower(name) = lower(%s) ORDER BY id LIMIT 200"
CA_LIKE_QUERY = "SELECT id, name FROM ca WHERE name ILIKE %s ESCAPE '\\' ORDER BY id LIMIT 200"


@dataclass(frozen=True)
class CrtshSqlOptions:
    """What a crt.sh SQL read needs: the replica, the CAs, the notBefore range and how hard to try."""

    dsn: str = Config.dsn  # crt.sh's public replica
    ca_ids: tuple[int, ...] = ()
    ca_names: tuple[str, ...] = ()  # resolved through crt.sh's ca table (exact, else substring)
    since: datetime | None = None  # notBefore >= since (UTC); None = 398 days before until
    until: datetime | None = None  # notBefore < until (UTC); None = now
    refresh_days: float = 7.0  # windows ending this recently are read again (crt.sh still gains rows)
    refresh_revocations: bool = False  # read crl_revoked again for the stored certificates
    offline: bool = False  # the store only: nothing goes to crt.sh
    timeout: float = Config.timeout  # seconds to connect
    retries: int = Config.retries  # attempts after the first for replica failures

    def __post_init__(self) -> None:
        # A notebook passes lists; the checkpoint key and the query want a fixed sequence of ints.
        object.__setattr__(self, "ca_ids", tuple(int(i) for i in self.ca_ids))
        object.__setattr__(self, "ca_names", tuple(self.ca_names))

    @classmethod
    def from_config(cls, config: Config) -> CrtshSqlOptions:
        """The options a scan's Config gives (--dsn, --ca-id, --ca-name, --since, --until, ...)."""
        return cls(dsn=config.dsn, ca_ids=config.ca_ids, ca_names=config.ca_names, since=config.since,
                   until=config.until, refresh_days=config.refresh_days,
                   refresh_revocations=config.refresh_revocations, offline=config.offline,
                   timeout=config.timeout, retries=config.retries)


def reason_name(code: int | None) -> str:
    """RFC 5280 reason code -> reason name ('' when the CRL entry gave none)."""
    if code is None:
        return ""
    return REASON_NAMES.get(int(code), f"unknownReason({int(code)})")


def safe_dsn(dsn: str) -> str:
    """The DSN without its password: fit for logs, errors and checkpoint keys."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return dsn.split("@")[-1]
    parts.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in sorted(parts.items()))


def checkpoint_key(dsn: str, ca_ids: Sequence[int]) -> str:
    """The resume key of a fetch: same DSN and CAs -> same checkpoints, whatever the range or the clock.

    The windows under it are absolute notBefore ranges, so runs with different --since/--until share
    what they have in common. Keys of older versions (which held the range) are simply never matched.
    """
    return json.dumps({"source": SOURCE, "dsn": safe_dsn(dsn), "ca_ids": sorted(set(int(i) for i in ca_ids))},
                      sort_keys=True)


def serial_octets(serial: int) -> bytes:
    """A serial number as the content octets of its DER INTEGER, as crt.sh's crl_revoked.serial_number holds it."""
    return serial.to_bytes(max(1, (serial.bit_length() + 8) // 8), "big", signed=True)


def der_serial_octets(der: bytes) -> bytes | None:
    """The content octets of a certificate's serial INTEGER as written (crt.sh's x509_serialNumber), or None.

    Read from the DER itself: a zero-padded serial, which cryptography refuses and which crt.sh and the
    CA's CRL keep as written, would not match crl_revoked once re-encoded from its value.
    """
    try:
        _, cert, _ = element(der, 0)
        _, tbs, _ = element(der, cert)
        tag, start, end = element(der, tbs)
        if tag == 0xA0:  # [0] version
            tag, start, end = element(der, end)
    except IndexError:
        return None
    return der[start:end] if tag == 0x02 and start < end <= len(der) else None


def _naive(value: datetime) -> datetime:
    """crt.sh columns are `timestamp` (UTC, no zone): compare with naive UTC values."""
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def resolve_range(since: datetime | None, until: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """The notBefore range to scan: until defaults to now, since to 398 days before until, at midnight UTC
    (every certificate that can still be unexpired, in whole-day windows)."""
    end = _aware(until) or _aware(now)
    assert end is not None
    start = _aware(since) or (end - DEFAULT_LOOKBACK).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, end


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _WindowFailed(Exception):
    def __init__(self, message: str, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


class _Unreachable(RetryableError):
    """No connection to the replica: retried like a failed query, but fatal once the attempts are spent."""


class _Fetcher:
    """One crtsh-sql run: connection handling, window retries and the store writes."""

    def __init__(self, options: CrtshSqlOptions, store: CertStore, ca_ids: list[int], *, itersize: int,
                 base_delay: float):
        self.options, self.store, self.ca_ids = options, store, ca_ids
        self.itersize, self.base_delay = itersize, base_delay
        self.where = safe_dsn(options.dsn)
        self.conn: psycopg.Connection | None = None

    def connect(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(
                self.options.dsn,
                connect_timeout=max(1, round(self.options.timeout)),
                application_name="ctscan",
                autocommit=True,  # statement pooling: a BEGIN would end the connection
                prepare_threshold=None,  # the next statement may reach another server without the prepared one
            )
        return self.conn

    def drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
        self.conn = None

    def _policy(self, what: str) -> tenacity.Retrying:
        def warn(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if exc is not None and not isinstance(exc, _Unreachable):
                log.warning("crt.sh SQL %s failed (%s); retry %d in %.1fs", what, exc, state.attempt_number,
                            state.upcoming_sleep)

        return retrying(self.options.retries, base=self.base_delay).copy(before_sleep=warn)

    def _connected(self) -> psycopg.Connection:
        try:
            return self.connect()
        except psycopg.OperationalError as exc:
            raise _Unreachable(_describe(exc)) from exc

    def window(self, start: datetime, end: datetime) -> Iterator[list[RawCert]]:
        """Batches of one window's certificates (each batch already stored), retried on replica failures."""
        yielded = array("q")  # ids already handed on: a retry must not hand them on twice
        attempts = 0
        try:
            for attempt in self._policy(f"window {start}..{end}"):
                # closing(): a consumer that stops early ends the statement now, not at GC
                with attempt, closing(self._window_once(start, end, set(yielded))) as batches:
                    attempts += 1
                    for batch in batches:
                        yielded.extend(r.extra["crtsh_id"] for r in batch)
                        yield batch
        except _Unreachable as exc:
            # Nothing later can work either: stop instead of failing every window in turn.
            raise _WindowFailed(f"cannot connect: {exc}; after {attempts} attempt(s); check --dsn",
                                fatal=True) from exc
        except RetryableError as exc:
            raise _WindowFailed(f"{exc}; after {attempts} attempt(s)") from exc

    def _window_once(self, start: datetime, end: datetime, skip: set[int]) -> Iterator[list[RawCert]]:
        """One attempt at a window as one streamed statement; replica failures become RetryableError."""
        conn = self._connected()
        params = {"ca_ids": self.ca_ids, "start": _naive(start), "end": _naive(end)}
        chunk = self.itersize if psycopg.capabilities.has_stream_chunked() else 1  # chunks need libpq 17
        with self._replica_errors(), conn.cursor(binary=True) as cur:
            batch: list[RawCert] = []
            for row in cur.stream(WINDOW_QUERY, params, size=chunk):
                if row[0] not in skip:
                    batch.append(self._raw(row))
                if len(batch) >= self.itersize:
                    self.store.put_many(batch)
                    yield batch
                    batch = []
            if batch:
                self.store.put_many(batch)
                yield batch

    @contextmanager
    def _replica_errors(self) -> Iterator[None]:
        """A failing replica as RetryableError (a new connection may work), any other SQL error as fatal."""
        try:
            yield
        except psycopg.OperationalError as exc:
            # 40001 (conflict with recovery), 57014 (statement timeout), 57P01 and dropped sockets.
            self.drop()
            raise RetryableError(_describe(exc)) from exc
        except psycopg.Error as exc:
            self.drop()
            raise _WindowFailed(_describe(exc), fatal=True) from exc

    def revocations(self, pairs: Sequence[tuple[int, bytes]]) -> dict[tuple[int, bytes], tuple[datetime, str]]:
        """crl_revoked's (revocation date, reason name) for these (issuer CA id, serial octets), retried like windows."""
        attempts = 0

        def once() -> list[tuple[Any, ...]]:
            nonlocal attempts
            attempts += 1
            with self._replica_errors():
                conn = self.connect()
                with conn.cursor(binary=True) as cur:
                    cur.execute(REVOCATION_QUERY, {"ca_ids": [p[0] for p in pairs], "serials": [p[1] for p in pairs]})
                    found = cur.fetchall()
            return found

        try:
            rows = retrying(self.options.retries, base=self.base_delay)(once)
        except RetryableError as exc:
            raise _WindowFailed(f"{exc}; after {attempts} attempt(s)") from exc
        return {(int(ca), bytes(serial)): (_aware(when), reason_name(code))  # type: ignore[misc]
                for ca, serial, when, code in rows}

    def _raw(self, row: tuple[Any, ...]) -> RawCert:
        crtsh_id, ca_id, der, first_seen, revoked_at, reason, revoked = row
        extra: dict[str, Any] = {"crtsh_id": int(crtsh_id), "issuer_ca_id": int(ca_id)}
        if first_seen is not None:
            extra["first_seen"] = _aware(first_seen)
        if revoked:
            extra["revoked_at"] = _aware(revoked_at)
            extra["revocation_reason"] = reason_name(reason)
            extra["revocation_source"] = "crtsh"
        return RawCert(bytes(der), SOURCE, f"crtsh:{crtsh_id}", extra)


def _describe(exc: psycopg.Error) -> str:
    state = getattr(exc, "sqlstate", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}{f' (SQLSTATE {state})' if state else ''}: {text}"


def resolve_ca_names(conn: psycopg.Connection, names: Sequence[str]) -> tuple[list[int], list[SourceItem]]:
    """crt.sh CA ids for --ca-name values (exact, else substring match), with notices saying what matched."""
    ids: list[int] = []
    items: list[SourceItem] = []
    with conn.cursor() as cur:
        for name in names:
            rows = cur.execute(CA_EXACT_QUERY, (name,)).fetchall()
            if not rows:
                escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                rows = cur.execute(CA_LIKE_QUERY, (f"%{escaped}%",)).fetchall()
            if not rows:
                items.append(SourceError(SOURCE, f"ca-name:{name}",
                                         f"no CA in crt.sh's ca table matches {name!r}; check the name on "
                                         "https://crt.sh/ or pass --ca-id"))
                continue
            listed = "; ".join(f"{i} {n!r}" for i, n in rows[:10]) + (" ..." if len(rows) > 10 else "")
            log.info("--ca-name %r matched %d crt.sh CA(s): %s", name, len(rows), listed)
            items.append(SourceNotice(f"--ca-name {name!r} matched {len(rows)} crt.sh CA(s): {listed}"))
            ids.extend(int(i) for i, _ in rows)
    if not conn.autocommit:  # a caller's own connection: leave no transaction open
        conn.rollback()
    return ids, items


def read(
    options: CrtshSqlOptions,
    *,
    store: CertStore | Path | str | None = None,
    window: timedelta = DEFAULT_WINDOW,
    target_rows: int | None = 50_000,
    itersize: int = 2000,
    base_delay: float = 1.0,
    now: datetime | None = None,
) -> Iterator[SourceItem]:
    """Yield the CAs' certificates from crt.sh's PostgreSQL over [since, until) on notBefore, resuming past windows.

    store is where fetched windows are kept and served from on later reads: an open CertStore (left
    open), a store file, or None for one in memory that lasts this read only.
    """
    now = now or _utcnow()
    since, until = resolve_range(options.since, options.until, now)
    if options.since is None:
        yield SourceNotice(f"no --since given: scanning notBefore from {iso(since)} "
                           "(every certificate that can still be unexpired)")
    ca_ids = list(options.ca_ids)
    with opened_store(store) as certs:
        fetcher = _Fetcher(options, certs, ca_ids, itersize=itersize, base_delay=base_delay)
        try:
            if options.ca_names and not options.offline:
                try:
                    found, items = resolve_ca_names(fetcher.connect(), options.ca_names)
                except psycopg.Error as exc:
                    fetcher.drop()
                    yield SourceError(SOURCE, fetcher.where, f"cannot resolve --ca-name through crt.sh's ca table: "
                                      f"{_describe(exc)}; check --dsn or pass --ca-id")
                    yield SourceNotice("crt.sh SQL fetch did not run: --ca-name could not be resolved", partial=True)
                    return
                yield from items
                ca_ids = sorted(set(ca_ids) | set(found))
                fetcher.ca_ids = ca_ids
            if not ca_ids:
                yield SourceError(SOURCE, fetcher.where, "--source crtsh-sql needs --ca-id N or a --ca-name that "
                                  "matches a CA (find the id on https://crt.sh/)")
                yield SourceNotice("crt.sh SQL fetch did not run: no CA to fetch", partial=True)
                return
            yield from _walk(options, certs, fetcher, ca_ids, since, until, now, window, target_rows)
        finally:
            fetcher.drop()


def _walk(options: CrtshSqlOptions, store: CertStore, fetcher: _Fetcher, ca_ids: list[int], since: datetime,
          until: datetime, now: datetime, size: timedelta, target_rows: int | None) -> Iterator[SourceItem]:
    key = checkpoint_key(options.dsn, ca_ids)
    windows = store.done_windows(key)
    refresh_from = now - timedelta(days=float(options.refresh_days))
    # Windows that ended within the refresh span still gain certificates at crt.sh: read them again.
    done = [w for w in windows if w[1] <= refresh_from]
    stale = [w for w in windows if w[1] > refresh_from and w[0] < until and since < w[1]]
    if stale and options.offline:
        done = windows  # offline, what was fetched before is the best there is
        yield SourceNotice(f"offline: {len(stale)} crt.sh SQL window(s) ending after {iso(refresh_from)} "
                           "were served from the store without re-reading crt.sh")
    refresh_revocations = options.refresh_revocations
    if refresh_revocations and options.offline:
        yield SourceNotice("offline: --refresh-revocations did not re-read crt.sh; the stored revocations are reported")
        refresh_revocations = False
    cursor, fetched, served, revised = since, 0, 0, 0
    dead: _WindowFailed | None = None  # set when crt.sh cannot be reached at all: the store serves the rest
    while cursor < until:
        covering = next((w for w in done if w[0] <= cursor < w[1]), None)
        if covering is not None:
            end = min(covering[1], until)
            if refresh_revocations:
                try:
                    revised += _refresh_revocations(store, fetcher, ca_ids, cursor, end)
                except _WindowFailed as exc:
                    refresh_revocations = False
                    yield SourceError(SOURCE, f"{fetcher.where} crl_revoked",
                                      f"crt.sh revocations could not be re-read: {exc}; the stored ones are reported")
                    yield SourceNotice(f"--refresh-revocations stopped at notBefore {iso(cursor)}: {exc}",
                                       partial=True)
            for raw in store.iter_raw(ca_ids=ca_ids, not_before_from=cursor, not_before_to=end):
                served += 1
                yield raw
            cursor = end
            continue
        later = [w[0] for w in done if w[0] > cursor]
        end = min([cursor + size, until, *later])
        refetch = any(w[0] < end and cursor < w[1] for w in stale)  # fetched before: the store has a copy
        where = f"{fetcher.where} ca_id={','.join(map(str, ca_ids))} notBefore [{cursor.isoformat()}, {end.isoformat()})"
        if options.offline:
            yield SourceError(SOURCE, where, "offline: this window is not in the local store; run without --offline")
            yield SourceNotice(f"crt.sh SQL window {iso(cursor)}..{iso(end)} was skipped "
                               "(offline, not in the store)", partial=True)
            cursor = end
            continue
        if dead is not None:
            if refetch:
                served += yield from _serve_stored(store, ca_ids, cursor, end, set())
            cursor = end
            continue
        rows = 0
        handed: set[int] = set()
        try:
            for batch in fetcher.window(cursor, end):
                rows += len(batch)
                handed.update(r.extra["crtsh_id"] for r in batch)
                yield from batch
        except _WindowFailed as exc:
            yield SourceError(SOURCE, where, f"crt.sh SQL window failed: {exc}; rerun to resume, or narrow --since/--until")
            if refetch:
                # An earlier run read this window: report its certificates rather than none.
                served += yield from _serve_stored(store, ca_ids, cursor, end, handed)
            if exc.fatal:
                dead = exc
                yield SourceNotice(f"crt.sh SQL fetch stopped at notBefore {iso(cursor)}: {exc}; "
                                   f"nothing from there to {iso(until)} was fetched (what the store holds is reported)",
                                   partial=True)
            else:
                yield SourceNotice(f"crt.sh SQL window notBefore {iso(cursor)}..{iso(end)} "
                                   f"failed and is {'only as an earlier run stored it' if refetch else 'missing'} "
                                   f"in this run ({exc})", partial=True)
            cursor = end
            continue
        fetched += rows
        # A window reaching into the future is still filling up: never checkpoint it as done.
        if end <= now:
            store.mark_window_done(key, (cursor, end), rows)
        log.info("crt.sh SQL window %s..%s: %d certificate(s)%s", cursor, end, rows, " (refreshed)" if refetch else "")
        cursor = end
        if target_rows is None:
            continue
        # Busy days get narrower windows (a retry repeats less), quiet ones wider (fewer queries).
        if rows > target_rows and size / 2 >= MIN_WINDOW:
            size = size / 2
        elif rows < target_rows // 8 and size * 2 <= MAX_WINDOW:
            size = size * 2
    log.info("crt.sh SQL: %d certificate(s) fetched, %d served from the store %s, %d revocation(s) revised",
             fetched, served, store.path, revised)


def _serve_stored(store: CertStore, ca_ids: list[int], start: datetime, end: datetime,
                  handed: set[int]) -> Generator[RawCert, None, int]:
    """The stored certificates of [start, end) not already handed on; returns how many."""
    count = 0
    for raw in store.iter_raw(ca_ids=ca_ids, not_before_from=start, not_before_to=end):
        if raw.extra.get("crtsh_id") not in handed:
            count += 1
            yield raw
    return count


def _refresh_revocations(store: CertStore, fetcher: _Fetcher, ca_ids: list[int], start: datetime,
                         end: datetime) -> int:
    """Re-read crl_revoked for the stored certificates of [start, end) and store what changed; returns how many.

    A revocation crt.sh no longer lists is kept: a CRL entry may drop off once the certificate expires,
    and the certificate was revoked all the same.
    """
    keys: list[tuple[str, int, bytes, datetime | None, str]] = []
    for raw in store.iter_raw(ca_ids=ca_ids, not_before_from=start, not_before_to=end):
        serial = der_serial_octets(raw.der)
        if serial is None:
            continue  # no serial to look up (the parse stage reports what these bytes are)
        keys.append((hashlib.sha256(raw.der).hexdigest(), int(raw.extra["issuer_ca_id"]), serial,
                     raw.extra.get("revoked_at"), raw.extra.get("revocation_reason", "")))
    changed: list[tuple[str, datetime, str, str]] = []
    for first in range(0, len(keys), REVOCATION_BATCH):
        chunk = keys[first:first + REVOCATION_BATCH]
        found = fetcher.revocations([(k[1], k[2]) for k in chunk])
        for sha256, ca_id, serial, was_at, was_reason in chunk:
            hit = found.get((ca_id, serial))
            if hit is not None and hit[0] is not None and hit != (was_at, was_reason):
                changed.append((sha256, hit[0], hit[1], "crtsh"))
    if changed:
        store.update_revocations(changed)
    return len(changed)
