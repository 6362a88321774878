"""The one on-disk cache: namespaced JSON values with a time to live, in a SQLite file (WAL).

A cache is an optimisation, never a source of failure: a corrupted, locked or unwritable file
is logged once and the run carries on as if nothing were cached.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

try:  # orjson reads a bulk of cached values about twice as fast; json does the same job without it
    from orjson import loads as json_loads
except ImportError:  # pragma: no cover - depends on the environment
    json_loads = json.loads

log = logging.getLogger(__name__)

CACHE_FILENAME = "ctscan-cache.sqlite3"
SCHEMA_VERSION = 1
# SQLite builds before 3.32 allow 999 bound parameters; stay under that for portability.
_CHUNK = 900

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    namespace  TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    stored_at  REAL NOT NULL,
    expires_at REAL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
"""


def _seconds(ttl: float | timedelta | None) -> float | None:
    if isinstance(ttl, timedelta):
        return ttl.total_seconds()
    return ttl


class Cache:
    """Namespaced (namespace, key) -> JSON value store with per-entry expiry; thread-safe."""

    def __init__(self, directory: Path | str | None, *, enabled: bool = True, busy_timeout: float = 2.0):
        self.path: Path | None = Path(directory) / CACHE_FILENAME if directory is not None else None
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._warned = False
        if enabled and self.path is not None:
            self._open(busy_timeout)

    @classmethod
    def from_config(cls, config: Any) -> Cache:
        """The cache a Config asks for (disabled when config.use_cache is False)."""
        return cls(config.cache_dir, enabled=bool(config.use_cache))

    @property
    def enabled(self) -> bool:
        """True while the cache file is usable."""
        return self._conn is not None

    def _open(self, busy_timeout: float) -> None:
        assert self.path is not None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(self.path), timeout=busy_timeout, check_same_thread=False, isolation_level=None
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                # A cache of another layout is simply thrown away: its answers can be fetched again.
                conn.execute("DROP TABLE IF EXISTS entries")
                conn.execute(_SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            else:
                conn.execute(_SCHEMA)
            self._conn = conn
        except (sqlite3.Error, OSError) as exc:
            self._disable(exc, "open")

    def _disable(self, exc: BaseException, action: str) -> None:
        if not self._warned:
            log.warning(
                "Cache %s unusable (%s failed: %s); carrying on without it. Delete the file if it stays broken.",
                self.path,
                action,
                exc,
            )
            self._warned = True
        self._close_connection()

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def get(self, namespace: str, key: str) -> Any | None:
        """The live value stored under (namespace, key), else None."""
        return self.get_many(namespace, [key]).get(key)

    def get_many(self, namespace: str, keys: Iterable[str]) -> dict[str, Any]:
        """The live values of these keys (missing or expired keys are absent), read in bulk."""
        return self._decode(self.get_many_text(namespace, keys))

    def get_many_text(self, namespace: str, keys: Iterable[str]) -> dict[str, str]:
        """The live values of these keys as their stored JSON text, for callers that decode them their own way."""
        wanted = list(dict.fromkeys(keys))
        if self._conn is None or not wanted:
            return {}
        now = time.time()
        found: dict[str, str] = {}
        with self._lock:
            try:
                for i in range(0, len(wanted), _CHUNK):
                    chunk = wanted[i : i + _CHUNK]
                    sql = (
                        "SELECT key, value FROM entries WHERE namespace=? AND key IN ("
                        + ",".join("?" * len(chunk))
                        + ") AND (expires_at IS NULL OR expires_at > ?)"
                    )
                    found.update(self._conn.execute(sql, (namespace, *chunk, now)))
            except sqlite3.Error as exc:
                self._disable(exc, "read")
                return {}
        return found

    @staticmethod
    def _decode(found: dict[str, str]) -> dict[str, Any]:
        try:
            # One json.loads over all values is several times faster than one call per value.
            return dict(zip(found, json_loads("[" + ",".join(found.values()) + "]")))
        except ValueError:
            out: dict[str, Any] = {}
            for key, value in found.items():
                try:
                    out[key] = json.loads(value)
                except ValueError:
                    log.debug("cache entry %r is not JSON; ignored", key)
            return out

    def put(self, namespace: str, key: str, value: Any, ttl: float | timedelta | None = None) -> None:
        """Store one value; ttl in seconds (None = never expires)."""
        self.put_many(namespace, {key: value}, ttl)

    def put_many(
        self,
        namespace: str,
        items: Mapping[str, Any] | Iterable[tuple[str, Any]],
        ttl: float | timedelta | None = None,
    ) -> None:
        """Store many values in one transaction; ttl in seconds (None = never expires)."""
        if self._conn is None:
            return
        pairs = items.items() if isinstance(items, Mapping) else items
        now = time.time()
        seconds = _seconds(ttl)
        expires = now + seconds if seconds is not None else None
        rows = [(namespace, key, json.dumps(value, default=str), now, expires) for key, value in pairs]
        if not rows:
            return
        with self._lock:
            try:
                self._conn.execute("BEGIN")
                self._conn.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?)", rows)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                self._disable(exc, "write")

    def delete(self, namespace: str, key: str) -> None:
        """Forget one entry."""
        if self._conn is None:
            return
        with self._lock:
            try:
                self._conn.execute("DELETE FROM entries WHERE namespace=? AND key=?", (namespace, key))
            except sqlite3.Error as exc:
                self._disable(exc, "delete")

    def clear(self, namespace: str | None = None) -> None:
        """Forget a namespace (or everything)."""
        if self._conn is None:
            return
        with self._lock:
            try:
                if namespace is None:
                    self._conn.execute("DELETE FROM entries")
                else:
                    self._conn.execute("DELETE FROM entries WHERE namespace=?", (namespace,))
            except sqlite3.Error as exc:
                self._disable(exc, "clear")

    def purge_expired(self) -> int:
        """Delete expired entries; returns how many went."""
        if self._conn is None:
            return 0
        with self._lock:
            try:
                cur = self._conn.execute(
                    "DELETE FROM entries WHERE expires_at IS NOT NULL AND expires_at <= ?", (time.time(),)
                )
                return cur.rowcount
            except sqlite3.Error as exc:
                self._disable(exc, "purge")
                return 0

    def close(self) -> None:
        """Close the file (later calls behave as an empty, disabled cache)."""
        with self._lock:
            self._close_connection()

    def __enter__(self) -> Cache:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
