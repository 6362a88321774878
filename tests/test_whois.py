"""WHOIS client against a real TCP WHOIS server on loopback replaying real registry answers."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

import pytest

from scanner.core.config import Config
from scanner.core.records import Registration, RegistrationStatus
from scanner.enrich.lookups import NO_CONNECTION
from scanner.enrich.whois import WhoisClient, classify_whois
from tests.loopback.registry_servers import EMPTY, SILENT, WhoisServer, free_port, whois_file

NOT_FOUND_FILES = {
    "likexian-have-no-money-to-register.com": "com_notfound_likexian-have-no-money-to-register.com.txt",
    "likexian-have-no-money-to-register.net": "net_notfound_likexian-have-no-money-to-register.net.txt",
    "likexian-have-no-money-to-register.org": "org_notfound_likexian-have-no-money-to-register.org.txt",
    "likexian-have-no-money-to-register.de": "de_notfound_likexian-have-no-money-to-register.de.txt",
    "likexian-have-no-money-to-register.eu": "eu_notfound_likexian-have-no-money-to-register.eu.txt",
    "likexian-have-no-money-to-register.fr": "fr_notfound_likexian-have-no-money-to-register.fr.txt",
}
REGISTERED_FILES = {
    "urlowl.com": ("com_urlowl.com.txt", datetime(2013, 2, 21, 19, 24, 57, tzinfo=timezone.utc)),
    "rockcreekcc.com": (
        "com_rockcreekcc.com_registry+registrar.txt",
        datetime(2002, 7, 12, 15, 48, 26, tzinfo=timezone.utc),
    ),
    "google.eu": ("eu_google.eu.txt", None),
    "google.fr": ("fr_google.fr.txt", datetime(2000, 7, 26, 22, tzinfo=timezone.utc)),
    "slashdot.org": ("org_slashdot.org_2008.txt", datetime(1997, 10, 5, 4, tzinfo=timezone.utc)),
}


def config_for(tmp_path: Path, server: str, **kw) -> Config:
    kw.setdefault("timeout", 2.0)
    kw.setdefault("retries", 2)
    kw.setdefault("whois_rate", 0)
    return Config(out_dir=tmp_path, whois_server=server, cache_dir=tmp_path / "cache", **kw)


def lookup(config: Config, *names: str) -> list[Registration]:
    async def run() -> list[Registration]:
        client = WhoisClient(config, backoff_base=0.01)
        return list(await asyncio.gather(*(client.lookup(n) for n in names)))

    return asyncio.run(run())


@pytest.fixture(scope="module")
def real_whois():
    script = {name: [whois_file(f)] for name, f in NOT_FOUND_FILES.items()}
    script.update({name: [whois_file(f)] for name, (f, _) in REGISTERED_FILES.items()})
    with WhoisServer(script) as server:
        yield server


@pytest.mark.parametrize("name", sorted(NOT_FOUND_FILES))
def test_each_registry_no_match_answer_means_unregistered(tmp_path, real_whois, name):
    (reg,) = lookup(config_for(tmp_path, real_whois.address), name)
    assert reg.status is RegistrationStatus.UNREGISTERED, reg.detail
    assert reg.method == "whois" and reg.server == real_whois.address


@pytest.mark.parametrize("name", sorted(REGISTERED_FILES))
def test_each_registered_answer_is_registered_with_its_creation_date(tmp_path, real_whois, name):
    (reg,) = lookup(config_for(tmp_path, real_whois.address), name)
    assert reg.status is RegistrationStatus.REGISTERED, reg.detail
    assert reg.registered_at == REGISTERED_FILES[name][1]


def test_verisign_no_match_line_is_kept_as_evidence(tmp_path, real_whois):
    (reg,) = lookup(config_for(tmp_path, real_whois.address), "likexian-have-no-money-to-register.com")
    assert reg.detail == 'No match for "LIKEXIAN-HAVE-NO-MONEY-TO-REGISTER.COM".'


def test_a_rate_limit_reply_is_retried_then_answered(tmp_path):
    script = {
        "urlowl.com": [b"Query rate limit exceeded. Try again later.\r\n", whois_file("com_urlowl.com.txt")]
    }
    with WhoisServer(script) as server:
        (reg,) = lookup(config_for(tmp_path, server.address), "urlowl.com")
    assert reg.status is RegistrationStatus.REGISTERED
    assert reg.attempts == 2


def test_a_server_that_keeps_rate_limiting_gives_unknown(tmp_path):
    script = {"urlowl.com": [b"%% Your quota of queries has been exceeded\n"]}
    with WhoisServer(script) as server:
        (reg,) = lookup(config_for(tmp_path, server.address, retries=1), "urlowl.com")
    assert reg.status is RegistrationStatus.UNKNOWN
    assert "exceeded" in reg.detail


def test_an_empty_answer_is_unknown_never_unregistered(tmp_path):
    with WhoisServer(default=EMPTY) as server:
        (reg,) = lookup(config_for(tmp_path, server.address, retries=1), "whatever.com")
        asked = len(server.queries)
    assert reg.status is RegistrationStatus.UNKNOWN
    assert "empty" in reg.detail
    assert asked == 2


def test_a_silent_server_times_out_to_unknown(tmp_path):
    with WhoisServer(default=SILENT) as server:
        server.silent_for = 1.0
        (reg,) = lookup(config_for(tmp_path, server.address, timeout=0.3, retries=0), "slow.com")
    assert reg.status is RegistrationStatus.UNKNOWN
    assert "no answer within" in reg.detail


def test_a_refused_connection_is_unknown_and_says_no_connection(tmp_path):
    (reg,) = lookup(config_for(tmp_path, f"127.0.0.1:{free_port()}", retries=1), "google.com")
    assert reg.status is RegistrationStatus.UNKNOWN
    assert reg.detail.startswith(NO_CONNECTION)


def test_an_unrecognised_answer_without_the_domain_is_unknown():
    status, detail, _ = classify_whois("Welcome to our server.\nHave a nice day.\n", "example.com")
    assert status is RegistrationStatus.UNKNOWN and "unrecognised" in detail


@pytest.mark.parametrize(
    "answer",
    [
        "NOT FOUND\n",
        "No Data Found\n",
        ">>> Domain example.se not found.\n".lstrip(">"),
        "example.nl is free\n",
        "%% No entries found for the selected source(s).\n",
        "No match!!\n",
    ],
)
def test_other_known_registry_no_match_phrases_mean_unregistered(answer):
    status, _, _ = classify_whois(answer, "example.se")
    assert status is RegistrationStatus.UNREGISTERED


def test_the_whois_rate_limit_spaces_queries_to_one_server(tmp_path, real_whois):
    import time

    before = len(real_whois.queries)
    start = time.monotonic()
    lookup(config_for(tmp_path, real_whois.address, whois_rate=10), *list(REGISTERED_FILES)[:4])
    times = [t for t, _ in real_whois.queries[before:]]
    assert len(times) == 4
    assert max(times) - start >= 0.25


def test_a_tld_missing_from_the_map_is_referred_by_iana(tmp_path):
    iana_answer = (
        b"% IANA WHOIS server\n\ndomain:       ZZ\n\nwhois:        127.0.0.1\n\nstatus:       ACTIVE\n"
    )
    script = {"zz": [iana_answer], "free.zz": [b'No match for "FREE.ZZ".\r\n']}
    with WhoisServer(script) as server:
        config = Config(out_dir=tmp_path, whois_rate=0, retries=0, timeout=2)

        async def run() -> Registration:
            client = WhoisClient(config, servers={}, iana_server=server.address, registry_port=server.port)
            return await client.lookup("free.zz")

        reg = asyncio.run(run())
        questions = [q for _, q in server.queries]
    assert questions == ["zz", "free.zz"]
    assert reg.status is RegistrationStatus.UNREGISTERED
    assert reg.server == server.address


def test_an_unreachable_iana_makes_the_lookup_unknown_with_no_connection(tmp_path):
    config = Config(out_dir=tmp_path, whois_rate=0, retries=0, timeout=1)

    async def run() -> Registration:
        client = WhoisClient(config, servers={}, iana_server=f"127.0.0.1:{free_port()}")
        return await client.lookup("x.zz")

    reg = asyncio.run(run())
    assert reg.status is RegistrationStatus.UNKNOWN
    assert reg.detail.startswith(NO_CONNECTION)


#: Real "no such domain" answers of registries whose phrases the reader did not know (likexian/whois-parser).
MORE_NOT_FOUND = {
    "likexian-have-no-money-to-register.ai": "ai_notfound_likexian-have-no-money-to-register.ai.txt",
    "likexian-have-no-money-to-register.nz": "nz_notfound_likexian-have-no-money-to-register.nz.txt",
    "likexian-have-no-money-to-register.love": "love_notfound_likexian-have-no-money-to-register.love.txt",
    "likexian-have-no-money-to-register.ch": "ch_notfound_likexian-have-no-money-to-register.ch.txt",
    "likexian-have-no-money-to-register.hk": "hk_notfound_likexian-have-no-money-to-register.hk.txt",
    "likexian-have-no-money-to-register.rs": "rs_notfound_likexian-have-no-money-to-register.rs.txt",
    "likexian-have-no-money-to-register.tw": "tw_notfound_likexian-have-no-money-to-register.tw.txt",
    "likexian-have-no-money-to-register.hu": "hu_notfound_likexian-have-no-money-to-register.hu.txt",
    "likexian-have-no-money-to-register.kz": "kz_notfound_likexian-have-no-money-to-register.kz.txt",
    "likexian-have-no-money-to-register.by": "by_notfound_likexian-have-no-money-to-register.by.txt",
}


@pytest.fixture(scope="module")
def more_whois():
    script = {name: [whois_file(f)] for name, f in MORE_NOT_FOUND.items()}
    script["vote.nz"] = [whois_file("nz_vote.nz.txt")]
    with WhoisServer(script) as server:
        yield server


@pytest.mark.parametrize("name", sorted(MORE_NOT_FOUND))
def test_coccas_nzs_uniregistrys_and_other_real_no_match_answers_are_unregistered_not_registered(
        tmp_path, more_whois, name):
    # CoCCA and .nz echo the name on a line of its own, Uniregistry says "Domain X is available for
    # registration": read as a line naming the domain, each came out registered (the rest unknown).
    (reg,) = lookup(config_for(tmp_path, more_whois.address, retries=0), name)
    assert reg.status is RegistrationStatus.UNREGISTERED, reg.detail


def test_a_registered_nz_name_stays_registered_beside_the_nz_no_match_answer(tmp_path, more_whois):
    (reg,) = lookup(config_for(tmp_path, more_whois.address, retries=0), "vote.nz")
    assert reg.status is RegistrationStatus.REGISTERED and "200 Active" not in reg.detail


@pytest.mark.parametrize(
    ("answer", "domain"),
    [
        ("Domain:             example.it\nStatus:             UNASSIGNABLE\n", "example.it"),  # nic.it reserved
        ("Domain: example.eu\nScript: LATIN\n\nStatus: NOT ALLOWED\n", "example.eu"),  # EURid blocked
        (">>> Domain example.xyz is available for registration as a premium domain\n", "example.xyz"),
        ("The registration of example.xyz is blocked by the DPML brand protection\n", "example.xyz"),
        ("example.xyz: reserved by the registry\n", "example.xyz"),
        ("example.xyz: no entries found.\n", "example.xyz"),
    ],
)
def test_reserved_blocked_and_premium_answers_naming_the_domain_are_unknown_not_registered_or_free(answer, domain):
    status, detail, _ = classify_whois(answer, domain)
    assert status is RegistrationStatus.UNKNOWN, detail


def test_dns_belgiums_not_available_status_is_a_registered_name():
    # DNS Belgium (.be) answers a registered name "Status: NOT AVAILABLE" and a free one "Status: AVAILABLE"
    taken = "Domain:\tbanque-example.be\nStatus:\tNOT AVAILABLE\nRegistered:\tTue Dec 12 2000\n\nRegistrant:\n\tNot shown\n"
    free = "Domain:\tbanque-example.be\nStatus:\tAVAILABLE\n"
    assert classify_whois(taken, "banque-example.be")[0] == RegistrationStatus.REGISTERED
    assert classify_whois(free, "banque-example.be")[0] == RegistrationStatus.UNREGISTERED
