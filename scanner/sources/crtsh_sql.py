"""Source: crt.sh's public PostgreSQL replica, one CA's certificates by notBefore window, resumable.

The query walks the (issuer_ca_id, notBefore) index one window at a time through a server-side
cursor, so memory stays flat whatever the row count. Every window is written to the local store
and checkpointed under (DSN, CA ids) with its absolute notBefore range, so any later run whose range
overlaps serves those windows from the store; windows that ended less than --refresh-days ago are read
again, because crt.sh keeps gaining late-logged and backdated certificates for them (a log's MMD is 24 h,
CAs backdate notBefore by up to 48 h). The replica is a hot standby:
recovery conflicts, dropped connections and statement timeouts are retried with a new connection,
and a window that still fails is reported (error + partial notice), never skipped in silence.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from array import array
from collections.abc import Generator, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from cryptography import x509
from psycopg.conninfo import conninfo_to_dict

from scanner.core.net import backoff_delay
from scanner.sources.base import RawCert, SourceError, SourceItem, SourceNotice
from scanner.sources.store import CertStore

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


class _Fetcher:
    """One crtsh-sql run: connection handling, window retries and the store writes."""

    def __init__(self, config: Any, store: CertStore, ca_ids: list[int], *, itersize: int, base_delay: float):
        self.config, self.store, self.ca_ids = config, store, ca_ids
        self.itersize, self.base_delay = itersize, base_delay
        self.where = safe_dsn(config.dsn)
        self.conn: psycopg.Connection | None = None

    def connect(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(
                self.config.dsn,
                connect_timeout=max(1, round(self.config.timeout)),
                application_name="ctscan",
            )
        return self.conn

    def drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except psycopg.Error:
                pass
        self.conn = None

    def window(self, start: datetime, end: datetime) -> Iterator[list[RawCert]]:
        """Batches of one window's certificates (each batch already stored), retried on replica failures."""
        yielded = array("q")  # ids already handed on: a retry must not hand them on twice
        attempt = 0
        while True:
            skip = set(yielded) if attempt else set()
            try:
                conn = self.connect()
            except psycopg.OperationalError as exc:
                attempt += 1
                if attempt > self.config.retries:
                    # Nothing later can work either: stop instead of failing every window in turn.
                    raise _WindowFailed(f"cannot connect: {_describe(exc)}; after {attempt} attempt(s); "
                                        "check --dsn", fatal=True) from exc
                time.sleep(backoff_delay(attempt, self.base_delay))
                continue
            try:
                with conn.transaction(), conn.cursor(name="ctscan_window", binary=True) as cur:
                    cur.itersize = self.itersize
                    cur.execute(WINDOW_QUERY, {"ca_ids": self.ca_ids, "start": _naive(start), "end": _naive(end)})
                    while True:
                        rows = cur.fetchmany(self.itersize)
                        if not rows:
                            break
                        batch = [self._raw(r) for r in rows if r[0] not in skip]
                        self.store.put_many(batch)
                        yielded.extend(r.extra["crtsh_id"] for r in batch)
                        yield batch
                return
            except psycopg.OperationalError as exc:
                # 40001 (conflict with recovery), 57014 (statement timeout), 57P01 and dropped sockets.
                self.drop()
                attempt += 1
                if attempt > self.config.retries:
                    raise _WindowFailed(_describe(exc) + f"; after {attempt} attempt(s)") from exc
                delay = backoff_delay(attempt, self.base_delay)
                log.warning("crt.sh SQL window %s..%s failed (%s); retry %d in %.1fs",
                            start, end, _describe(exc), attempt, delay)
                time.sleep(delay)
            except psycopg.Error as exc:
                self.drop()
                raise _WindowFailed(_describe(exc), fatal=True) from exc

    def revocations(self, pairs: Sequence[tuple[int, bytes]]) -> dict[tuple[int, bytes], tuple[datetime, str]]:
        """crl_revoked's (revocation date, reason name) for these (issuer CA id, serial octets), retried like windows."""
        attempt = 0
        while True:
            try:
                conn = self.connect()
                with conn.transaction(), conn.cursor(binary=True) as cur:
                    cur.execute(REVOCATION_QUERY, {"ca_ids": [p[0] for p in pairs], "serials": [p[1] for p in pairs]})
                    rows = cur.fetchall()
                return {(int(ca), bytes(serial)): (_aware(when), reason_name(code))  # type: ignore[misc]
                        for ca, serial, when, code in rows}
            except psycopg.OperationalError as exc:
                self.drop()
                attempt += 1
                if attempt > self.config.retries:
                    raise _WindowFailed(_describe(exc) + f"; after {attempt} attempt(s)") from exc
                time.sleep(backoff_delay(attempt, self.base_delay))
            except psycopg.Error as exc:
                self.drop()
                raise _WindowFailed(_describe(exc), fatal=True) from exc

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
        conn.rollback()
    return ids, items


def read_crtsh_sql(
    config: Any,
    *,
    window: timedelta = DEFAULT_WINDOW,
    target_rows: int | None = 50_000,
    itersize: int = 2000,
    base_delay: float = 1.0,
    now: datetime | None = None,
) -> Iterator[SourceItem]:
    """Yield one CA's certificates from crt.sh's PostgreSQL over [since, until) on notBefore, resuming past windows."""
    now = now or _utcnow()
    since, until = resolve_range(config.since, config.until, now)
    if config.since is None:
        yield SourceNotice(f"no --since given: scanning notBefore from {since:%Y-%m-%d %H:%M} UTC "
                           "(every certificate that can still be unexpired)")
    ca_ids = [int(i) for i in config.ca_ids]
    store = CertStore(config.store_file)
    fetcher = _Fetcher(config, store, ca_ids, itersize=itersize, base_delay=base_delay)
    try:
        if config.ca_names and not config.offline:
            try:
                found, items = resolve_ca_names(fetcher.connect(), config.ca_names)
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
        yield from _walk(config, store, fetcher, ca_ids, since, until, now, window, target_rows)
    finally:
        fetcher.drop()
        store.close()


def _walk(config: Any, store: CertStore, fetcher: _Fetcher, ca_ids: list[int], since: datetime,
          until: datetime, now: datetime, size: timedelta, target_rows: int | None) -> Iterator[SourceItem]:
    key = checkpoint_key(config.dsn, ca_ids)
    windows = store.done_windows(key)
    refresh_from = now - timedelta(days=float(getattr(config, "refresh_days", 7.0)))
    # Windows that ended within the refresh span still gain certificates at crt.sh: read them again.
    done = [w for w in windows if w[1] <= refresh_from]
    stale = [w for w in windows if w[1] > refresh_from and w[0] < until and since < w[1]]
    if stale and config.offline:
        done = windows  # offline, what was fetched before is the best there is
        yield SourceNotice(f"offline: {len(stale)} crt.sh SQL window(s) ending after {refresh_from:%Y-%m-%d %H:%M} "
                           "were served from the store without re-reading crt.sh")
    refresh_revocations = bool(getattr(config, "refresh_revocations", False))
    if refresh_revocations and config.offline:
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
                    yield SourceNotice(f"--refresh-revocations stopped at notBefore {cursor:%Y-%m-%d %H:%M}: {exc}",
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
        if config.offline:
            yield SourceError(SOURCE, where, "offline: this window is not in the local store; run without --offline")
            yield SourceNotice(f"crt.sh SQL window {cursor:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M} was skipped "
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
                yield SourceNotice(f"crt.sh SQL fetch stopped at notBefore {cursor:%Y-%m-%d %H:%M}: {exc}; "
                                   f"nothing from there to {until:%Y-%m-%d %H:%M} was fetched (what the store holds is reported)",
                                   partial=True)
            else:
                yield SourceNotice(f"crt.sh SQL window notBefore {cursor:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M} "
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
        try:
            serial = x509.load_der_x509_certificate(raw.der).serial_number
        except ValueError:
            continue  # unreadable: it has no serial to look up (the parse stage reports it)
        keys.append((hashlib.sha256(raw.der).hexdigest(), int(raw.extra["issuer_ca_id"]), serial_octets(serial),
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
