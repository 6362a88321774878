"""Real registry servers on loopback for tests and benchmarks: RDAP (HTTP), WHOIS (TCP 43) and DNS (UDP).

Each replays real recorded answers (tests/fixtures/rdap, whois) or misbehaves on purpose
(429 with Retry-After, 503 then success, slow answers, HTML, silence) for chosen names, and
records every question it gets so a test can tell whether the network was touched.
"""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from dnslib import QTYPE, RCODE, RR, SOA, DNSError, DNSRecord

from . import ServedInThread, UdpServedInThread

REAL = Path(__file__).resolve().parents[1] / "fixtures"
RDAP_DIR = REAL / "rdap"
WHOIS_DIR = REAL / "whois"

# --- RDAP ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One canned HTTP answer: status, body, headers, and an optional delay before it."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/rdap+json"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0


def rdap_file(name: str, content_type: str = "application/rdap+json") -> Reply:
    """A 200 answer replaying one real RDAP body from tests/fixtures/rdap."""
    return Reply(200, (RDAP_DIR / name).read_bytes(), content_type)


NOT_FOUND_EMPTY = Reply(404, b"", "application/rdap+json")  # Verisign's empty 404


def not_found_json() -> Reply:
    """CentralNic's real 404 error body."""
    return Reply(404, (RDAP_DIR / "centralnic_notfound_jsiqpmcurt.design_2021-12-17.json").read_bytes())


def too_many(retry_after: str) -> Reply:
    """429 with a Retry-After header."""
    return Reply(
        429, b'{"errorCode":429,"title":"Too Many Requests"}', headers=(("Retry-After", retry_after),)
    )


HTML_200 = Reply(200, b"<html><body><h1>Service maintenance</h1></body></html>", "text/html")
UNAVAILABLE = Reply(503, b"<html>503 Service Unavailable</html>", "text/html")


class RdapServer:
    """An aiohttp RDAP server on 127.0.0.1:<free port>, in its own thread.

    `script[name]` is the list of replies for GET .../domain/<name>: the n-th request gets the
    n-th reply, the last one repeats. Names not scripted get `default` (Verisign's empty 404).
    `prefix` serves a path prefix such as /com/v1/, like a real registry base URL.
    """

    def __init__(self, script: dict[str, Sequence[Reply]] | None = None, default: Reply = NOT_FOUND_EMPTY):
        self.script: dict[str, list[Reply]] = {k.lower(): list(v) for k, v in (script or {}).items()}
        self.default = default
        self.requests: list[tuple[float, str, str]] = []  # (monotonic time, path, Accept header)
        self._counts: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL (ends with /)."""
        return f"http://127.0.0.1:{self.port}/"

    def requests_for(self, name: str) -> list[float]:
        """Monotonic times at which this name was asked."""
        return [t for t, path, _ in self.requests if path.lower().endswith("/domain/" + name.lower())]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"].lower()
        self.requests.append((time.monotonic(), request.path, request.headers.get("Accept", "")))
        if name.startswith("redirect-to-"):
            target = name[len("redirect-to-") :]
            raise web.HTTPFound(f"/moved/domain/{target}")
        n = self._counts.get(name, 0)
        self._counts[name] = n + 1
        replies = self.script.get(name)
        reply = replies[min(n, len(replies) - 1)] if replies else self.default
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(
            status=reply.status, body=reply.body, headers=dict(reply.headers), content_type=reply.content_type
        )

    def start(self) -> RdapServer:
        """Start serving; returns self once the port is known."""
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            app = web.Application()
            app.router.add_get("/{prefix:.*}domain/{name}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = self._runner.addresses[0][1]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="rdap-loopback")
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> RdapServer:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_bootstrap(path: Path, mapping: dict[str, str]) -> Path:
    """A small IANA-layout dns.json: {tld: base URL}."""
    import json

    services = [[[tld], [url]] for tld, url in mapping.items()]
    path.write_text(json.dumps({"version": "1.0", "publication": "test", "services": services}))
    return path


# --- WHOIS --------------------------------------------------------------------------------

SILENT = b"<silent>"  # accept, read the question, never answer (a timeout)
EMPTY = b""  # answer nothing and close


class _WhoisHandler(socketserver.BaseRequestHandler):
    server: _WhoisTCPServer

    def handle(self) -> None:
        data = b""
        self.request.settimeout(5)
        try:
            while not data.endswith(b"\n"):
                chunk = self.request.recv(1024)
                if not chunk:
                    break
                data += chunk
        except OSError:
            return
        question = data.decode("utf-8", "replace").strip().lower()
        owner = self.server.owner
        owner.queries.append((time.monotonic(), question))
        n = owner._counts.get(question, 0)
        owner._counts[question] = n + 1
        answers = owner.script.get(question)
        answer = answers[min(n, len(answers) - 1)] if answers else owner.default
        if answer == SILENT:
            time.sleep(owner.silent_for)
            return
        try:
            self.request.sendall(answer)
        except OSError:
            pass


class _WhoisTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: WhoisServer


class WhoisServer(ServedInThread):
    """A port-43 style WHOIS server on 127.0.0.1:<free port>; `script[question]` lists answers in turn."""

    def __init__(self, script: dict[str, Sequence[bytes]] | None = None, default: bytes = EMPTY):
        self.script = {k.lower(): list(v) for k, v in (script or {}).items()}
        self.default = default
        self.queries: list[tuple[float, str]] = []
        self.silent_for = 3.0
        self._counts: dict[str, int] = {}
        self._served = _WhoisTCPServer(("127.0.0.1", 0), _WhoisHandler)
        self._served.owner = self
        self.port = self._served.server_address[1]

    @property
    def address(self) -> str:
        """HOST:PORT for Config.whois_server."""
        return f"127.0.0.1:{self.port}"


def whois_file(name: str) -> bytes:
    """The bytes of one real WHOIS answer from tests/fixtures/whois."""
    return (WHOIS_DIR / name).read_bytes()


# --- DNS ----------------------------------------------------------------------------------

NOERROR, NXDOMAIN, NODATA, SERVFAIL, REFUSED, DROP = (
    "NOERROR",
    "NXDOMAIN",
    "NODATA",
    "SERVFAIL",
    "REFUSED",
    "DROP",
)


@dataclass
class DnsServer(UdpServedInThread):
    """A UDP DNS server (dnslib packets) on 127.0.0.1:<free port>; `answers[name]` is the behaviour."""

    answers: dict[str, str] = field(default_factory=dict)
    #: (name, qtype) -> zone-file lines answered with NOERROR, e.g. ("com", "NS"): ["com. 300 IN NS ns1.test."]
    records: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    default: str = NXDOMAIN
    queries: list[tuple[str, str]] = field(default_factory=list)  # (qname, qtype)
    recursion_desired: dict[str, bool] = field(default_factory=dict)  # qname -> RD flag of its last query

    def __post_init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """ADDR:PORT for Config.dns_server."""
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                request = DNSRecord.parse(data)
            except DNSError:  # a test server ignores garbage, like a real one
                continue
            qname = str(request.q.qname).rstrip(".").lower()
            self.queries.append((qname, QTYPE[request.q.qtype]))
            self.recursion_desired[qname] = bool(request.header.rd)
            zone_lines = self.records.get((qname, QTYPE[request.q.qtype]))
            if zone_lines is not None:
                reply = request.reply()
                for line in zone_lines:
                    reply.add_answer(*RR.fromZone(line))
                self._sock.sendto(reply.pack(), peer)
                continue
            behaviour = self.answers.get(qname, self.default)
            if behaviour == DROP:
                continue
            reply = request.reply()
            if behaviour == NOERROR:
                reply.add_answer(
                    RR(
                        qname + ".",
                        QTYPE.SOA,
                        rdata=SOA("ns1." + qname, "hostmaster." + qname, (1, 7200, 900, 1209600, 86400)),
                        ttl=300,
                    )
                )
            elif behaviour == NODATA:
                pass
            else:
                reply.header.rcode = getattr(RCODE, behaviour)
            self._sock.sendto(reply.pack(), peer)



def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
