"""The on-disk cache: TTLs, namespaces, bulk reads, and a broken or locked file never being fatal."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

from scanner.core.cache import CACHE_FILENAME, SCHEMA_VERSION, Cache
from scanner.core.config import Config


def test_values_survive_closing_and_reopening_the_cache(tmp_path):
    with Cache(tmp_path) as cache:
        cache.put("registration", "example.com", {"status": "registered", "attempts": 1}, ttl=60)
    with Cache(tmp_path) as cache:
        assert cache.get("registration", "example.com") == {"status": "registered", "attempts": 1}
    assert (tmp_path / CACHE_FILENAME).exists()


def test_expired_entries_are_not_returned(tmp_path):
    with Cache(tmp_path) as cache:
        cache.put("ns", "short", 1, ttl=0.05)
        cache.put("ns", "long", 2, ttl=60)
        cache.put("ns", "forever", 3, ttl=None)
        time.sleep(0.1)
        assert cache.get_many("ns", ["short", "long", "forever"]) == {"long": 2, "forever": 3}
        assert cache.purge_expired() == 1


def test_namespaces_do_not_see_each_other(tmp_path):
    with Cache(tmp_path) as cache:
        cache.put("registration", "k", "rdap answer")
        cache.put("crtsh", "k", "page")
        assert cache.get("registration", "k") == "rdap answer"
        assert cache.get("crtsh", "k") == "page"
        cache.clear("crtsh")
        assert cache.get("crtsh", "k") is None and cache.get("registration", "k") == "rdap answer"


def test_bulk_reads_return_every_stored_key_and_skip_missing_ones(tmp_path):
    items = {f"name{i}.com": {"i": i} for i in range(5000)}
    with Cache(tmp_path) as cache:
        cache.put_many("registration", items, ttl=60)
        got = cache.get_many("registration", [*items, "missing.com", "name1.com"])
    assert got == items


def test_bulk_text_reads_return_the_stored_json_for_the_caller_to_decode(tmp_path):
    with Cache(tmp_path) as cache:
        cache.put_many("registration", {"a.com": ["registered", 1], "b.com": None}, ttl=60)
        cache.put("registration", "gone.com", [1], ttl=-1)
        got = cache.get_many_text("registration", ["a.com", "b.com", "gone.com", "missing.com"])
    assert got == {"a.com": '["registered", 1]', "b.com": "null"}


def test_a_corrupted_cache_file_is_ignored_with_a_warning(tmp_path, caplog):
    (tmp_path / CACHE_FILENAME).write_bytes(b"this is not a sqlite database at all" * 100)
    with caplog.at_level(logging.WARNING, logger="scanner.core.cache"):
        cache = Cache(tmp_path)
        cache.put("ns", "k", 1)
        assert cache.get("ns", "k") is None
    assert not cache.enabled
    assert "carrying on without it" in caplog.text


def test_a_locked_cache_is_skipped_with_one_warning_not_an_error(tmp_path, caplog):
    cache = Cache(tmp_path, busy_timeout=0.1)
    cache.put("ns", "before", 1)
    other = sqlite3.connect(str(tmp_path / CACHE_FILENAME), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with caplog.at_level(logging.WARNING, logger="scanner.core.cache"):
            cache.put("ns", "during", 2)
            cache.put("ns", "again", 3)
        assert caplog.text.count("unusable") == 1
        assert cache.get("ns", "during") is None
    finally:
        other.execute("ROLLBACK")
        other.close()
        cache.close()


def test_a_cache_of_another_schema_version_is_rebuilt_empty(tmp_path):
    with Cache(tmp_path) as cache:
        cache.put("ns", "k", "old")
    conn = sqlite3.connect(str(tmp_path / CACHE_FILENAME))
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 7}")
    conn.commit()
    conn.close()
    with Cache(tmp_path) as cache:
        assert cache.get("ns", "k") is None
        cache.put("ns", "k", "new")
        assert cache.get("ns", "k") == "new"


def test_threads_can_read_and_write_at_once(tmp_path):
    errors: list[Exception] = []
    with Cache(tmp_path) as cache:

        def work(n: int) -> None:
            try:
                for i in range(200):
                    cache.put("ns", f"{n}-{i}", i)
                    assert cache.get("ns", f"{n}-{i}") == i
            except (AssertionError, sqlite3.Error) as exc:  # collected for the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(cache.get_many("ns", [f"{n}-{i}" for n in range(8) for i in range(200)])) == 1600


def test_use_cache_false_means_no_file_and_no_answers(tmp_path):
    cache = Cache.from_config(Config(out_dir=tmp_path, cache_dir=tmp_path / "c", use_cache=False))
    cache.put("ns", "k", 1)
    assert cache.get("ns", "k") is None
    assert not (tmp_path / "c").exists()
