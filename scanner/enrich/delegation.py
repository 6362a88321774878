"""The delegation check: is a registrable domain delegated in its TLD's zone? Asked of the zone's own servers.

A name with NS records in its TLD's zone is registered (the registry put them there); the TLD's
authoritative servers say so in one UDP round trip, where an RDAP registry allows a few queries a
second. The servers are found from the root (the IANA root servers, or `--dns-root` for a local
root or a test), never through a recursive resolver, whose caches and filters can lie; every
question goes out without recursion. What comes back:

- an NS answer or a referral for the name itself: **delegated**, with the NS set as evidence;
- NXDOMAIN, or a NOERROR without NS for the name: **not delegated**, which is *not* unregistered
  (a registered name can be held out of the zone: clientHold, serverHold, no nameservers), so the
  registry (RDAP, then WHOIS) decides;
- SERVFAIL, REFUSED, a lame answer or silence, after a retry on another server: **unknown**, and
  the registry decides too.

`--dns-server` keeps its meaning (every DNS question of the tool goes to that one server): the
name's NS question is then asked of it, with recursion, and the TLD walk is skipped.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import dns.asyncquery
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from scanner.core.config import Config
from scanner.core.net import Gate, GaveUp, RetryableError, parse_host_port, with_retries
from scanner.core.records import Registration, RegistrationStatus
from scanner.enrich.lookups import NO_CONNECTION, utc_now

METHOD = "delegation"
PORT = 53
#: The IANA root servers' IPv4 addresses (root hints, https://www.internic.net/domain/named.root).
ROOT_SERVERS = (
    "198.41.0.4", "170.247.170.2", "192.33.4.12", "199.7.91.13", "192.203.230.10", "192.5.5.241",
    "192.112.36.4", "198.97.190.53", "192.36.148.17", "192.58.128.30", "193.0.14.129", "199.7.83.42",
    "202.12.27.33",
)
MAX_SERVERS = 6  # addresses kept per zone: enough to ride out dead servers
MAX_REFERRALS = 4  # zone cuts followed below the TLD (co.uk-like suffixes that are zones of their own)
MAX_RETRIES = 2  # a name the check cannot settle goes to the registry anyway: no long retrying here
MAX_TIMEOUT = 5.0  # seconds per UDP question (a TLD server answers in milliseconds or not at all)
RETRY_ZONE_AFTER = 300.0  # seconds a TLD whose servers the root did not give stays failed (names go to RDAP)
ROOT_GIVE_UP = 3  # TLDs for which no root server answered, with none answering ever: DNS is blocked here
EDNS_PAYLOAD = 1232  # bytes: the DNS flag day 2020 size, so a referral with many NS fits one datagram

DELEGATED, NOT_DELEGATED, UNSETTLED = "delegated", "not delegated", "unknown"


class Delegation(NamedTuple):
    """What the zone's servers said about one name: state, NS set, the server asked and the evidence."""

    domain: str
    state: str  # DELEGATED / NOT_DELEGATED / UNSETTLED
    nameservers: tuple[str, ...] = ()
    server: str = ""
    detail: str = ""
    attempts: int = 0

    def as_registration(self) -> Registration:
        """Delegated = registered; anything else is unknown here (the registry decides, never this check)."""
        status = RegistrationStatus.REGISTERED if self.state == DELEGATED else RegistrationStatus.UNKNOWN
        return Registration(self.domain, status, METHOD, self.server, self.detail, utc_now(), None, self.attempts)


class _Servers(NamedTuple):
    zone: str
    addresses: tuple[tuple[str, int], ...]  # (address, port)
    hosts: tuple[str, ...]


class _Datagrams(asyncio.DatagramProtocol):
    """One UDP socket for every question: answers matched on (server, id, question)."""

    def __init__(self) -> None:
        self.waiting: dict[tuple[str, int, int], tuple[dns.message.Message, asyncio.Future[bytes]]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if len(data) < 12:
            return
        key = (str(addr[0]), int(addr[1]), int.from_bytes(data[:2], "big"))
        entry = self.waiting.get(key)
        if entry is not None and not entry[1].done():
            entry[1].set_result(data)  # the question is checked by whoever waits (from_wire + is_response)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable on a connected path: ignore
        pass


@dataclass
class DelegationClient:
    """Asks the TLD's authoritative servers whether names are delegated; one UDP socket, servers found once."""

    config: Config
    gate: Gate | None = None  # shared with the other registry clients: total lookups in flight
    backoff_base: float = 0.5
    _zones: dict[str, asyncio.Future[_Servers]] = field(default_factory=dict, init=False, repr=False)
    _proto: _Datagrams | None = field(default=None, init=False, repr=False)
    _failed_at: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _root_failures: int = field(default=0, init=False, repr=False)
    _root_answered: bool = field(default=False, init=False, repr=False)

    @property
    def timeout(self) -> float:
        """Seconds to wait for one UDP answer."""
        return min(self.config.timeout or MAX_TIMEOUT, MAX_TIMEOUT)

    def _roots(self) -> _Servers:
        if self.config.dns_root:
            addr, port = parse_host_port(self.config.dns_root, PORT)
            return _Servers("", ((addr, port),), (self.config.dns_root,))
        addresses = list(ROOT_SERVERS)
        random.shuffle(addresses)
        return _Servers("", tuple((a, PORT) for a in addresses), ("root",))

    def _port(self) -> int:
        # With --dns-root every server of the walk is asked on its port: a local root (RFC 8806) or a
        # test server plays root and TLDs on one address.
        return parse_host_port(self.config.dns_root, PORT)[1] if self.config.dns_root else PORT

    async def close(self) -> None:
        """Close the UDP socket."""
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None

    # --- one question -------------------------------------------------------------------

    async def _socket(self) -> _Datagrams:
        if self._proto is None or self._proto.transport is None or self._proto.transport.is_closing():
            loop = asyncio.get_running_loop()
            family_host = "0.0.0.0"
            _, proto = await loop.create_datagram_endpoint(_Datagrams, local_addr=(family_host, 0))
            self._proto = proto
        return self._proto

    async def ask(self, qname: str, qtype: int, server: tuple[str, int], *, recursion: bool = False
                  ) -> dns.message.Message:
        """One question to one server (raises RetryableError for silence, a refused port or garbage)."""
        gate = self.gate
        if gate is not None and not gate.try_enter():
            await gate.enter()
        try:
            return await self._ask(qname, qtype, server, recursion)
        finally:
            if gate is not None:
                gate.leave()

    async def _ask(self, qname: str, qtype: int, server: tuple[str, int], recursion: bool) -> dns.message.Message:
        addr, port = server
        query = dns.message.make_query(qname, qtype, use_edns=0, payload=EDNS_PAYLOAD)
        if not recursion:
            query.flags &= ~dns.flags.RD
        if ":" in addr:  # IPv6 servers: dnspython's own socket (the shared one is IPv4)
            return await self._ask_dnspython(query, server)
        proto = await self._socket()
        key = (addr, port, 0)
        for _ in range(8):  # an id nobody else waits on, for this server
            query.id = secrets.randbelow(65536)
            key = (addr, port, query.id)
            if key not in proto.waiting:
                break
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        proto.waiting[key] = (query, future)
        try:
            assert proto.transport is not None
            try:
                proto.transport.sendto(query.to_wire(), (addr, port))
            except OSError as exc:
                raise RetryableError(f"{NO_CONNECTION}: DNS {addr}:{port}: {exc}") from exc
            deadline = asyncio.get_running_loop().time() + self.timeout
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                try:
                    wire = await asyncio.wait_for(asyncio.shield(future), max(remaining, 0.001))
                except asyncio.TimeoutError:
                    raise RetryableError(f"DNS {addr}:{port}: no answer within {self.timeout:g}s") from None
                try:
                    response = dns.message.from_wire(wire)
                    if query.is_response(response):
                        break
                except dns.exception.DNSException:
                    pass
                # not an answer to this question (a stray or forged datagram): keep waiting
                future = asyncio.get_running_loop().create_future()
                proto.waiting[key] = (query, future)
        finally:
            if proto.waiting.get(key, (None, None))[1] is future:
                del proto.waiting[key]
        if response.flags & dns.flags.TC:
            response = await self._ask_tcp(query, server)
        return response

    async def _ask_dnspython(self, query: dns.message.Message, server: tuple[str, int]) -> dns.message.Message:
        addr, port = server
        try:
            response, _ = await dns.asyncquery.udp_with_fallback(query, addr, timeout=self.timeout, port=port)
        except dns.exception.Timeout:
            raise RetryableError(f"DNS {addr}:{port}: no answer within {self.timeout:g}s") from None
        except (OSError, dns.exception.DNSException) as exc:
            raise RetryableError(f"DNS {addr}:{port}: {type(exc).__name__}: {exc}") from exc
        return response

    async def _ask_tcp(self, query: dns.message.Message, server: tuple[str, int]) -> dns.message.Message:
        addr, port = server
        try:
            return await dns.asyncquery.tcp(query, addr, timeout=self.timeout, port=port)
        except dns.exception.Timeout:
            raise RetryableError(f"DNS {addr}:{port} (TCP): no answer within {self.timeout:g}s") from None
        except (OSError, dns.exception.DNSException) as exc:
            raise RetryableError(f"DNS {addr}:{port} (TCP): {type(exc).__name__}: {exc}") from exc

    # --- the zone's servers -------------------------------------------------------------

    async def zone_servers(self, zone: str) -> _Servers:
        """The authoritative servers of a TLD, from the root (found once, shared by every waiter)."""
        future = self._zones.get(zone)
        now = time.monotonic()
        if self._root_failures >= ROOT_GIVE_UP and not self._root_answered:
            # no root server has answered for several TLDs: DNS is blocked here, every name goes to the registry
            raise GaveUp(RetryableError(f"{NO_CONNECTION}: no root server answered for {self._root_failures} "
                                        "TLDs; the delegation check is skipped"), 0)
        failed_at = self._failed_at.get(zone)
        if future is None or (future.done() and future.exception() is not None
                              and (failed_at is None or now - failed_at > RETRY_ZONE_AFTER)):
            future = asyncio.get_running_loop().create_future()
            self._zones[zone] = future
            try:
                found = await with_retries(lambda a: self._referral(zone, self._roots(), a), MAX_RETRIES,
                                           self.backoff_base)
                future.set_result(found[0])
                self._root_answered = True
            except Exception as exc:  # shared with every waiter (and the names after them for a while)
                self._failed_at[zone] = time.monotonic()
                self._root_failures += 1
                future.set_exception(exc)
                future.exception()  # mark retrieved so asyncio does not log it
                raise
        return await asyncio.shield(future)

    async def _referral(self, zone: str, parent: _Servers, attempt: int) -> _Servers:
        server = parent.addresses[(attempt - 1) % len(parent.addresses)]
        response = await self.ask(zone + ".", dns.rdatatype.NS, server)
        rcode = response.rcode()
        where = f"{server[0]}:{server[1]}"
        if rcode == dns.rcode.NXDOMAIN:
            return _Servers(zone, (), (where,))  # no such TLD: nothing under it is delegated
        if rcode != dns.rcode.NOERROR:
            raise RetryableError(f"the root server {where} answered {dns.rcode.to_text(rcode)} for {zone}")
        found = _cut(response, dns.name.from_text(zone + "."), self._port())
        if found is None or not found.addresses:
            raise RetryableError(f"the root server {where} gave no usable servers for {zone}")
        return found

    # --- the check ----------------------------------------------------------------------

    async def lookup(self, domain: str) -> Delegation:
        """Whether one registrable domain is delegated (never raises for network trouble)."""
        name = domain.lower().strip(".")
        server_text = ""

        async def check(attempt: int) -> Delegation:
            nonlocal server_text
            if self.config.dns_server:
                server = parse_host_port(self.config.dns_server, PORT)
                server_text = self.config.dns_server
                return self._judge(name, await self.ask(name + ".", dns.rdatatype.NS, server, recursion=True),
                                   server, _Servers("", (server,), (self.config.dns_server,)), fixed=True)
            tld = name.rsplit(".", 1)[-1]
            try:
                servers = await self.zone_servers(tld)
            except GaveUp as exc:  # already retried against several root servers
                return Delegation(name, UNSETTLED, (), server_text, f"delegation check: {exc}", exc.attempts)
            if not servers.addresses:
                return Delegation(name, NOT_DELEGATED, (), servers.hosts[0] if servers.hosts else "",
                                  f"the root zone has no TLD {tld}: not delegated")
            for _hop in range(MAX_REFERRALS + 1):
                server = servers.addresses[(attempt - 1) % len(servers.addresses)]
                server_text = f"{server[0]}:{server[1]}"
                response = await self.ask(name + ".", dns.rdatatype.NS, server)
                judged = self._judge(name, response, server, servers)
                if isinstance(judged, Delegation):
                    return judged
                servers = judged  # a zone cut between the TLD and the name: ask that zone's servers
            raise RetryableError(f"more than {MAX_REFERRALS} zone cuts above {name}")

        try:
            found, attempts = await with_retries(check, MAX_RETRIES, self.backoff_base)
        except GaveUp as exc:
            return Delegation(name, UNSETTLED, (), server_text, f"delegation check: {exc}", exc.attempts)
        return found._replace(attempts=attempts)

    def _judge(self, name: str, response: dns.message.Message, server: tuple[str, int], servers: _Servers,
               *, fixed: bool = False) -> Delegation | _Servers:
        where = f"{server[0]}:{server[1]}"
        asked = f"{where} ({servers.zone or 'root'} zone)" if servers.zone else where
        rcode = response.rcode()
        qname = dns.name.from_text(name + ".")
        if rcode == dns.rcode.NXDOMAIN:
            return Delegation(name, NOT_DELEGATED, (), where,
                              f"NXDOMAIN from {asked}: not delegated (a registered name on hold looks the same)")
        if rcode != dns.rcode.NOERROR:
            raise RetryableError(f"DNS {where} answered {dns.rcode.to_text(rcode)}")
        for rrset in response.answer:
            if rrset.name == qname and rrset.rdtype in (dns.rdatatype.NS, dns.rdatatype.SOA):
                hosts = _hosts(rrset) if rrset.rdtype == dns.rdatatype.NS else ()
                return Delegation(name, DELEGATED, hosts, where, _evidence(hosts, f"answer from {asked}"))
        if not fixed:
            cut = _cut(response, qname, self._port())
            if cut is not None:
                if dns.name.from_text(cut.zone + ".") == qname:
                    return Delegation(name, DELEGATED, cut.hosts, where, _evidence(cut.hosts, f"referral from {asked}"))
                below = dns.name.from_text(servers.zone + ".") if servers.zone else dns.name.root
                zone_name = dns.name.from_text(cut.zone + ".")
                if qname.is_subdomain(zone_name) and zone_name.is_subdomain(below) and zone_name != below:
                    if not cut.addresses:
                        raise RetryableError(f"DNS {where} referred {name} to {cut.zone} without addresses")
                    return cut
                raise RetryableError(f"DNS {where} gave a lame referral for {name} (to {cut.zone or 'the root'})")
        if any(r.rdtype == dns.rdatatype.SOA for r in response.authority) or not response.answer:
            return Delegation(name, NOT_DELEGATED, (), where,
                              f"NOERROR without NS records from {asked}: not delegated")
        raise RetryableError(f"DNS {where} answered neither NS nor NXDOMAIN for {name}")


def _hosts(rrset) -> tuple[str, ...]:  # noqa: ANN001
    return tuple(sorted(str(r.target).rstrip(".").lower() for r in rrset))


def _evidence(hosts: tuple[str, ...], how: str) -> str:
    shown = ", ".join(hosts[:8]) + (f" and {len(hosts) - 8} more" if len(hosts) > 8 else "")
    return f"delegated: NS {shown} ({how})" if hosts else f"delegated ({how})"


def _cut(response: dns.message.Message, below: dns.name.Name, port: int) -> _Servers | None:
    """The zone cut a referral describes: its owner, its NS hosts and their glue addresses."""
    for rrset in response.authority:
        if rrset.rdtype != dns.rdatatype.NS or not below.is_subdomain(rrset.name):
            continue
        hosts = _hosts(rrset)
        glue: list[tuple[str, int]] = []
        for extra in response.additional:
            if extra.rdtype == dns.rdatatype.A and str(extra.name).rstrip(".").lower() in hosts:
                glue.extend((r.address, port) for r in extra)
        random.shuffle(glue)
        return _Servers(str(rrset.name).rstrip(".").lower(), tuple(glue[:MAX_SERVERS]), hosts)
    return None
