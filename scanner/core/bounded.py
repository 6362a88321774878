"""Bounded reads: no answer from a server, however hostile, costs more than its cap in memory or its deadline in time.

Every HTTP answer ctscan reads comes from a party it may be auditing (a CA's CRL, OCSP and
caIssuers URLs, its CT log) or a third party (crt.sh, registries). So each read is bounded while it
streams, not after: bytes on the wire, bytes after decompression (a gzip bomb), a Content-Length
above the cap refused before reading, and one deadline for the whole request (connect, headers and
body), so a server that drips a byte a second is cut off too. The caps live in one table, LIMITS.
"""

from __future__ import annotations

import heapq
import itertools
import json
import socket
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.connectionpool
from urllib3.exceptions import HTTPError as Urllib3Error

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@dataclass(frozen=True, slots=True)
class Limit:
    """How much one answer of a kind may be: bytes (on the wire and decompressed), and time in all.

    The deadline is counted in read timeouts (--timeout), so a test or a user on a fast network who
    lowers the timeout lowers every deadline with it.
    """

    max_bytes: int
    timeouts: float  # the whole request (connect, headers, body) within this many --timeout
    what: str = "answer"  # how an error names it: "CRL", "OCSP response", ...

    def deadline(self, timeout: float) -> float:
        """Seconds the whole request may take with this read timeout."""
        return self.timeouts * timeout


#: The caps per kind of answer (deadlines in --timeout units: 90 x 10 s is 15 minutes). A CRL of 8
#: million entries is about 256 MiB (raise with --max-crl-bytes); an OCSP response is a few KB; a
#: static-ct-api data tile holds at most 256 entries; crt.sh answers large searches slowly.
LIMITS: Mapping[str, Limit] = MappingProxyType({
    "default": Limit(64 * MiB, 30),
    "crl": Limit(256 * MiB, 90, "CRL"),
    "ocsp": Limit(1 * MiB, 6, "OCSP response"),
    "ca_issuers": Limit(4 * MiB, 6, "caIssuers certificate bundle"),
    "ct_tile": Limit(64 * MiB, 30, "CT data tile"),
    "ct_json": Limit(64 * MiB, 30, "CT log answer"),
    "ct_issuer": Limit(1 * MiB, 6, "CT issuer certificate"),
    "crtsh_json": Limit(512 * MiB, 90, "crt.sh answer"),
    "rdap": Limit(4 * MiB, 6, "RDAP answer"),
    "loglist": Limit(16 * MiB, 12, "CT log list"),
})

#: About where Python's JSON parser stops nesting (the interpreter's recursion limit); no real answer comes near.
MAX_JSON_DEPTH = 1000
#: What the clients ask for, and so all they can read (brotli or zstd would need their own bounded decoders).
ACCEPT_ENCODING = "gzip, deflate"
#: Redirects followed per request, only to http and https.
MAX_REDIRECTS = 5
ALLOWED_SCHEMES = frozenset({"http", "https"})
_CHUNK = 64 * KiB


class BoundExceeded(Exception):
    """An answer broke one of its limits (size, deadline, redirects, scheme); the message says which and what came."""



def limit(kind: str, *, max_bytes: int | None = None) -> Limit:
    """The Limit of kind (LIMITS['default'] for an unknown kind), with a user's byte cap."""
    base = LIMITS.get(kind, LIMITS["default"])
    return replace(base, max_bytes=max_bytes or base.max_bytes)


def size_text(n: int) -> str:
    """A byte count as people read it (1.5 MiB)."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


# --- the deadline: one watchdog thread shuts the socket of a request that ran out of time ----------


class _Watch:
    """One request's deadline: when it passes, the socket the request reads from is shut down."""

    __slots__ = ("expires", "fired", "_sock", "_lock", "done")

    def __init__(self, expires: float) -> None:
        self.expires = expires
        self.fired = False
        self.done = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            fired = self.fired
        if fired:
            _shut(sock)

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            sock = self._sock
        _shut(sock)

    def finish(self) -> None:
        with self._lock:
            self.done = True
            self._sock = None


def _shut(sock: socket.socket | None) -> None:
    # shutdown, not close: it wakes a recv blocked in another thread, and the pool still owns the object.
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Watchdog:
    """A single daemon thread holding every open request's deadline in a heap."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Watch]] = []
        self._cv = threading.Condition()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, seconds: float) -> _Watch:
        w = _Watch(time.monotonic() + seconds)
        with self._cv:
            heapq.heappush(self._heap, (w.expires, next(self._ids), w))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="ctscan-deadlines", daemon=True)
                self._thread.start()
            self._cv.notify()
        return w

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cv.wait(30.0)
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                w = heapq.heappop(self._heap)[2]
            w.fire()


_WATCHDOG = _Watchdog()
_CURRENT = threading.local()  # the _Watch of the request this thread is making, if any


def _attach_current(conn: Any) -> None:
    w = getattr(_CURRENT, "watch", None)
    if w is not None:
        w.attach(getattr(conn, "sock", None))


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        _attach_current(self)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def getresponse(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        _attach_current(self)
        return super().getresponse(*args, **kwargs)


class _WatchedHTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class BoundedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter whose connections a request's deadline can cut (see bounded_request)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


# --- the read ------------------------------------------------------------------------------------


def bounded_request(
    session: requests.Session,
    method: str,
    url: str,
    *,
    bound: Limit,
    timeout: float,
    max_redirects: int = MAX_REDIRECTS,
    **kwargs: Any,  # noqa: ANN401 (params, headers, data: as requests takes them)
) -> requests.Response:
    """One request whose answer is read within bound (bytes, decompressed bytes, deadline); BoundExceeded if not.

    Redirects are followed here, at most max_redirects and only to http/https. The Response
    returned holds its whole body (resp.content) like a requests Response read without stream=True.
    Network errors are requests' own (Timeout, ConnectionError, ChunkedEncodingError, ...).
    """
    headers = {"Accept-Encoding": ACCEPT_ENCODING, **(kwargs.pop("headers", None) or {})}
    kwargs["headers"] = headers
    seconds = bound.deadline(timeout)
    watch = _WATCHDOG.watch(seconds)
    _CURRENT.watch = watch
    try:
        for _ in range(max_redirects + 1):
            _check_scheme(url)
            resp = session.request(method, url, stream=True, allow_redirects=False,
                                   timeout=(timeout, timeout), **kwargs)
            if not resp.is_redirect:
                return _read_body(resp, bound, watch, seconds)
            location = resp.headers.get("Location", "")
            resp.close()
            url = requests.compat.urljoin(url, location)
            if resp.status_code == 303:
                method, kwargs = "GET", {k: v for k, v in kwargs.items() if k != "data"}
        raise BoundExceeded(f"more than {max_redirects} redirects (the last to {url})")
    except (requests.RequestException, Urllib3Error, OSError):
        if watch.fired:
            raise _late(bound, seconds, 0) from None
        raise
    finally:
        watch.finish()
        _CURRENT.watch = None


def _check_scheme(url: str) -> None:
    scheme = url.partition(":")[0].lower() if ":" in url else ""
    if scheme not in ALLOWED_SCHEMES:
        raise BoundExceeded(f"not fetched: {scheme or 'no'} scheme ({url[:200]}); only http and https are")


def _late(bound: Limit, seconds: float, received: int) -> BoundExceeded:
    return BoundExceeded(f"{bound.what} not complete within the {seconds:g} s deadline "
                         f"({size_text(received)} received)")


def _declared_too_large(bound: Limit, declared: int) -> BoundExceeded:
    return BoundExceeded(f"{bound.what} declared {size_text(declared)} (Content-Length), more than "
                         f"the {size_text(bound.max_bytes)} limit; not read")


def _too_large(bound: Limit, decoded: int, wire: int | None = None) -> BoundExceeded:
    received = f"{size_text(wire)} received, " if wire is not None else ""
    return BoundExceeded(f"{bound.what} larger than the {size_text(bound.max_bytes)} limit ({received}"
                         f"{size_text(decoded)} after decompression); not read to the end")


def _read_body(resp: requests.Response, bound: Limit, watch: _Watch, seconds: float) -> requests.Response:
    declared = resp.headers.get("Content-Length", "")
    if declared.strip().isdigit() and int(declared) > bound.max_bytes:
        resp.close()
        raise _declared_too_large(bound, int(declared))
    raw = resp.raw
    wire = 0
    try:
        decoder = _Decoder(resp.headers.get("Content-Encoding", ""), bound.max_bytes)
        while not watch.fired:
            # read1: one socket read at a time, so the deadline is checked between any two.
            chunk = raw.read1(_CHUNK, decode_content=False)
            if not chunk:
                break
            wire += len(chunk)
            if wire > bound.max_bytes or not decoder.feed(chunk):
                raise _too_large(bound, decoder.size, wire)
        if not watch.fired:
            decoder.finish()
    except BoundExceeded:
        resp.close()
        raise
    except (Urllib3Error, OSError, zlib.error) as exc:
        resp.close()
        if watch.fired:
            raise _late(bound, seconds, decoder.size) from None
        raise requests.exceptions.ChunkedEncodingError(f"{type(exc).__name__}: {exc}") from exc
    if watch.fired:
        resp.close()
        raise _late(bound, seconds, decoder.size)
    # requests' own non-streaming read fills these two; every caller then reads .content/.text/.json().
    resp._content = decoder.body()  # noqa: SLF001
    resp._content_consumed = True  # noqa: SLF001
    resp.close()
    return resp


class _Decoder:
    """Content-Encoding (gzip, deflate or none) undone as the bytes arrive, never past max_bytes."""

    def __init__(self, encoding: str, max_bytes: int) -> None:
        self.encoding = encoding.strip().lower()
        if self.encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            # Only gzip and deflate are asked for (ACCEPT_ENCODING); anything else cannot be read safely.
            raise BoundExceeded(f"unasked-for Content-Encoding {self.encoding[:40]!r}; not read")
        self.max_bytes = max_bytes
        self.size = 0
        self._parts: list[bytes] = []
        self._z = self._new() if self.encoding not in ("", "identity") else None
        self._first = True

    def _new(self, wbits: int | None = None) -> Any:  # noqa: ANN401
        gz = self.encoding in ("gzip", "x-gzip")
        return zlib.decompressobj(wbits if wbits is not None else (16 + zlib.MAX_WBITS if gz else zlib.MAX_WBITS))

    def feed(self, data: bytes) -> bool:
        """Take the next bytes from the wire; False once the decoded body passes max_bytes."""
        if self._z is None:
            return self._keep(data)
        while data:
            try:
                out = self._z.decompress(data, self.max_bytes - self.size + 1)
            except zlib.error:
                if self.encoding == "deflate" and self._first:
                    # Some servers send raw deflate without the zlib header, as urllib3 also allows.
                    self._z, self._first = self._new(-zlib.MAX_WBITS), False
                    continue
                raise
            self._first = False
            if not self._keep(out):
                return False
            if self._z.unconsumed_tail:
                data = self._z.unconsumed_tail
            elif self._z.eof and self._z.unused_data:
                data = self._z.unused_data  # another gzip member follows
                self._z = self._new()
            else:
                data = b""
        return True

    def _keep(self, out: bytes) -> bool:
        self.size += len(out)
        if self.size > self.max_bytes:
            return False
        if out:
            self._parts.append(out)
        return True

    def finish(self) -> None:
        """At the end of the body: a compressed stream must have ended too, else the body was cut short."""
        if self._z is not None and not self._z.eof and self.size + len(self._z.unconsumed_tail) > 0:
            raise zlib.error(f"the {self.encoding} stream ends early (cut short after {self.size:,} bytes)")

    def body(self) -> bytes:
        """The whole decoded body."""
        return b"".join(self._parts)


def gunzip(body: bytes, max_bytes: int) -> bytes:
    """A whole gzip body (one member or several) undone, never past max_bytes.

    BoundExceeded past max_bytes; zlib.error when it is no gzip or the stream ends early.
    """
    decoder = _Decoder("gzip", max_bytes)
    if not decoder.feed(body):
        raise _too_large(Limit(max_bytes, 0, "gzip body"), decoder.size, len(body))
    decoder.finish()
    return decoder.body()


async def read_aiohttp(resp: Any, bound: Limit) -> bytes:  # noqa: ANN401 (an aiohttp.ClientResponse)
    """The body of an aiohttp response, read within bound's bytes; BoundExceeded past it.

    aiohttp decompresses chunk by chunk (a gzip bomb grows by a chunk at a time), and the session's
    ClientTimeout(total=...) is the request's deadline.
    """
    declared = resp.content_length
    if declared is not None and declared > bound.max_bytes:
        resp.release()
        raise _declared_too_large(bound, declared)
    if declared is not None and not resp.headers.get("Content-Encoding"):
        # Exactly `declared` bytes follow and nothing inflates them: one read, as cheap as aiohttp's own.
        return await resp.read()
    parts: list[bytes] = []
    got = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        got += len(chunk)
        if got > bound.max_bytes:
            resp.close()
            raise _too_large(bound, got)
        parts.append(chunk)
    return b"".join(parts)


# --- JSON ------------------------------------------------------------------------------------------


def response_json(resp: requests.Response, what: str = "answer") -> Any:  # noqa: ANN401
    """load_json of a response's body, parsed once however often asked (a validator, then its caller)."""
    cached = resp.__dict__.get("_ctscan_json", _UNPARSED)
    if cached is _UNPARSED:
        cached = resp.__dict__["_ctscan_json"] = load_json(resp.content, what=what)
    return cached


_UNPARSED = object()


def load_json(body: bytes | str, *, what: str = "answer") -> Any:  # noqa: ANN401
    """Parse JSON from a server; ValueError with a reason for bad JSON or JSON nested past the recursion limit.

    The standard library, not orjson: orjson turns integers beyond 64 bits into floats, and a
    crt.sh id or a log index must stay exact. Its C parser stops deep nesting with RecursionError.
    """
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError(f"{what}: JSON nested deeper than {MAX_JSON_DEPTH:,} levels; not parsed") from None
    except ValueError as exc:
        raise ValueError(f"{what}: not JSON: {exc}") from None
