"""An HTTP server on 127.0.0.1 that misbehaves the way broken or hostile servers do, one fault per path.

Routes map a path (without the query) to a fault name (FAULTS) or to bytes served plainly, so a
real client's ordinary requests (a log's checkpoint, an issuer) can be answered while one request
(a data tile, a CRL) meets the fault. Unrouted paths get the `default` fault.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol
from urllib.parse import urlsplit

from . import ServedInThread

FAULTS = (
    "gzip_bomb",        # Content-Encoding: gzip, 4 GiB of zeros once decompressed, about 4 MB on the wire
    "endless",          # a chunked body that never ends
    "drip",             # one byte every drip_gap seconds (default 1) of a 100,000-byte body
    "header_drip",      # the status line, then the headers at one byte a second
    "length_lie_long",  # Content-Length: 100000, then 10 bytes and the connection closed
    "length_huge",      # Content-Length: 10 GiB
    "length_lie_short",  # Content-Length: 5, then 1,000 bytes
    "truncated_gzip",   # Content-Encoding: gzip, the stream cut in half
    "redirect_loop",    # 302 to itself, forever
    "redirect_file",    # 302 to file:///etc/passwd
    "big_json",         # a 50 MB JSON document
    "deep_json",        # JSON nested 100,000 deep
)

_BOMB_MEMBER = (lambda c: c.compress(b"\0" * (16 << 20)) + c.flush())(zlib.compressobj(9, zlib.DEFLATED, 31))
BOMB_MEMBERS = 256  # 256 gzip members of 16 MiB of zeros each: 4 GiB decompressed


class HostileServer(ServedInThread):
    """A ThreadingHTTPServer on 127.0.0.1 (port 0) serving FAULTS by path; `hits` counts requests per path."""

    def __init__(self, routes: dict[str, str | bytes] | None = None, default: str | bytes = b"ok",
                 content_type: str = "application/octet-stream", drip_gap: float = 1.0) -> None:
        self.routes = dict(routes or {})
        self.drip_gap = drip_gap
        self.default = default
        self.content_type = content_type
        self.hits: dict[str, int] = {}
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server._serve(self)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                server._serve(self)

            def log_message(self, *args: object) -> None:
                pass

        self._served = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._served.daemon_threads = True

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self._served.server_address[1]}"

    def url(self, path: str) -> str:
        """The URL of path on this server."""
        return self.base_url + path

    def stop(self) -> None:
        """Stop the endless answers too, then the server."""
        self.stopping.set()
        super().stop()

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        path = urlsplit(h.path).path
        self.hits[path] = self.hits.get(path, 0) + 1
        # a route covers its path and everything under it (an OCSP GET puts the request after the path)
        what = next((v for k, v in sorted(self.routes.items(), key=lambda kv: -len(kv[0]))
                     if path == k or path.startswith(k.rstrip("/") + "/")), self.default)
        try:
            if isinstance(what, bytes):
                plain(self, h, what)
            else:
                serve_fault(self, h, what, path)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError, OSError):
            pass  # the client gave up, which is what the fault is for
        h.close_connection = True

class FaultContext(Protocol):
    """What a fault needs from the server that serves it."""

    stopping: threading.Event
    drip_gap: float
    content_type: str


def serve_fault(ctx: FaultContext, h: BaseHTTPRequestHandler, fault: str, path: str) -> None:
    """Answer the request h is handling with the named fault (one of FAULTS)."""
    if fault not in FAULTS:
        raise ValueError(f"no such fault: {fault!r}")
    globals()["_" + fault](ctx, h, path)


def _head(ctx: FaultContext, h: BaseHTTPRequestHandler, status: int, headers: dict[str, str]) -> None:
    h.send_response(status)
    h.send_header("Content-Type", ctx.content_type)
    headers.setdefault("Connection", "close")  # each answer is one fault: no connection is reused
    for k, v in headers.items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.flush()

def plain(ctx: FaultContext, h: BaseHTTPRequestHandler, body: bytes) -> None:
    _head(ctx, h, 200, {"Content-Length": str(len(body))})
    h.wfile.write(body)

def _gzip_bomb(ctx: FaultContext, h: BaseHTTPRequestHandler, path: str) -> None:
    _head(ctx, h, 200, {"Content-Encoding": "gzip"})
    for _ in range(BOMB_MEMBERS):
        if ctx.stopping.is_set():
            return
        h.wfile.write(_BOMB_MEMBER)

def _endless(ctx: FaultContext, h: BaseHTTPRequestHandler, path: str) -> None:
    _head(ctx, h, 200, {"Transfer-Encoding": "chunked"})
    chunk = b"%x\r\n%s\r\n" % (1 << 16, b"A" * (1 << 16))
    while not ctx.stopping.is_set():
        h.wfile.write(chunk)

def _drip(ctx: FaultContext, h: BaseHTTPRequestHandler, path: str) -> None:
    _head(ctx, h, 200, {"Content-Length": "100000"})
    for _ in range(100_000):
        if ctx.stopping.wait(ctx.drip_gap):
            return
        h.wfile.write(b"x")
        h.wfile.flush()

def _header_drip(ctx: FaultContext, h: BaseHTTPRequestHandler, path: str) -> None:
    h.wfile.write(b"HTTP/1.1 200 OK\r\n")
    h.wfile.flush()
    for byte in b"X-Slow: " + b"y" * 100_000:
        if ctx.stopping.wait(ctx.drip_gap):
            return
        h.wfile.write(bytes([byte]))
        h.wfile.flush()

def _length_lie_long(ctx: FaultContext, h: BaseHTTPRequestHandler, path: str) -> None:
    _head(ctx, h, 200, {"Content-Length": "100000"})
    h.wfile.write(b"0123456789")

def _length_huge(ctx: FaultContext, h: BaseHTTPRequestHandler, path: str) -> None:
    _head(ctx, h, 200, {"Content-Length": str(10 << 30)})
    h.wfile.write(b"\0" * 1024)
    ctx.stopping.wait(30.0)

def _length_lie_short(ctx: FaultContext, h: BaseHTTPRequestHandler, path: str) -> None:
    _head(ctx, h, 200, {"Content-Length": "5"})
    h.wfile.write(b"y" * 1000)

def _truncated_gzip(ctx: FaultContext, h: BaseHTTPRequestHandler, path: str) -> None:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    whole = c.compress(json.dumps({"entries": list(range(50_000))}).encode()) + c.flush()
    cut = whole[: len(whole) // 2]
    _head(ctx, h, 200, {"Content-Encoding": "gzip", "Content-Length": str(len(cut))})
    h.wfile.write(cut)

def _redirect_loop(ctx: FaultContext, h: BaseHTTPRequestHandler, path: str) -> None:
    _head(ctx, h, 302, {"Location": path, "Content-Length": "0"})

def _redirect_file(ctx: FaultContext, h: BaseHTTPRequestHandler, path: str) -> None:
    _head(ctx, h, 302, {"Location": "file:///etc/passwd", "Content-Length": "0"})

def _big_json(ctx: FaultContext, h: BaseHTTPRequestHandler, path: str) -> None:
    row = b'{"id": 1234567, "name_value": "' + b"a" * 200 + b'"},'
    n = (50 << 20) // len(row)
    _head(ctx, h, 200, {"Content-Length": str(1 + n * len(row) + 2)})
    h.wfile.write(b"[")
    for _ in range(n // 1000):
        h.wfile.write(row * 1000)
    h.wfile.write(row * (n % 1000))
    h.wfile.write(b"1]")

def _deep_json(ctx: FaultContext, h: BaseHTTPRequestHandler, path: str) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    _head(ctx, h, 200, {"Content-Length": str(len(body))})
    h.wfile.write(body)



def wait_for(predicate, timeout: float = 5.0) -> bool:  # noqa: ANN001
    """Poll predicate until it holds or timeout passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
