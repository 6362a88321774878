"""The one bounded read path against a hostile loopback server: every fault ends in a clear error, in bounded time and memory."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from scanner.core.bounded import LIMITS, BoundedAdapter, BoundExceeded, Limit, bounded_request, load_json
from tests.loopback.hostile import HostileServer

ROOT = Path(__file__).resolve().parent.parent
SMALL = Limit(16 << 20, 1.5, "test answer")  # with the 2 s timeout below: a 3 s deadline


@pytest.fixture(scope="module")
def server():
    with HostileServer() as srv:
        for fault in ("gzip_bomb", "endless", "drip", "header_drip", "length_lie_long", "length_huge",
                      "length_lie_short", "truncated_gzip", "redirect_loop", "redirect_file", "big_json",
                      "deep_json"):
            srv.routes["/" + fault] = fault
        srv.routes["/fine"] = b'{"ok": true}'
        yield srv


@pytest.fixture()
def session():
    s = requests.Session()
    s.mount("http://", BoundedAdapter(max_retries=0))
    with s:
        yield s


def get(session, server, path, bound=SMALL):
    start = time.monotonic()
    try:
        return bounded_request(session, "GET", server.url(path), bound=bound, timeout=2.0), time.monotonic() - start
    except (BoundExceeded, requests.RequestException) as exc:
        return exc, time.monotonic() - start


def test_a_plain_answer_is_read_whole(session, server):
    resp, _ = get(session, server, "/fine")
    assert resp.status_code == 200 and resp.json() == {"ok": True}


@pytest.mark.parametrize("path, message", [
    ("/gzip_bomb", r"larger than the 16\.0 MiB limit \(.* KiB received, 16\.0 MiB after decompression\)"),
    ("/endless", r"larger than the 16\.0 MiB limit"),
    ("/length_huge", r"declared 10\.0 GiB \(Content-Length\), more than the 16\.0 MiB limit; not read"),
    ("/big_json", r"declared 50\.0 MiB"),
    ("/redirect_loop", r"more than 5 redirects"),
    ("/redirect_file", r"not fetched: file scheme \(file:///etc/passwd\)"),
])
def test_an_answer_past_its_limits_is_refused_at_once_with_the_limit_named(session, server, path, message):
    err, took = get(session, server, path)
    assert isinstance(err, BoundExceeded), err
    assert took < 10
    assert re.search(message, str(err)), str(err)


@pytest.mark.parametrize("path", ["/drip", "/header_drip"])
def test_a_server_that_drips_is_cut_off_at_the_deadline_not_the_read_timeout(session, server, path):
    # Each byte comes within the 2 s read timeout, so only the 3 s deadline for the whole request ends it.
    err, took = get(session, server, path)
    assert isinstance(err, BoundExceeded) and "not complete within the 3 s deadline" in str(err)
    assert 2.5 < took < 8


@pytest.mark.parametrize("path, reason", [("/length_lie_long", "IncompleteRead"),
                                          ("/truncated_gzip", "gzip stream ends early")])
def test_a_body_cut_short_is_a_network_error_worth_a_retry_not_a_short_answer(session, server, path, reason):
    err, _ = get(session, server, path)
    assert isinstance(err, requests.exceptions.ChunkedEncodingError) and reason in str(err)


def test_a_content_length_shorter_than_the_body_gives_what_it_declared(session, server):
    resp, _ = get(session, server, "/length_lie_short")
    assert resp.content == b"yyyyy"


def test_json_nested_100000_deep_is_a_value_error_not_a_recursion_crash(session, server):
    resp, _ = get(session, server, "/deep_json")
    with pytest.raises(ValueError, match="nested deeper than 1,000 levels"):
        load_json(resp.content, what="crt.sh answer")


def test_a_large_json_document_within_its_limit_is_parsed():
    doc = json.dumps([{"id": i, "name_value": "a" * 50} for i in range(100_000)]).encode()
    assert len(load_json(doc)) == 100_000


def test_json_the_fast_parser_refuses_is_decided_by_the_standard_one():
    assert load_json(b"[123456789012345678901234567890]") == [123456789012345678901234567890]
    with pytest.raises(ValueError, match="crt.sh answer: not JSON"):
        load_json(b"<html>502 Bad Gateway</html>", what="crt.sh answer")


PEAK = """
import resource, sys, requests
sys.path.insert(0, {root!r})
from scanner.core.bounded import LIMITS, BoundedAdapter, BoundExceeded, bounded_request
s = requests.Session(); s.mount("http://", BoundedAdapter(max_retries=0))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    bounded_request(s, "GET", {url!r}, bound=LIMITS[{kind!r}], timeout=5.0)
    print("read")
except BoundExceeded as exc:
    print("refused:", exc)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.parametrize("path, kind", [("/gzip_bomb", "crl"), ("/endless", "crl"), ("/gzip_bomb", "ct_tile")])
def test_a_bomb_costs_no_more_memory_than_the_cap_of_its_kind(server, path, kind):
    # 4 GiB of zeros behind 4 MB of gzip, and a body without end: the process grows by about the cap.
    code = PEAK.format(root=str(ROOT), url=server.url(path), kind=kind)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    verdict, grown = done.stdout.strip().splitlines()
    assert verdict.startswith("refused:") and "larger than" in verdict
    cap_mib = LIMITS[kind].max_bytes >> 20
    assert int(grown) < cap_mib + 150, f"grew {grown} MiB reading a {kind} capped at {cap_mib} MiB"
