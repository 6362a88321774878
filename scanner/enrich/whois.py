"""WHOIS (port 43) lookups for TLDs without RDAP: a thin asyncio client and a careful reader.

A domain is called unregistered only when the registry's own no-match phrase is recognised;
rate-limit replies, empty answers, timeouts and refused connections are retried, then unknown.

The reader is our own, not python-whois's parser: on the recorded registry answers in
tests/fixtures/whois it found one creation date fewer (the 2008 PIR format), and of the seven other
no-match phrases tests/test_whois.py sends it recognised one; a rate-limit reply, an empty answer and
an unreadable one all come back from it as a record without a name, and it took about a hundred
times as long per answer.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from scanner.core.config import Config
from scanner.core.net import Gate, GaveUp, HostRateLimits, RetryableError, parse_host_port, with_retries
from scanner.core.records import Registration, RegistrationStatus
from scanner.enrich.lookups import NO_CONNECTION, parse_date, utc_now

METHOD = "whois"
PORT = 43
IANA_SERVER = "whois.iana.org"
MAX_ANSWER = 1 << 20  # no registry answer is anywhere near 1 MiB; more is a misbehaving server

#: Registry WHOIS servers of common TLDs, so most lookups need no referral through IANA.
REGISTRY_SERVERS: dict[str, str] = {
    "com": "whois.verisign-grs.com",
    "net": "whois.verisign-grs.com",
    "org": "whois.publicinterestregistry.org",
    "info": "whois.nic.info",
    "biz": "whois.nic.biz",
    "io": "whois.nic.io",
    "co": "whois.nic.co",
    "me": "whois.nic.me",
    "us": "whois.nic.us",
    "uk": "whois.nic.uk",
    "de": "whois.denic.de",
    "eu": "whois.eu",
    "fr": "whois.nic.fr",
    "it": "whois.nic.it",
    "nl": "whois.domain-registry.nl",
    "be": "whois.dns.be",
    "ch": "whois.nic.ch",
    "li": "whois.nic.li",
    "at": "whois.nic.at",
    "pl": "whois.dns.pl",
    "se": "whois.iis.se",
    "dk": "whois.punktum.dk",
    "no": "whois.norid.no",
    "fi": "whois.fi",
    "cz": "whois.nic.cz",
    "ru": "whois.tcinet.ru",
    "jp": "whois.jprs.jp",
    "cn": "whois.cnnic.cn",
    "kr": "whois.kr",
    "au": "whois.auda.org.au",
    "nz": "whois.irs.net.nz",
    "ca": "whois.cira.ca",
    "br": "whois.registro.br",
    "mx": "whois.mx",
    "in": "whois.registry.in",
}

_NOT_FOUND = re.compile(
    r"^(?:"
    r"no match\b"  # Verisign, Nominet, JPRS "No match!!", registro.br
    r"|(?:the )?domain (?:name )?not found\b"  # PIR, Google, CentralNic
    r"|not found\b"  # Identity Digital, auDA, CIRA "Not found: x.ca"
    r"|no data found\b"  # .us / .biz
    r"|no entries found\b"  # AFNIC (as a %% comment), TCI, Punktum
    r"|no matching record\b"  # CNNIC
    r"|nothing found\b"  # nic.at
    r"|(?:query_)?status:\s*(?:2\d\d\s+)?(?:free|available)\b"  # DENIC, EURid, nic.it, DNS Belgium, .nz "220 Available"
    r"|domain status:\s*no object found\b"  # CoCCA (.ai, .cx, .gs)
    r"|domain \S+ is available for registration\s*$"  # Uniregistry (.love, .sexy); not "... as a premium domain"
    r"|object does not exist\b"  # .by
    r"|(?:error:\d+:\s*)?(?:the )?domain(?: name)? (?:is not|has not been) registered\b"  # SWITCH, HKIRC, RNIDS
    r"|no found\b"  # TWNIC
    r"|nincs talalat\b"  # .hu "Nincs talalat / No match"
    r"|no information available about domain name\b"  # NASK
    r"|the queried object does not exist\b"
    r"|we do not have an entry in our database matching your query\b"  # SWITCH
    r"|this domain name has not been registered\b"  # Nominet
    r"|the requested domain was not found\b"  # KISA
    r"|domain \S+ not found\b"  # Internetstiftelsen
    r"|\S+ is free\b"  # SIDN
    r")",
    re.IGNORECASE,
)
_HELD_BACK = re.compile(r"\b(?:premium|reserved|blocked|restricted)\b", re.IGNORECASE)
_RATE_LIMITED = re.compile(
    r"exceeded|quota|try again later|too many (?:requests|queries|connections)|rate limit|access denied",
    re.IGNORECASE,
)
_CREATED = re.compile(
    r"^\s*(?:creation date|created(?: on| date)?|registered(?: on)?|registration (?:date|time)|domain registration date"
    r"|registered date)\s*:\s*(.+?)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_STRONG_KEYS = re.compile(
    r"^\s*(?:registry domain id|creation date|domain id)\s*:\s*\S", re.IGNORECASE | re.MULTILINE
)
_REFER = re.compile(r"^\s*(?:refer|whois)\s*:\s*(\S+)\s*$", re.IGNORECASE | re.MULTILINE)


#: Words that, on a line naming the domain or on a status line, say it is neither plainly taken nor
#: free: held back by the registry, priced as premium, blocked by a brand-protection list.
_WITHHELD = re.compile(
    r"\b(?:reserved|blocked|premium|restricted|withheld|unassignable|not allowed|not available|available|free"
    r"|not registered|no object|does not exist|not found|no match|no entries|no data)\b",
    re.IGNORECASE,
)
_TAKEN = re.compile(r"not available", re.IGNORECASE)
_STATUS_LINE = re.compile(r"^\s*(?:domain |query_|registration )?status\s*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)


def _content_lines(text: str) -> list[str]:
    lines = []
    for raw in text.splitlines():
        # '%' and '#' open comments; '>>>' and '***' decorate Uniregistry's and KazNIC's answers
        line = raw.strip().lstrip("%#>*").strip()
        if line:
            lines.append(line)
    return lines


def _creation_date(text: str) -> datetime | None:
    match = _CREATED.search(text)
    if not match:
        return None
    value = match.group(1)
    when = parse_date(value)
    if when is not None:
        return when
    for fmt in (
        "%d-%b-%Y %H:%M:%S UTC",
        "%d-%b-%Y",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d",
        "%d.%m.%Y",
        "%Y.%m.%d",
        "%Y/%m/%d",
    ):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    return None


def classify_whois(text: str, domain: str) -> tuple[RegistrationStatus, str, datetime | None]:
    """Read one registry WHOIS answer: (status, the deciding line, creation date)."""
    lines = _content_lines(text)
    if not lines:
        return RegistrationStatus.UNKNOWN, "empty WHOIS answer", None
    for line in lines:
        if _NOT_FOUND.match(line):
            if _HELD_BACK.search(line):
                return RegistrationStatus.UNKNOWN, f"not registered but held back: {line[:160]}", None
            return RegistrationStatus.UNREGISTERED, line[:160], None
    created = _creation_date(text)
    strong = _STRONG_KEYS.search(text)
    if strong or created is not None:
        return (
            RegistrationStatus.REGISTERED,
            (strong.group(0).strip() if strong else "creation date given"),
            created,
        )
    for line in lines:
        if _RATE_LIMITED.search(line):
            return RegistrationStatus.UNKNOWN, f"rate limited: {line[:160]}", None
    for match in _STATUS_LINE.finditer(text):
        if _TAKEN.fullmatch(match.group(1).strip()):
            continue  # DNS Belgium's word for a registered name: the line naming it decides below
        if _WITHHELD.search(match.group(1)):
            # "Status: UNASSIGNABLE" (nic.it), "Status: NOT ALLOWED" (EURid): no registration, and not free
            return RegistrationStatus.UNKNOWN, f"neither registered nor free: {match.group(0).strip()[:160]}", None
    name = domain.lower()
    # Comment lines are skipped because some registries echo the question there (AFNIC).
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped and stripped[0] not in "%#" and name in stripped.lower():
            if _WITHHELD.search(stripped):
                # the name with "is available", "is reserved", "premium": the registry holds no registration
                return RegistrationStatus.UNKNOWN, f"unrecognised WHOIS answer: {stripped[:160]}", None
            return RegistrationStatus.REGISTERED, stripped[:160], created
    return RegistrationStatus.UNKNOWN, f"unrecognised WHOIS answer starting {lines[0][:80]!r}", None


@dataclass
class WhoisClient:
    """Asks registry WHOIS servers about domains, one rate limit per server."""

    config: Config
    limits: HostRateLimits | None = None
    gate: Gate | None = None  # shared with the other registry clients: total lookups in flight
    backoff_base: float = 0.5
    servers: dict[str, str] = field(default_factory=lambda: dict(REGISTRY_SERVERS))
    iana_server: str = f"{IANA_SERVER}:{PORT}"  # where TLD referrals come from
    registry_port: int = PORT  # port of the registry servers found by map or referral
    _referrals: dict[str, tuple[str | None, str]] = field(default_factory=dict, init=False, repr=False)
    _referral_lock: asyncio.Lock | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.limits is None:
            self.limits = HostRateLimits(self.config.whois_rate)

    async def server_for(self, domain: str) -> tuple[str, int] | None:
        """The WHOIS server for this domain's TLD (None when the TLD has none)."""
        target, _ = await self._server_and_reason(domain)
        return target

    async def _server_and_reason(self, domain: str) -> tuple[tuple[str, int] | None, str]:
        if self.config.whois_server:
            return parse_host_port(self.config.whois_server, PORT), ""
        tld = domain.lower().rstrip(".").rsplit(".", 1)[-1]
        if tld in self.servers:
            return (self.servers[tld], self.registry_port), ""
        if self._referral_lock is None:
            self._referral_lock = asyncio.Lock()
        async with self._referral_lock:
            if tld not in self._referrals:
                self._referrals[tld] = await self._ask_iana(tld)
        host, reason = self._referrals[tld]
        return ((host, self.registry_port) if host else None), reason

    async def _ask_iana(self, tld: str) -> tuple[str | None, str]:
        host, port = parse_host_port(self.iana_server, PORT)
        try:
            text, _ = await with_retries(
                lambda _: self.query(host, port, tld), self.config.retries, self.backoff_base
            )
        except GaveUp as exc:
            return None, str(exc)
        match = _REFER.search(text)
        if match:
            return match.group(1).lower(), ""
        return None, f"{host}:{port} knows no WHOIS server for .{tld}"

    async def query(self, host: str, port: int, question: str) -> str:
        """Send one question, read the answer to the end of the connection (raises RetryableError)."""
        assert self.limits is not None
        await self.limits.for_host(f"whois://{host}:{port}").acquire_async()
        try:
            if self.gate is not None:
                async with self.gate:
                    return await asyncio.wait_for(
                        self._exchange(host, port, question), self.config.timeout or None
                    )
            return await asyncio.wait_for(self._exchange(host, port, question), self.config.timeout or None)
        except asyncio.TimeoutError:
            raise RetryableError(f"whois {host}:{port}: no answer within {self.config.timeout:g}s") from None
        except (ConnectionRefusedError, OSError) as exc:
            if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
                raise RetryableError(f"whois {host}:{port}: connection dropped: {exc}") from exc
            raise RetryableError(f"{NO_CONNECTION}: whois {host}:{port}: {exc}") from exc

    @staticmethod
    async def _exchange(host: str, port: int, question: str) -> str:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(question.encode("idna" if not question.isascii() else "ascii") + b"\r\n")
            await writer.drain()
            chunks: list[bytes] = []
            size = 0
            while size < MAX_ANSWER:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
        raw = b"".join(chunks)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    async def lookup(self, domain: str) -> Registration:
        """The registration status of one registrable domain (never raises for network trouble)."""
        target, reason = await self._server_and_reason(domain)
        if target is None:
            return Registration(
                domain,
                RegistrationStatus.UNKNOWN,
                METHOD,
                server=self.iana_server,
                detail=reason or "no WHOIS server known for this TLD",
                checked_at=utc_now(),
            )
        host, port = target
        server = f"{host}:{port}"

        async def ask(_: int) -> tuple[RegistrationStatus, str, datetime | None]:
            answer = classify_whois(await self.query(host, port, domain), domain)
            if answer[0] is RegistrationStatus.UNKNOWN:
                # An empty, rate-limited or unreadable answer may be read the next time.
                raise RetryableError(f"whois {server}: {answer[1]}")
            return answer

        try:
            (status, detail, created), attempts = await with_retries(ask, self.config.retries, self.backoff_base)
        except GaveUp as exc:
            status, detail, created, attempts = RegistrationStatus.UNKNOWN, str(exc), None, exc.attempts
        return Registration(
            domain,
            status,
            METHOD,
            server=server,
            detail=detail,
            checked_at=utc_now(),
            registered_at=created,
            attempts=attempts,
        )
