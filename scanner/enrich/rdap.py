"""RDAP domain lookups (RFC 7480-7484): IANA bootstrap, one aiohttp session, tri-state answers.

200 with a domain object = registered; 404 with an RDAP error body or an empty one (as Verisign
sends) = unregistered, while a 404 web page (a wrong base URL) is unknown; everything else (429,
5xx, timeouts, HTML, garbage) is retried, then unknown.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from scanner.core.bounded import LIMITS, BoundExceeded, load_json, read_aiohttp
from scanner.core.config import Config
from scanner.core.net import (
    MAX_RETRY_AFTER,
    RETRYABLE_STATUSES,
    USER_AGENT,
    Gate,
    GaveUp,
    HostRateLimits,
    RateLimiter,
    RetryableError,
    parse_retry_after,
    with_retries,
)
from scanner.core.records import Registration, RegistrationStatus
from scanner.enrich.lookups import NO_CONNECTION, parse_date, utc_now
from scanner.enrich.rdap_rates import Politeness, politeness_for

_BOUND = LIMITS["rdap"]  # an RDAP answer is a few KB; a registry sending more is misbehaving

try:  # orjson parses RDAP bodies about twice as fast; the standard library does the same job without it
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads = json.loads


def json_loads(body: bytes | str) -> Any:
    """Parse JSON (orjson when installed); raises ValueError only when the standard library would too."""
    try:
        return _fast_loads(body)
    except ValueError:
        # orjson is stricter (integers beyond 64 bits, NaN) and refuses nesting past 1,024: let the
        # standard parser decide, bounded (a 100,000-deep answer is a ValueError, not RecursionError).
        return load_json(body, what="RDAP answer")


METHOD = "rdap"
ACCEPT = "application/rdap+json, application/json"


@dataclass(frozen=True)
class RdapBootstrap:
    """The IANA RDAP DNS bootstrap: TLD -> base URLs, matched on the longest suffix."""

    services: dict[str, tuple[str, ...]]
    publication: str = ""
    source: str = ""
    _memo: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, path: Path | str | None = None) -> RdapBootstrap:
        """Read a dns.json file (None = the bundled IANA snapshot)."""
        if path is None:
            text = resources.files("scanner").joinpath("data/iana_rdap_dns.json").read_text("utf-8")
            source = "bundled IANA dns.json"
        else:
            text = Path(path).read_text("utf-8")
            source = str(path)
        try:
            data = json.loads(text)
            services: dict[str, tuple[str, ...]] = {}
            for tlds, urls in ((entry[0], entry[1]) for entry in data["services"]):
                # RFC 7484: prefer https when a service lists several base URLs.
                ordered = tuple(sorted(urls, key=lambda u: not u.lower().startswith("https:")))
                for tld in tlds:
                    services[tld.lower().strip(".")] = ordered
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ValueError(
                f"{source} is not an RDAP bootstrap file (expected IANA dns.json layout): {exc}"
            ) from exc
        return cls(services, str(data.get("publication", "")), source)

    def base_urls(self, domain: str) -> tuple[str, ...]:
        """Base URLs of the RDAP service for this domain's TLD (empty when it has none)."""
        parent = domain.lower().strip(".").partition(".")[2]
        found = self._memo.get(parent)
        if found is None:
            found = ()
            labels = parent.split(".") if parent else []
            for i in range(len(labels)):
                urls = self.services.get(".".join(labels[i:]))
                if urls:
                    found = urls
                    break
            if len(self._memo) < 100_000:
                self._memo[parent] = found
        return found

    def covers(self, domain: str) -> bool:
        """True when the TLD of this domain has an RDAP service."""
        return bool(self.base_urls(domain))


def domain_url(base: str, domain: str) -> str:
    """The RDAP domain query URL for this base URL."""
    return (base if base.endswith("/") else base + "/") + "domain/" + domain


_LDH_NAME = re.compile(r"[a-z0-9][a-z0-9.-]*\Z")


@lru_cache(maxsize=1024)
def _parsed_base(base: str) -> URL | None:
    url = URL(base)
    return url if url.is_absolute() and not url.raw_query_string and not url.raw_fragment else None


def request_url(base: str, domain: str) -> URL | str:
    """The query URL as the HTTP session takes it: prebuilt, so it is not parsed again per request."""
    parsed = _parsed_base(base)
    if parsed is None or not _LDH_NAME.match(domain):  # anything unusual: let yarl quote it
        return domain_url(base, domain)
    path = parsed.raw_path
    # Building on a parsed base with an already-encoded path skips yarl's parse and quoting of the
    # whole URL, a few microseconds of each lookup of a large scan.
    return parsed.with_path((path if path.endswith("/") else path + "/") + "domain/" + domain, encoded=True)


@lru_cache(maxsize=4096)
def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _short(body: bytes, limit: int = 80) -> str:
    text = body[:limit].decode("utf-8", "replace").replace("\n", " ").replace("\r", " ").strip()
    return repr(text) if text else "empty body"


def _registration_date(doc: dict[str, Any]) -> datetime | None:
    for event in doc.get("events") or ():
        if isinstance(event, dict) and str(event.get("eventAction", "")).lower() == "registration":
            return parse_date(event.get("eventDate"))
    return None


class _Answer(NamedTuple):
    status: RegistrationStatus
    detail: str
    registered_at: datetime | None = None
    server: str = ""


@dataclass
class RdapClient:
    """Asks RDAP registries about domains; one session, a rate limit per registry server."""

    config: Config
    bootstrap: RdapBootstrap | None = None
    limits: HostRateLimits | None = None
    gate: Gate | None = None  # shared with the other registry clients: total lookups in flight
    backoff_base: float = 0.5
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)
    _paused_until: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _limiters: dict[str, RateLimiter] = field(default_factory=dict, init=False, repr=False)
    #: origin -> the rate it is asked at and why (rdap_rates table, or --rdap-rate)
    politeness: dict[str, Politeness] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.bootstrap is None:
            self.bootstrap = RdapBootstrap.load(self.config.rdap_bootstrap)

    def covers(self, domain: str) -> bool:
        """True when this domain's TLD has an RDAP service."""
        assert self.bootstrap is not None
        return self.bootstrap.covers(domain)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.config.lookup_concurrency, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout or None),
                headers={"User-Agent": USER_AGENT, "Accept": ACCEPT},
            )
        return self._session

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def lookup(self, domain: str) -> Registration:
        """The registration status of one registrable domain (never raises for network trouble)."""
        assert self.bootstrap is not None
        bases = self.bootstrap.base_urls(domain)
        if not bases:
            return Registration(
                domain,
                RegistrationStatus.UNKNOWN,
                METHOD,
                detail="no RDAP service for this TLD in the IANA bootstrap; use WHOIS or DNS",
                checked_at=utc_now(),
            )
        url = domain_url(bases[0], domain)
        target = request_url(bases[0], domain)
        origin = _origin(bases[0])
        if origin not in self._limiters:
            self._limiter(origin, bases[0])
        try:
            answer, attempts = await with_retries(
                lambda _: self._ask(url, origin, target), self.config.retries, self.backoff_base
            )
        except GaveUp as exc:
            answer, attempts = _Answer(RegistrationStatus.UNKNOWN, str(exc), server=url), exc.attempts
        return Registration(
            domain,
            answer.status,
            METHOD,
            server=answer.server or url,
            detail=answer.detail,
            checked_at=utc_now(),
            registered_at=answer.registered_at,
            attempts=attempts,
        )

    def _limiter(self, origin: str, base: str | None = None) -> RateLimiter:
        limiter = self._limiters.get(origin)
        if limiter is None:
            if self.limits is not None:
                limiter = self.limits.for_host(origin)
                self.politeness[origin] = Politeness(self.limits.rate, "given limits")
            else:
                rate = politeness_for(base or origin + "/", self.config.rdap_rate)
                self.politeness[origin] = rate
                limiter = RateLimiter(rate.rate)
            self._limiters[origin] = limiter
        return limiter

    def rate_of(self, base: str) -> float:
        """Requests per second this client allows itself towards the host of an RDAP base URL (0 = no limit)."""
        interval = self._limiter(_origin(base), base).interval
        return 1.0 / interval if interval else 0.0

    def _pause_host(self, origin: str, seconds: float) -> None:
        seconds = min(seconds, MAX_RETRY_AFTER)
        self._paused_until[origin] = max(self._paused_until.get(origin, 0.0), time.monotonic() + seconds)
        self._limiter(origin).pause(seconds)

    async def _ask(self, url: str, origin: str, target: URL | str) -> _Answer:
        # One flat coroutine: this runs once per name of a large scan, so every layer costs.
        limiter = self._limiter(origin)
        while True:
            paused = self._paused_until.get(origin)
            if paused is not None and paused > time.monotonic():
                # A 429's Retry-After holds back every request to that host, even with no rate limit set.
                await asyncio.sleep(paused - time.monotonic())
            if limiter.interval:
                await limiter.acquire_async()
            paused = self._paused_until.get(origin)
            # A 429 that came while this request waited for its turn: wait out the pause, then take a new turn.
            if paused is None or paused <= time.monotonic():
                break
        session = self._session if self._session is not None else self._get_session()
        gate = self.gate
        try:
            if gate is not None and not gate.try_enter():
                await gate.enter()
            try:
                async with session.get(target) as resp:
                    body = await read_aiohttp(resp, _BOUND)
                    status, headers = resp.status, resp.headers
                    final_url = str(resp.url) if resp.history else url
            finally:
                if gate is not None:
                    gate.leave()
        except BoundExceeded as exc:
            # The same server would send the same thing again: unknown at once, never unregistered.
            return _Answer(RegistrationStatus.UNKNOWN, f"{url}: {exc}", server=url)
        except asyncio.TimeoutError:
            raise RetryableError(f"{url}: no answer within {self.config.timeout:g}s") from None
        except aiohttp.ClientSSLError as exc:
            raise RetryableError(f"{url}: TLS failed: {exc}") from exc
        except aiohttp.ClientConnectorError as exc:
            raise RetryableError(f"{NO_CONNECTION}: {url}: {exc}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise RetryableError(f"{url}: {type(exc).__name__}: {exc}") from exc
        return self._classify(url, final_url, status, body, headers)

    def _classify(self, url: str, final_url: str, status: int, body: bytes, headers: Any) -> _Answer:
        if status == 404:
            if body.strip() and not _is_json(body):
                # RFC 7480/9083 answers are JSON or empty; a web page ("404 Not Found" from nginx or a
                # CDN) says the base URL is wrong or the service moved, nothing about the domain.
                return _Answer(
                    RegistrationStatus.UNKNOWN,
                    f"{final_url} answered HTTP 404 with a page that is not an RDAP answer "
                    f"({headers.get('Content-Type', 'no content type')}: {_short(body)}); "
                    "the RDAP base URL may be wrong: check the bootstrap or try WHOIS",
                    server=final_url,
                )
            title = _error_title(body)
            if _REDIRECTOR_MISS.search(title):
                # A redirector (rdap.org) that does not know the TLD says nothing about the domain.
                return _Answer(
                    RegistrationStatus.UNKNOWN, f"HTTP 404 from a redirector: {title}", server=final_url
                )
            detail = "HTTP 404" + (f" {title}" if title else "")
            return _Answer(RegistrationStatus.UNREGISTERED, detail, server=final_url)
        if status in RETRYABLE_STATUSES:
            wait = parse_retry_after(headers.get("Retry-After"))
            if wait is not None:
                self._pause_host(_origin(final_url), wait)
                self._pause_host(_origin(url), wait)
            raise RetryableError(f"{final_url} answered HTTP {status}: {_short(body)}", wait, status)
        if status != 200:
            return _Answer(
                RegistrationStatus.UNKNOWN,
                f"{final_url} answered HTTP {status}: {_short(body)}; check the registry or try WHOIS",
                server=final_url,
            )
        try:
            doc = json_loads(body)
        except ValueError:
            raise RetryableError(f"{final_url} answered 200 with a non-JSON body: {_short(body)}") from None
        if not isinstance(doc, dict) or str(doc.get("objectClassName", "")).lower() != "domain":
            raise RetryableError(f"{final_url} answered 200 without an RDAP domain object: {_short(body)}")
        return _Answer(RegistrationStatus.REGISTERED, "HTTP 200", _registration_date(doc), final_url)


# rdap.org answers 404 "domain X not found in IANA boostrap file" (sic) for a TLD it cannot route.
_REDIRECTOR_MISS = re.compile(r"boo?t?strap|\biana\b", re.IGNORECASE)


def _is_json(body: bytes) -> bool:
    try:
        json_loads(body)
    except ValueError:
        return False
    return True


def _error_title(body: bytes) -> str:
    if not body.strip():
        return ""
    try:
        doc = json_loads(body)
    except ValueError:
        return ""
    if isinstance(doc, dict):
        title = doc.get("title") or " ".join(str(d) for d in doc.get("description") or ())
        return str(title)[:160]
    return ""
