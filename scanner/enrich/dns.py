"""`--registration dns`: DNS as the only registration signal, when the user asks for nothing else (dnspython, asyncio).

The registrable domain is asked of its TLD's authoritative servers: NXDOMAIN = not delegated,
taken as unregistered (the user chose DNS alone; a name on clientHold looks the same); NOERROR
(answer, referral or NODATA) = registered; SERVFAIL, REFUSED and timeouts are retried, then unknown.
`--registration auto` uses enrich/delegation.py instead, where NXDOMAIN only hands the name to RDAP.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver

from scanner.core.config import Config
from scanner.core.net import Gate, GaveUp, RetryableError, parse_host_port, with_retries
from scanner.core.records import Registration, RegistrationStatus
from scanner.enrich.lookups import NO_CONNECTION, utc_now

METHOD = "dns"
PORT = 53
MAX_SERVERS = 4  # addresses kept per zone: enough to ride out one dead server


@dataclass
class DnsClient:
    """Asks DNS whether registrable domains are delegated."""

    config: Config
    gate: Gate | None = None  # shared with the other registry clients: total lookups in flight
    backoff_base: float = 0.5
    resolver_address: str | None = (
        None  # ADDR[:PORT] of the resolver that finds TLD servers (None = system's)
    )
    authority_port: int = PORT  # port the TLD servers are asked on
    _zones: dict[str, asyncio.Future[list[tuple[str, int]]]] = field(
        default_factory=dict, init=False, repr=False
    )
    _resolver: dns.asyncresolver.Resolver | None = field(default=None, init=False, repr=False)

    def _get_resolver(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:
            if self.config.dns_server or self.resolver_address:
                addr, port = parse_host_port(self.config.dns_server or self.resolver_address or "", PORT)
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [addr]
                resolver.port = port
            else:
                resolver = dns.asyncresolver.Resolver()
            resolver.lifetime = self.config.timeout or None
            self._resolver = resolver
        return self._resolver

    async def servers_for(self, domain: str) -> list[tuple[str, int]]:
        """(address, port) of the servers to ask about this domain (raises RetryableError)."""
        if self.config.dns_server:
            return [parse_host_port(self.config.dns_server, PORT)]
        zone = domain.lower().strip(".").split(".", 1)[-1]
        future = self._zones.get(zone)
        if future is None or (future.done() and future.exception() is not None):
            future = asyncio.get_running_loop().create_future()
            self._zones[zone] = future
            try:
                future.set_result(await self._zone_servers(zone))
            except Exception as exc:  # shared with every waiter, then retried by the next caller
                future.set_exception(exc)
                future.exception()  # mark retrieved so asyncio does not log it
                raise
        return await asyncio.shield(future)

    async def _zone_servers(self, zone: str) -> list[tuple[str, int]]:
        try:
            resolver = self._get_resolver()
        except dns.resolver.NoResolverConfiguration as exc:
            raise RetryableError(f"{NO_CONNECTION}: no DNS resolver configured ({exc})") from exc
        candidates = [zone]
        if "." in zone:
            candidates.append(zone.rsplit(".", 1)[-1])
        last_error: Exception | None = None
        for name in candidates:
            try:
                ns = await resolver.resolve(name + ".", "NS")
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer) as exc:
                last_error = exc  # e.g. a multi-label suffix that is not a zone of its own
                continue
            except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
                raise RetryableError(f"{NO_CONNECTION}: could not resolve the NS of {name}: {exc}") from exc
            addresses: list[tuple[str, int]] = []
            hosts = [str(r.target) for r in ns]
            random.shuffle(hosts)
            for host in hosts[:MAX_SERVERS]:
                try:
                    for rdata in await resolver.resolve(host, "A"):
                        addresses.append((rdata.address, self.authority_port))
                except dns.exception.DNSException:
                    continue
            if addresses:
                return addresses[:MAX_SERVERS]
            last_error = RuntimeError(f"no address for the name servers of {name}")
        raise RetryableError(f"could not find the authoritative servers of {zone}: {last_error}")

    async def _ask(self, domain: str, server: tuple[str, int]) -> tuple[RegistrationStatus, str]:
        addr, port = server
        query = dns.message.make_query(domain + ".", dns.rdatatype.SOA)
        if not self.config.dns_server:
            query.flags &= ~dns.flags.RD  # authoritative servers: ask for the delegation, not recursion
        try:
            if self.gate is not None:
                async with self.gate:
                    response, _ = await dns.asyncquery.udp_with_fallback(
                        query, addr, timeout=self.config.timeout or None, port=port
                    )
            else:
                response, _ = await dns.asyncquery.udp_with_fallback(
                    query, addr, timeout=self.config.timeout or None, port=port
                )
        except dns.exception.Timeout:
            raise RetryableError(f"DNS {addr}:{port}: no answer within {self.config.timeout:g}s") from None
        except ConnectionRefusedError as exc:
            raise RetryableError(f"{NO_CONNECTION}: DNS {addr}:{port}: {exc}") from exc
        except (OSError, dns.exception.DNSException) as exc:
            raise RetryableError(f"DNS {addr}:{port}: {type(exc).__name__}: {exc}") from exc
        rcode = response.rcode()
        if rcode == dns.rcode.NXDOMAIN:
            return (
                RegistrationStatus.UNREGISTERED,
                f"NXDOMAIN from {addr}:{port} (not delegated; a registered domain on hold looks the same)",
            )
        if rcode == dns.rcode.NOERROR:
            kind = "answer" if response.answer else ("referral" if response.authority else "NODATA")
            return RegistrationStatus.REGISTERED, f"NOERROR ({kind}) from {addr}:{port}"
        raise RetryableError(f"DNS {addr}:{port} answered {dns.rcode.to_text(rcode)}")

    async def lookup(self, domain: str) -> Registration:
        """The delegation status of one registrable domain (never raises for network trouble)."""
        server_text = self.config.dns_server or ""

        async def ask(attempt: int) -> tuple[RegistrationStatus, str]:
            nonlocal server_text
            servers = await self.servers_for(domain)
            # Each retry goes to the next server: one dead server should not decide.
            server = servers[(attempt - 1) % len(servers)]
            server_text = f"{server[0]}:{server[1]}"
            return await self._ask(domain, server)

        try:
            (status, detail), attempts = await with_retries(ask, self.config.retries, self.backoff_base)
        except GaveUp as exc:
            status, detail, attempts = RegistrationStatus.UNKNOWN, str(exc), exc.attempts
        return Registration(
            domain, status, METHOD, server=server_text, detail=detail, checked_at=utc_now(), attempts=attempts
        )
