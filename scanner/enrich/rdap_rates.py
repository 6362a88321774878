"""How fast ctscan asks each RDAP registry: one table, RDAP base URL -> requests per second, with its source.

A registry's limit is per client; past it, registries answer 429 (with Retry-After, which is always
obeyed) or block the client for hours. `--rdap-rate` overrides the table for every registry. Several
base URLs on one host share that host's limit (the slowest of them), because registries count
requests per client, not per TLD.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlsplit


class Politeness(NamedTuple):
    """Requests per second for one registry (0 = no limit) and where the figure comes from."""

    rate: float
    source: str


#: For a registry that publishes no limit (Verisign for .com and .net publishes none).
DEFAULT = Politeness(5.0, "ctscan's default for a registry that publishes no limit")

#: RDAP base URL (as the IANA bootstrap lists it; a prefix matches every URL under it) -> politeness.
RATES: dict[str, Politeness] = {
    "https://rdap.verisign.com/": Politeness(
        5.0, "Verisign (.com, .net) publishes no RDAP rate limit: ctscan's default"),
    "https://rdap.nominet.uk/": Politeness(
        2.0, "Nominet (.uk): 6 queries per 3 seconds, the figure quoted in ctscan issue 17 "
             "(its WHOIS acceptable use policy allows 5 per second and 1,000 a day)"),
    "https://rdap.identitydigital.services/": Politeness(
        10.0, "Identity Digital (about 450 TLDs): about 10 per second, the figure quoted in ctscan issue 17"),
}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def politeness_for(base_url: str, override: float | None = None) -> Politeness:
    """The rate to ask this registry at: --rdap-rate when given, else the table's, else DEFAULT."""
    if override is not None:
        return Politeness(override, "--rdap-rate")
    url = base_url.lower()
    best = ""
    for prefix in RATES:
        if url.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    if best:
        return RATES[best]
    # another base URL of a host in the table shares that host's limit
    origin = _origin(url)
    same_host = [p for key, p in RATES.items() if _origin(key) == origin]
    return min(same_host, key=lambda p: p.rate) if same_host else DEFAULT
