"""The registries as a delegation check and a polite client meet them: root and TLD DNS servers, a rate-limited RDAP.

`ZoneServer` answers on one UDP port as the root (a referral to each TLD, with glue on 127.0.0.1)
and as every TLD (a referral for a delegated name, NXDOMAIN for the rest, SERVFAIL or silence for
chosen names). Packets are built by hand, so a benchmark's 60,000 questions cost the server little;
it runs in a thread (tests) or a child process (benchmarks, `serve_zones_in_process`).

`RateLimitedRdapServer` is the loopback RdapServer with a registry's rate limit: past `rate`
requests a second (a bucket of `rate` tokens) it answers 429 with Retry-After.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing import Process, Queue
from typing import Any

from aiohttp import web

from . import UdpServedInThread
from .registry_servers import RdapServer, Reply

SERVFAIL, DROP, NXDOMAIN = "SERVFAIL", "DROP", "NXDOMAIN"
_NS, _A, _IN = 2, 1, 1


def _wire_name(name: str) -> bytes:
    out = b""
    for label in name.strip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\x00"


def _question(data: bytes) -> tuple[str, int, int] | None:
    """(qname, qtype, end offset of the question) of a query, or None for garbage."""
    pos, labels = 12, []
    try:
        while True:
            n = data[pos]
            if n == 0:
                pos += 1
                break
            if n & 0xC0:
                return None
            labels.append(data[pos + 1 : pos + 1 + n].decode("ascii").lower())
            pos += 1 + n
        qtype = struct.unpack_from(">H", data, pos)[0]
        return ".".join(labels), qtype, pos + 4
    except (IndexError, struct.error, UnicodeDecodeError):
        return None


@dataclass
class ZoneServer(UdpServedInThread):
    """Root and TLD zones on 127.0.0.1:<free port>.

    tlds: the TLDs the root delegates (each to ns1.<tld>-servers.test, glue 127.0.0.1).
    delegated: name -> its NS hosts (a referral from the TLD). behaviour: name -> SERVFAIL / DROP.
    Every other name under a served TLD is NXDOMAIN; a TLD not in tlds is NXDOMAIN at the root.
    """

    tlds: Sequence[str] = ("com",)
    delegated: Mapping[str, Sequence[str]] = field(default_factory=dict)
    behaviour: Mapping[str, str] = field(default_factory=dict)
    record: bool = True
    queries: list[tuple[str, str, bool]] = field(default_factory=list)  # (qname, "root" or the TLD, RD flag)

    def __post_init__(self) -> None:
        self.delegated = {k.lower(): tuple(v) for k, v in self.delegated.items()}
        self.behaviour = {k.lower(): v for k, v in self.behaviour.items()}
        self._tlds = {t.lower().strip(".") for t in self.tlds}
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """ADDR:PORT for Config.dns_root."""
        return f"127.0.0.1:{self.port}"

    def asked(self, name: str) -> list[tuple[str, bool]]:
        """(zone asked, recursion desired) of each question about this name."""
        return [(zone, rd) for q, zone, rd in self.queries if q == name.lower()]

    def answer(self, data: bytes) -> bytes | None:
        """The reply to one query packet (None: stay silent)."""
        q = _question(data)
        if q is None:
            return None
        qname, _qtype, end = q
        rd = data[2] & 0x01
        labels = qname.split(".") if qname else []
        zone = "root" if len(labels) <= 1 else labels[-1]
        if self.record:
            self.queries.append((qname, zone, bool(rd)))
        behaviour = self.behaviour.get(qname)
        if behaviour == DROP:
            return None
        question = data[12:end]
        if behaviour == SERVFAIL:
            return self._header(data, rd, 2, 0, False) + question
        if len(labels) == 1:  # the root's referral to a TLD
            if qname not in self._tlds:
                return self._header(data, rd, 3, 0, True) + question
            return self._referral(data, rd, question, [f"ns1.{qname}-servers.test", f"ns2.{qname}-servers.test"])
        if labels[-1] not in self._tlds:
            return self._header(data, rd, 5, 0, False) + question  # REFUSED: not a zone served here
        hosts = self.delegated.get(qname)
        if hosts is None:
            return self._header(data, rd, 3, 0, True) + question  # NXDOMAIN, authoritative
        return self._referral(data, rd, question, list(hosts), glue=False)

    @staticmethod
    def _header(data: bytes, rd: int, rcode: int, nscount: int, aa: bool, arcount: int = 0) -> bytes:
        flags1 = 0x80 | (0x04 if aa else 0) | rd
        return data[:2] + bytes([flags1, rcode]) + struct.pack(">HHHH", 1, 0, nscount, arcount)

    def _referral(self, data: bytes, rd: int, question: bytes, hosts: list[str], glue: bool = True) -> bytes:
        authority = b""
        for host in hosts:
            rdata = _wire_name(host)
            authority += b"\xc0\x0c" + struct.pack(">HHIH", _NS, _IN, 172800, len(rdata)) + rdata
        additional = b""
        if glue:
            for host in hosts:
                additional += _wire_name(host) + struct.pack(">HHIH", _A, _IN, 172800, 4) + bytes([127, 0, 0, 1])
        head = self._header(data, rd, 0, len(hosts), False, len(hosts) if glue else 0)
        return head + question + authority + additional

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self.answer(data)
            if reply is not None:
                try:
                    self._sock.sendto(reply, peer)
                except OSError:
                    pass



def _zones_child(kwargs: dict[str, Any], ports: Queue) -> None:
    server = ZoneServer(**kwargs, record=False)
    ports.put(server.port)
    server._serve()


def serve_zones_in_process(**kwargs: Any) -> tuple[Process, int]:
    """A ZoneServer in a child process (so a benchmark's client has a core of its own) -> (process, port)."""
    ports: Queue = Queue()
    proc = Process(target=_zones_child, args=(kwargs, ports), daemon=True)
    proc.start()
    return proc, ports.get(timeout=30)


class RateLimitedRdapServer(RdapServer):
    """RdapServer that allows `rate` requests a second (a bucket of that many tokens), then 429 + Retry-After."""

    def __init__(self, script: dict[str, Sequence[Reply]] | None = None, default: Reply | None = None, *,
                 rate: float = 5.0, retry_after: int = 1):
        super().__init__(script, default) if default is not None else super().__init__(script)
        self.rate, self.retry_after = rate, retry_after
        self._tokens, self._last = rate, time.monotonic()
        self.refused = 0

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            self.refused += 1
            self.requests.append((now, request.path, "429"))
            return web.Response(status=429, body=b'{"errorCode":429,"title":"Too Many Requests"}',
                                headers={"Retry-After": str(self.retry_after)},
                                content_type="application/rdap+json")
        self._tokens -= 1
        return await super()._handle(request)


def _rdap_child(held: list[str], rate: float, retry_after: int, ports: Queue) -> None:
    import asyncio
    import json

    from .registry_servers import RDAP_DIR

    doc = json.loads((RDAP_DIR / "verisign_google.com_2021-12-17.json").read_bytes())
    doc["status"], doc["nameservers"] = ["client hold"], []
    body = json.dumps(doc).encode()
    registered = set(held)
    state = {"tokens": rate, "last": time.monotonic()}

    async def handle(request: web.Request) -> web.Response:
        now = time.monotonic()
        state["tokens"] = min(rate, state["tokens"] + (now - state["last"]) * rate)
        state["last"] = now
        if rate and state["tokens"] < 1:
            return web.Response(status=429, body=b'{"errorCode":429}', headers={"Retry-After": str(retry_after)},
                                content_type="application/rdap+json")
        state["tokens"] -= 1
        if request.match_info["name"].lower() in registered:
            return web.Response(body=body, content_type="application/rdap+json")
        return web.Response(status=404, content_type="application/rdap+json")

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{prefix:.*}domain/{name}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        ports.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


def serve_rdap_in_process(held: Sequence[str], *, rate: float = 5.0, retry_after: int = 1) -> tuple[Process, int]:
    """A rate-limited RDAP registry in a child process: 200 for the held names, 404 else -> (process, port)."""
    ports: Queue = Queue()
    proc = Process(target=_rdap_child, args=(list(held), rate, retry_after, ports), daemon=True)
    proc.start()
    return proc, ports.get(timeout=30)
