"""DNS delegation check against a real UDP DNS server (dnslib packets) on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from scanner.core.config import Config
from scanner.core.net import parse_host_port
from scanner.core.records import Registration, RegistrationStatus
from scanner.enrich.dns import PORT, DnsClient
from tests.loopback.registry_servers import DROP, NODATA, NOERROR, NXDOMAIN, REFUSED, SERVFAIL, DnsServer


@pytest.fixture(scope="module")
def dns_server():
    answers = {
        "google.com": NOERROR,
        "parked.com": NODATA,
        "broken.com": SERVFAIL,
        "closed.com": REFUSED,
        "silent.com": DROP,
    }
    with DnsServer(answers, default=NXDOMAIN) as server:
        yield server


def lookup(config: Config, *names: str) -> list[Registration]:
    async def run() -> list[Registration]:
        client = DnsClient(config, backoff_base=0.01)
        return list(await asyncio.gather(*(client.lookup(n) for n in names)))

    return asyncio.run(run())


def config_for(tmp_path: Path, server: DnsServer, **kw) -> Config:
    kw.setdefault("timeout", 1.0)
    kw.setdefault("retries", 1)
    return Config(out_dir=tmp_path, dns_server=server.address, cache_dir=tmp_path / "c", **kw)


def test_nxdomain_means_unregistered(tmp_path, dns_server):
    (reg,) = lookup(config_for(tmp_path, dns_server), "nobody-registered-this.com")
    assert (
        dns_server.recursion_desired["nobody-registered-this.com"] is True
    )  # a fixed server may be a resolver
    assert reg.status is RegistrationStatus.UNREGISTERED
    assert reg.method == "dns" and "NXDOMAIN" in reg.detail
    assert ("nobody-registered-this.com", "SOA") in dns_server.queries


def test_an_answer_means_registered(tmp_path, dns_server):
    (reg,) = lookup(config_for(tmp_path, dns_server), "google.com")
    assert reg.status is RegistrationStatus.REGISTERED
    assert reg.server == dns_server.address


def test_noerror_without_records_still_means_registered(tmp_path, dns_server):
    (reg,) = lookup(config_for(tmp_path, dns_server), "parked.com")
    assert reg.status is RegistrationStatus.REGISTERED
    assert "NODATA" in reg.detail


@pytest.mark.parametrize("name,word", [("broken.com", "SERVFAIL"), ("closed.com", "REFUSED")])
def test_servfail_and_refused_are_unknown_after_retrying(tmp_path, dns_server, name, word):
    before = sum(1 for q, _ in dns_server.queries if q == name)
    (reg,) = lookup(config_for(tmp_path, dns_server, retries=2), name)
    asked = sum(1 for q, _ in dns_server.queries if q == name) - before
    assert reg.status is RegistrationStatus.UNKNOWN
    assert word in reg.detail
    assert asked == 3


def test_a_server_that_never_answers_is_unknown(tmp_path, dns_server):
    (reg,) = lookup(config_for(tmp_path, dns_server, timeout=0.3, retries=0), "silent.com")
    assert reg.status is RegistrationStatus.UNKNOWN
    assert "no answer within" in reg.detail


def test_dns_server_addresses_parse_with_and_without_port():
    assert parse_host_port("127.0.0.1:5353", PORT) == ("127.0.0.1", 5353)
    assert parse_host_port("9.9.9.9", PORT) == ("9.9.9.9", 53)
    assert parse_host_port("[::1]:5300", PORT) == ("::1", 5300)


def test_without_a_fixed_server_the_tld_servers_are_found_and_asked_without_recursion(tmp_path):
    records = {
        ("com", "NS"): ["com. 300 IN NS a.gtld-test.", "com. 300 IN NS b.gtld-test."],
        ("a.gtld-test", "A"): ["a.gtld-test. 300 IN A 127.0.0.1"],
        ("b.gtld-test", "A"): ["b.gtld-test. 300 IN A 127.0.0.1"],
    }
    with DnsServer({"google.com": NOERROR}, default=NXDOMAIN, records=records) as server:
        config = Config(out_dir=tmp_path, timeout=1.0, retries=0)

        async def run() -> list[Registration]:
            client = DnsClient(config, resolver_address=server.address, authority_port=server.port)
            return [await client.lookup("google.com"), await client.lookup("free-name.com")]

        registered, free = asyncio.run(run())
        asked = [q for q, _ in server.queries]
        rd = dict(server.recursion_desired)
    assert rd["google.com"] is False and rd["com"] is True
    assert registered.status is RegistrationStatus.REGISTERED
    assert free.status is RegistrationStatus.UNREGISTERED
    assert asked.count("com") == 1  # the TLD's servers are looked up once per run
    assert registered.server == f"127.0.0.1:{server.port}"
