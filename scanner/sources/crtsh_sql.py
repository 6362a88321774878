"""Source: crt.sh's public PostgreSQL replica, one CA's certificates by notBefore window, resumable.

The query walks the (issuer_ca_id, notBefore) index one window at a time through a server-side
cursor, so memory stays flat whatever the row count. Every window is written to the local store
and checkpointed; a rerun serves finished windows from the store. The replica is a hot standby:
recovery conflicts, dropped connections and statement timeouts are retried with a new connection,
and a window that still fails is reported (error + partial notice), never skipped in silence.
"""

from __future__ import annotations

import json
import logging
import time
from array import array
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from cryptography import x509
from psycopg.conninfo import conninfo_to_dict

from ..net import backoff_delay
from ..store import CertStore
from .base import RawCert, SourceError, SourceItem, SourceNotice

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


def checkpoint_key(dsn: str, ca_ids: Sequence[int], since: datetime, until: datetime) -> str:
    """The resume key of one fetch: same DSN, CAs and range -> same checkpoints."""
    return json.dumps(
        {"source": SOURCE, "dsn": safe_dsn(dsn), "ca_ids": sorted(set(ca_ids)),
         "since": _naive(since).isoformat(), "until": _naive(until).isoformat()},
        sort_keys=True,
    )


def _naive(value: datetime) -> datetime:
    """crt.sh columns are `timestamp` (UTC, no zone): compare with naive UTC values."""
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def resolve_range(since: datetime | None, until: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """The notBefore range to scan: until defaults to now (to the hour), since to 398 days before until
    (every certificate that can still be unexpired)."""
    end = _aware(until) or now.replace(minute=0, second=0, microsecond=0)
    start = _aware(since) or end - DEFAULT_LOOKBACK
    return start, end


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
    now = now or datetime.now(timezone.utc)
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
    key = checkpoint_key(config.dsn, ca_ids, since, until)
    done = store.done_windows(key)
    cursor, fetched, served = since, 0, 0
    while cursor < until:
        covering = next((w for w in done if w[0] <= cursor < w[1]), None)
        if covering is not None:
            end = min(covering[1], until)
            for raw in store.iter_raw(ca_ids=ca_ids, not_before_from=cursor, not_before_to=end):
                served += 1
                yield raw
            cursor = end
            continue
        later = [w[0] for w in done if w[0] > cursor]
        end = min([cursor + size, until, *later])
        where = f"{fetcher.where} ca_id={','.join(map(str, ca_ids))} notBefore [{cursor.isoformat()}, {end.isoformat()})"
        if config.offline:
            yield SourceError(SOURCE, where, "offline: this window is not in the local store; run without --offline")
            yield SourceNotice(f"crt.sh SQL window {cursor:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M} was skipped "
                               "(offline, not in the store)", partial=True)
            cursor = end
            continue
        rows = 0
        try:
            for batch in fetcher.window(cursor, end):
                rows += len(batch)
                yield from batch
        except _WindowFailed as exc:
            yield SourceError(SOURCE, where, f"crt.sh SQL window failed: {exc}; rerun to resume, or narrow --since/--until")
            if exc.fatal:
                yield SourceNotice(f"crt.sh SQL fetch stopped at notBefore {cursor:%Y-%m-%d %H:%M}: {exc}; "
                                   f"nothing from there to {until:%Y-%m-%d %H:%M} was fetched", partial=True)
                return
            yield SourceNotice(f"crt.sh SQL window notBefore {cursor:%Y-%m-%d %H:%M}..{end:%Y-%m-%d %H:%M} "
                               f"failed and is missing from this run ({exc})", partial=True)
            cursor = end
            continue
        fetched += rows
        # A window reaching into the future is still filling up: never checkpoint it as done.
        if end <= now:
            store.mark_window_done(key, (cursor, end), rows)
        log.info("crt.sh SQL window %s..%s: %d certificate(s)", cursor, end, rows)
        cursor = end
        if target_rows is None:
            continue
        # Busy days get narrower windows (a retry repeats less), quiet ones wider (fewer queries).
        if rows > target_rows and size / 2 >= MIN_WINDOW:
            size = size / 2
        elif rows < target_rows // 8 and size * 2 <= MAX_WINDOW:
            size = size * 2
    log.info("crt.sh SQL: %d certificate(s) fetched, %d served from the store %s", fetched, served, store.path)
