"""The one local store of fetched certificates (SQLite, keyed by SHA-256) and the resume points of long fetches.

A second scan reads what is already here instead of asking crt.sh again; a fetch killed half way
resumes from the windows it had finished. Writes are committed in batches (WAL), so `kill -9`
loses at most the batch in flight, and a certificate stored twice is one row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from cryptography import x509

from scanner.core.config import Config
from scanner.core.times import STORE_FORMAT, store_text
from scanner.sources.base import RawCert, SourceItem, SourceNotice, SourceState

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_CHUNK = 900  # stay under SQLite's historical 999 bound-parameter limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS certs (
    sha256            TEXT PRIMARY KEY,
    der               BLOB NOT NULL,
    source            TEXT NOT NULL,
    provenance        TEXT NOT NULL,
    crtsh_id          INTEGER,
    issuer_ca_id      INTEGER,
    not_before        TEXT,
    first_seen        TEXT,
    revoked_at        TEXT,
    revocation_reason TEXT,
    revocation_source TEXT,
    fetched_at        TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS certs_crtsh_id ON certs (crtsh_id);
CREATE INDEX IF NOT EXISTS certs_ca_not_before ON certs (issuer_ca_id, not_before);
CREATE TABLE IF NOT EXISTS checkpoints (
    key        TEXT NOT NULL,
    win_start  TEXT NOT NULL,
    win_end    TEXT NOT NULL,
    rows       INTEGER NOT NULL,
    done_at    TEXT NOT NULL,
    PRIMARY KEY (key, win_start)
);
CREATE TABLE IF NOT EXISTS crtsh_searches (
    search     TEXT NOT NULL,
    crtsh_id   INTEGER NOT NULL,
    PRIMARY KEY (search, crtsh_id)
) WITHOUT ROWID;
"""

# CT logs: which entries of which log a selection (issuer set, verified or not) kept, and how far it read.
# Entries are rows of `certs` like crt.sh's; `pending` marks entries not yet checked against a signed root.
_CT_SCHEMA = """
CREATE TABLE IF NOT EXISTS ct_entries (
    selection TEXT NOT NULL,
    log_url   TEXT NOT NULL,
    idx       INTEGER NOT NULL,
    sha256    TEXT NOT NULL,
    pending   INTEGER NOT NULL,
    PRIMARY KEY (selection, log_url, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ct_progress (
    selection  TEXT NOT NULL,
    log_url    TEXT NOT NULL,
    first      INTEGER NOT NULL,
    next       INTEGER NOT NULL,
    tree_size  INTEGER NOT NULL,
    stack      TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (selection, log_url)
);
"""

# Alerts (ctscan watch): each (channel, certificate, finding code) pair once. A pair joins a delivery
# when a round finds it (pending) and is delivered when its channel accepted that delivery; a delivery
# keeps its id across retries, so a receiver can drop one it already has.
_ALERT_SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_deliveries (
    delivery     TEXT PRIMARY KEY,
    channel      TEXT NOT NULL,
    round        TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS alert_deliveries_pending ON alert_deliveries (channel, delivered_at);
CREATE TABLE IF NOT EXISTS alert_pairs (
    channel  TEXT NOT NULL,
    sha256   TEXT NOT NULL,
    code     TEXT NOT NULL,
    delivery TEXT NOT NULL,
    finding  TEXT NOT NULL,
    PRIMARY KEY (channel, sha256, code)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alert_pairs_delivery ON alert_pairs (delivery);
"""

# Lint results (--lint), by certificate SHA-256 and linter (pkilint's version and ctscan's profile): a rerun
# lints only certificates it has not linted with this linter; upgrading pkilint lints everything again.
_LINT_SCHEMA = """
CREATE TABLE IF NOT EXISTS lint_results (
    sha256    TEXT NOT NULL,
    linter    TEXT NOT NULL,
    result    TEXT NOT NULL,
    linted_at TEXT NOT NULL,
    PRIMARY KEY (sha256, linter)
) WITHOUT ROWID;
"""


# Every write to the certificates, by this ctscan or any other program, moves the store's revision on (the
# triggers see them all): a watch round that finds the revision it read last time reads nothing again.
_REVISION_SCHEMA = """
CREATE TABLE IF NOT EXISTS store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO store_meta (key, value) VALUES ('revision', '0');
CREATE TRIGGER IF NOT EXISTS certs_revision_insert AFTER INSERT ON certs BEGIN
    UPDATE store_meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'; END;
CREATE TRIGGER IF NOT EXISTS certs_revision_update AFTER UPDATE ON certs BEGIN
    UPDATE store_meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'; END;
CREATE TRIGGER IF NOT EXISTS certs_revision_delete AFTER DELETE ON certs BEGIN
    UPDATE store_meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'; END;
"""


class PendingDelivery(NamedTuple):
    """An alert delivery not yet accepted by its channel: its id, the round that formed it, its findings."""

    delivery: str
    round: str
    attempts: int
    findings: list[dict[str, Any]]


# A later fetch fills in what an earlier one did not know, and never forgets a revocation.
_UPSERT = """
INSERT INTO certs (sha256, der, source, provenance, crtsh_id, issuer_ca_id, not_before, first_seen,
                   revoked_at, revocation_reason, revocation_source, fetched_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (sha256) DO UPDATE SET
    crtsh_id = coalesce(excluded.crtsh_id, certs.crtsh_id),
    issuer_ca_id = coalesce(excluded.issuer_ca_id, certs.issuer_ca_id),
    not_before = coalesce(excluded.not_before, certs.not_before),
    first_seen = CASE WHEN certs.first_seen IS NULL OR excluded.first_seen < certs.first_seen
                      THEN coalesce(excluded.first_seen, certs.first_seen) ELSE certs.first_seen END,
    revoked_at = coalesce(excluded.revoked_at, certs.revoked_at),
    revocation_reason = CASE WHEN excluded.revoked_at IS NOT NULL THEN excluded.revocation_reason
                             ELSE certs.revocation_reason END,
    revocation_source = CASE WHEN excluded.revoked_at IS NOT NULL THEN excluded.revocation_source
                             ELSE certs.revocation_source END
"""

_EXTRA_KEYS = ("crtsh_id", "issuer_ca_id", "first_seen", "revoked_at", "revocation_reason", "revocation_source")




def text_time(value: str | None) -> datetime | None:
    """The store's UTC text back to an aware datetime (ISO 8601 written by another program too); ValueError if neither."""
    if not value:
        return None
    try:
        return datetime.strptime(value, STORE_FORMAT).replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def der_not_before(der: bytes) -> datetime | None:
    """notBefore of a DER certificate, or None when even that cannot be read."""
    try:
        return x509.load_der_x509_certificate(der).not_valid_before_utc
    except Exception:  # noqa: BLE001  cryptography refuses it: date it leniently as parse does, or a window loses it
        pass
    try:
        from asn1crypto import x509 as asn1_x509

        value = asn1_x509.Certificate.load(der)["tbs_certificate"]["validity"]["not_before"].native
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    except Exception:  # noqa: BLE001  a certificate we cannot read is still stored; only its date is unknown
        return None


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    return int(value)


class CTProgress(NamedTuple):
    """A selection's read of one log: entries [first, next) are done; stack is the Merkle prefix of [0, next)."""

    first: int
    next: int
    tree_size: int
    stack: list[Any] | None = None


class CertStore:
    """Fetched certificates keyed by SHA-256, plus checkpoints of completed fetch windows."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process (only a power cut can lose the last commits).
        self._conn.execute("PRAGMA synchronous=NORMAL")
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise RuntimeError(
                f"{self.path} is a certificate store of layout {version}, this ctscan reads {SCHEMA_VERSION}; "
                "move it aside or point --store elsewhere"
            )
        self._conn.executescript(_SCHEMA)
        self._conn.executescript(_CT_SCHEMA)
        self._conn.executescript(_ALERT_SCHEMA)
        self._conn.executescript(_LINT_SCHEMA)
        self._conn.executescript(_REVISION_SCHEMA)
        # A store's own name: a revision number only means something together with the store it counts.
        self._conn.execute("INSERT OR IGNORE INTO store_meta (key, value) VALUES ('id', ?)", (uuid.uuid4().hex,))
        self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def revision(self) -> str:
        """This store's id and how many writes its certificates have seen: equal revisions, equal contents."""
        meta = dict(self._conn.execute("SELECT key, value FROM store_meta WHERE key IN ('id', 'revision')"))
        return f"{meta['id']}:{meta['revision']}"

    # --- certificates -------------------------------------------------------------------

    def _row(self, raw: RawCert, now: str) -> tuple[Any, ...]:
        extra = raw.extra
        return (
            hashlib.sha256(raw.der).hexdigest(),
            raw.der,
            raw.source,
            raw.provenance,
            _int_or_none(extra.get("crtsh_id")),
            _int_or_none(extra.get("issuer_ca_id")),
            store_text(der_not_before(raw.der)),
            store_text(extra.get("first_seen")),
            store_text(extra.get("revoked_at")),
            extra.get("revocation_reason") or None,
            extra.get("revocation_source") or None,
            now,
        )

    def put_many(self, raws: Iterable[RawCert], *, done_window: tuple[str, datetime, datetime, int] | None = None) -> int:
        """Store certificates in one transaction (upsert by SHA-256); optionally mark a window done in it too.

        Returns how many certificates were written. done_window is (key, start, end, rows).
        """
        now = store_text(datetime.now(timezone.utc))
        rows = [self._row(raw, now) for raw in raws]  # type: ignore[arg-type]
        with self._transaction():
            if rows:
                self._conn.executemany(_UPSERT, rows)
            if done_window is not None:
                self._mark(*done_window)
        return len(rows)

    def has(self, sha256: str) -> bool:
        """True when a certificate with this SHA-256 (hex) is stored."""
        return self._conn.execute("SELECT 1 FROM certs WHERE sha256 = ?", (sha256.lower(),)).fetchone() is not None

    def known_crtsh_ids(self, ids: Iterable[int]) -> set[int]:
        """Those of the given crt.sh ids whose certificate is already stored."""
        wanted = list(dict.fromkeys(int(i) for i in ids))
        found: set[int] = set()
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start:start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0] for r in self._conn.execute(f"SELECT crtsh_id FROM certs WHERE crtsh_id IN ({marks})", chunk)
            )
        return found

    def count(self) -> int:
        """How many certificates are stored."""
        return int(self._conn.execute("SELECT count(*) FROM certs").fetchone()[0])

    def iter_raw(
        self,
        *,
        ca_ids: Sequence[int] = (),
        not_before_from: datetime | None = None,
        not_before_to: datetime | None = None,
        crtsh_ids: Sequence[int] = (),
        batch: int = 1000,
    ) -> Iterator[RawCert]:
        """Stored certificates as RawCerts (with their extra facts), filtered by issuer CA, notBefore range, crt.sh id."""
        if crtsh_ids:
            ids = list(crtsh_ids)
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                yield from self._select(f"crtsh_id IN ({marks})", chunk, batch)
            return
        where, params = [], []
        if ca_ids:
            where.append(f"issuer_ca_id IN ({','.join('?' * len(ca_ids))})")
            params.extend(int(c) for c in ca_ids)
        if not_before_from is not None:
            where.append("not_before >= ?")
            params.append(store_text(not_before_from))
        if not_before_to is not None:
            where.append("not_before < ?")
            params.append(store_text(not_before_to))
        yield from self._select(" AND ".join(where) or "1", params, batch)

    def _select(self, where: str, params: Sequence[Any], batch: int) -> Iterator[RawCert]:
        # A separate cursor read in batches keeps memory flat however large the store is.
        cur = self._conn.cursor()
        cur.execute(
            "SELECT sha256, der, source, provenance, crtsh_id, issuer_ca_id, first_seen, revoked_at, "
            f"revocation_reason, revocation_source FROM certs WHERE {where}",
            list(params),
        )
        nothing = (None,) * len(_EXTRA_KEYS)
        try:
            while True:
                rows = cur.fetchmany(batch)
                if not rows:
                    return
                for sha, der, source, provenance, *facts in rows:
                    extra: dict[str, Any] = {}
                    if tuple(facts) != nothing:  # most stored certificates carry no facts: skip the walk
                        for key, value in zip(_EXTRA_KEYS, facts):
                            if key in ("first_seen", "revoked_at"):
                                try:
                                    value = text_time(value)
                                except ValueError:  # written by another program: said, not fatal to the scan
                                    log.warning("%s: the stored %s %r of %s is no time; read without it",
                                                self.path, key, str(value)[:40], provenance[:200])
                                    continue
                            if value is not None and value != "":
                                extra[key] = value
                    yield RawCert(bytes(der), source, provenance, extra, sha)
        finally:
            cur.close()

    # --- checkpoints --------------------------------------------------------------------

    def _mark(self, key: str, start: datetime, end: datetime, rows: int) -> None:
        # A refreshed window replaces the older, possibly differently cut, windows it covers.
        self._conn.execute("DELETE FROM checkpoints WHERE key = ? AND win_start >= ? AND win_end <= ?",
                           (key, store_text(start), store_text(end)))
        self._conn.execute(
            "INSERT OR REPLACE INTO checkpoints (key, win_start, win_end, rows, done_at) VALUES (?, ?, ?, ?, ?)",
            (key, store_text(start), store_text(end), rows, store_text(datetime.now(timezone.utc))),
        )

    def mark_window_done(self, key: str, window: tuple[datetime, datetime], rows: int = 0) -> None:
        """Record that every certificate of this window (start inclusive, end exclusive) is stored."""
        with self._transaction():
            self._mark(key, window[0], window[1], rows)

    def done_windows(self, key: str) -> list[tuple[datetime, datetime]]:
        """The windows of this fetch already completed, in start order."""
        rows = self._conn.execute(
            "SELECT win_start, win_end FROM checkpoints WHERE key = ? ORDER BY win_start", (key,)
        ).fetchall()
        return [(text_time(s), text_time(e)) for s, e in rows]  # type: ignore[misc]

    def clear_windows(self, key: str) -> None:
        """Forget this fetch's checkpoints (the next run fetches everything again)."""
        with self._transaction():
            self._conn.execute("DELETE FROM checkpoints WHERE key = ?", (key,))

    def update_revocations(self, rows: Iterable[tuple[str, datetime, str, str]]) -> int:
        """Set the revocation of stored certificates from (sha256, revoked_at, reason, source); returns rows changed."""
        params = [(store_text(when), reason or None, source or None, sha256.lower())
                  for sha256, when, reason, source in rows]
        with self._transaction():
            before = self._conn.total_changes
            self._conn.executemany(
                "UPDATE certs SET revoked_at = ?, revocation_reason = ?, revocation_source = ? WHERE sha256 = ?",
                params)
            return self._conn.total_changes - before

    def remember_search(self, search: str, crtsh_ids: Iterable[int]) -> None:
        """Record the crt.sh ids a JSON search answered, so a run that cannot search again still has its answer."""
        with self._transaction():
            self._conn.executemany("INSERT OR IGNORE INTO crtsh_searches (search, crtsh_id) VALUES (?, ?)",
                                   [(search, int(i)) for i in crtsh_ids])

    def searched_ids(self, search: str) -> list[int]:
        """Every crt.sh id an earlier run's JSON search answered (empty when it never ran)."""
        return [int(r[0]) for r in self._conn.execute(
            "SELECT crtsh_id FROM crtsh_searches WHERE search = ? ORDER BY crtsh_id", (search,))]

    # --- CT log entries -------------------------------------------------------------------

    def ct_progress(self, selection: str, log_url: str) -> CTProgress | None:
        """How far this selection has read this log, or None when it never did."""
        row = self._conn.execute(
            "SELECT first, next, tree_size, stack FROM ct_progress WHERE selection = ? AND log_url = ?",
            (selection, log_url)).fetchone()
        if row is None:
            return None
        return CTProgress(int(row[0]), int(row[1]), int(row[2]), json.loads(row[3]) if row[3] else None)

    def ct_commit(self, selection: str, log_url: str, kept: Sequence[tuple[int, RawCert]], progress: CTProgress,
                  *, pending: bool = False) -> None:
        """Store kept entries (index, certificate) and the new resume point in one transaction."""
        now = store_text(datetime.now(timezone.utc))
        rows = [self._row(raw, now) for _, raw in kept]
        with self._transaction():
            if rows:
                self._conn.executemany(_UPSERT, rows)
                self._conn.executemany(
                    "INSERT OR REPLACE INTO ct_entries (selection, log_url, idx, sha256, pending) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(selection, log_url, idx, row[0], int(pending)) for (idx, _), row in zip(kept, rows)])
            self._conn.execute(
                "INSERT OR REPLACE INTO ct_progress (selection, log_url, first, next, tree_size, stack, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (selection, log_url, progress.first, progress.next, progress.tree_size,
                 json.dumps(progress.stack) if progress.stack is not None else None, now))

    def ct_confirm(self, selection: str, log_url: str) -> int:
        """Mark this selection's pending entries of a log as checked against a signed root; returns how many."""
        with self._transaction():
            cur = self._conn.execute("UPDATE ct_entries SET pending = 0 WHERE selection = ? AND log_url = ? "
                                     "AND pending = 1", (selection, log_url))
        return cur.rowcount

    def ct_forget(self, selection: str, log_url: str) -> None:
        """Drop this selection's pending entries and resume point of a log (it served entries it did not sign)."""
        with self._transaction():
            self._conn.execute("DELETE FROM ct_entries WHERE selection = ? AND log_url = ? AND pending = 1",
                               (selection, log_url))
            self._conn.execute("DELETE FROM ct_progress WHERE selection = ? AND log_url = ?", (selection, log_url))

    def ct_iter(self, selection: str, log_url: str, start: int, end: int, *, batch: int = 1000) -> Iterator[RawCert]:
        """The checked entries in [start, end) this selection kept from a log, in index order, as the log gave them."""
        cur = self._conn.cursor()
        cur.execute(
            "SELECT e.idx, c.der, c.first_seen FROM ct_entries e JOIN certs c ON c.sha256 = e.sha256 "
            "WHERE e.selection = ? AND e.log_url = ? AND e.idx >= ? AND e.idx < ? AND e.pending = 0 "
            "ORDER BY e.idx", (selection, log_url, start, end))
        try:
            while rows := cur.fetchmany(batch):
                for idx, der, first_seen in rows:
                    extra = {"first_seen": text_time(first_seen)} if first_seen else {}
                    yield RawCert(bytes(der), "ct", f"{log_url}#{idx}", extra)
        finally:
            cur.close()

    # --- lint results (--lint) ---------------------------------------------------------------

    def lint_cached(self, linter: str, sha256s: Sequence[str]) -> dict[str, str]:
        """The stored lint results (JSON text) of those certificates this linter has linted: sha256 -> result."""
        found: dict[str, str] = {}
        wanted = list(sha256s)
        for start in range(0, len(wanted), _CHUNK - 1):
            chunk = wanted[start:start + _CHUNK - 1]
            marks = ",".join("?" * len(chunk))
            found.update(self._conn.execute(
                f"SELECT sha256, result FROM lint_results WHERE linter = ? AND sha256 IN ({marks})", [linter, *chunk]))
        return found

    def lint_put(self, linter: str, results: Iterable[tuple[str, str]]) -> int:
        """Keep (sha256, result JSON text) pairs of this linter in one transaction; returns how many."""
        now = store_text(datetime.now(timezone.utc))
        rows = [(sha, linter, result, now) for sha, result in results]
        with self._transaction():
            self._conn.executemany("INSERT OR REPLACE INTO lint_results (sha256, linter, result, linted_at) "
                                   "VALUES (?, ?, ?, ?)", rows)
        return len(rows)

    # --- alerts (ctscan watch) -------------------------------------------------------------

    def alert_record(self, channel: str, round_time: str, delivery: str,
                     findings: Sequence[dict[str, Any]]) -> int:
        """Make the pairs (finding["sha256"], finding["code"]) this channel has never had pending, in one new
        delivery, in one transaction; returns how many were new (0: no delivery is made).

        A finding whose precert_sha256 this channel had pending with its code is not new: the precertificate
        was alerted before its certificate was logged, and the two are one issuance.
        """
        with self._transaction():
            # The pairs are matched first as bare keys, so a round with nothing new encodes no finding.
            self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS alert_round_keys (sha256 TEXT, code TEXT, "
                               "alias TEXT, PRIMARY KEY (sha256, code)) WITHOUT ROWID")
            self._conn.execute("DELETE FROM temp.alert_round_keys")
            self._conn.executemany("INSERT OR IGNORE INTO temp.alert_round_keys VALUES (?, ?, ?)",
                                   [(f["sha256"], f["code"], f.get("precert_sha256") or "") for f in findings])
            fresh = set(self._conn.execute(
                "SELECT sha256, code FROM temp.alert_round_keys r WHERE NOT EXISTS (SELECT 1 FROM alert_pairs p "
                "WHERE p.channel = ? AND p.sha256 = r.sha256 AND p.code = r.code) AND (r.alias = '' OR NOT EXISTS "
                "(SELECT 1 FROM alert_pairs q WHERE q.channel = ? AND q.sha256 = r.alias AND q.code = r.code))",
                (channel, channel)))
            before = self._conn.total_changes
            self._conn.executemany(
                "INSERT OR IGNORE INTO alert_pairs (channel, sha256, code, delivery, finding) VALUES (?, ?, ?, ?, ?)",
                [(channel, f["sha256"], f["code"], delivery, json.dumps(f, sort_keys=True)) for f in findings
                 if (f["sha256"], f["code"]) in fresh])
            new = self._conn.total_changes - before
            if new:
                self._conn.execute("INSERT INTO alert_deliveries (delivery, channel, round) VALUES (?, ?, ?)",
                                   (delivery, channel, round_time))
        return new

    def alert_pending(self, channel: str) -> list[PendingDelivery]:
        """This channel's deliveries not yet accepted, oldest first, each with its findings."""
        rows = self._conn.execute(
            "SELECT delivery, round, attempts FROM alert_deliveries WHERE channel = ? AND delivered_at IS NULL "
            "ORDER BY round, rowid", (channel,)).fetchall()  # rounds in one second: in the order they were formed
        return [PendingDelivery(d, r, int(a), [json.loads(f) for (f,) in self._conn.execute(
                    "SELECT finding FROM alert_pairs WHERE delivery = ? ORDER BY sha256, code", (d,))])
                for d, r, a in rows]

    def alert_delivered(self, delivery: str) -> None:
        """Record that the channel accepted this delivery (so none of its pairs is sent again)."""
        with self._transaction():
            self._conn.execute("UPDATE alert_deliveries SET delivered_at = ?, attempts = attempts + 1, "
                               "last_error = NULL WHERE delivery = ?",
                               (store_text(datetime.now(timezone.utc)), delivery))

    def alert_failed(self, delivery: str, error: str) -> None:
        """Record a failed attempt; the delivery stays pending for the next round."""
        with self._transaction():
            self._conn.execute("UPDATE alert_deliveries SET attempts = attempts + 1, last_error = ? "
                               "WHERE delivery = ?", (error, delivery))

    def alert_counts(self, channel: str) -> dict[str, int]:
        """Pairs of this channel by state: {"pending": n, "delivered": n}."""
        rows = self._conn.execute(
            "SELECT d.delivered_at IS NOT NULL, count(*) FROM alert_pairs p JOIN alert_deliveries d "
            "ON d.delivery = p.delivery WHERE p.channel = ? GROUP BY 1", (channel,)).fetchall()
        counts = {"pending": 0, "delivered": 0}
        for delivered, n in rows:
            counts["delivered" if delivered else "pending"] = int(n)
        return counts

    # --- plumbing -----------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn)

    def close(self) -> None:
        """Close the file."""
        self._conn.close()

    def __enter__(self) -> CertStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Transaction:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


@contextmanager
def opened_store(store: CertStore | Path | str | None) -> Iterator[CertStore]:
    """The store a source reads and writes: the caller's open CertStore (left open), a file (opened and
    closed here), or None for a private one in memory that lasts this read only."""
    if isinstance(store, CertStore):
        yield store
        return
    with CertStore(":memory:" if store is None else store) as own:
        yield own


@dataclass(frozen=True)
class StoreOptions:
    """What reading the store as a source needs: its file, and which certificates."""

    path: Path
    ca_ids: tuple[int, ...] = ()  # () = every issuer
    since: datetime | None = None  # notBefore >= since
    until: datetime | None = None  # notBefore < until

    @classmethod
    def from_config(cls, config: Config) -> StoreOptions:
        """The options a scan's Config gives (--store, --ca-id, --since, --until)."""
        return cls(Path(config.store_file), tuple(config.ca_ids), config.since, config.until)


def read(options: StoreOptions) -> Iterator[SourceItem]:
    """Every stored certificate (only those of options.ca_ids when given): re-run detectors without the network."""
    path = Path(options.path)
    if not path.exists():
        yield SourceNotice(f"the certificate store {path} does not exist yet: nothing to read", partial=True)
        return
    with CertStore(path) as store:
        # Before the rows: a write after this point moves the revision on, so the next round reads again.
        # The file and the selection are part of the token: a copy of the store may be written apart from
        # it, and another --ca-id or notBefore range reads other rows.
        yield SourceState(f"store {path.resolve()} {store.revision()} ca_ids={sorted(options.ca_ids)} "
                          f"since={store_text(options.since)} until={store_text(options.until)}")
        # Materialise nothing: the cursor streams, and the store closes when the consumer is done.
        yield from store.iter_raw(ca_ids=tuple(options.ca_ids), not_before_from=options.since,
                                  not_before_to=options.until)
