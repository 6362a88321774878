"""RDAP client against a real aiohttp RDAP server on loopback replaying real registry answers."""

from __future__ import annotations

import asyncio
import email.utils
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from scanner.core.config import Config
from scanner.core.records import Registration, RegistrationStatus
from scanner.enrich.lookups import NO_CONNECTION
from scanner.enrich.rdap import RdapBootstrap, RdapClient
from tests.loopback.registry_servers import (
    HTML_200,
    NOT_FOUND_EMPTY,
    RDAP_DIR,
    UNAVAILABLE,
    RdapServer,
    Reply,
    free_port,
    not_found_json,
    rdap_file,
    too_many,
    write_bootstrap,
)


def lookup(config: Config, *names: str) -> list[Registration]:
    async def run() -> list[Registration]:
        client = RdapClient(config, backoff_base=0.01)
        try:
            return list(await asyncio.gather(*(client.lookup(n) for n in names)))
        finally:
            await client.close()

    return asyncio.run(run())


def make_config(tmp_path: Path, server: RdapServer, **kw) -> Config:
    boot = write_bootstrap(
        tmp_path / "dns.json",
        {
            "com": server.url + "com/v1/",
            "net": server.url + "net/v1/",
            "fr": server.url + "fr/",
            "design": server.url,
        },
    )
    kw.setdefault("timeout", 2.0)
    kw.setdefault("retries", 2)
    kw.setdefault("rdap_rate", 0)
    return Config(out_dir=tmp_path, rdap_bootstrap=boot, cache_dir=tmp_path / "cache", **kw)


def test_bundled_bootstrap_matches_the_longest_suffix_and_knows_com_and_uk():
    boot = RdapBootstrap.load()
    assert boot.base_urls("google.com") == ("https://rdap.verisign.com/com/v1/",)
    assert boot.base_urls("bbc.co.uk") == boot.base_urls("nominet.uk") != ()
    assert boot.base_urls("example.invalid-tld-zz") == ()
    assert len(boot.services) > 1000


def test_a_more_specific_bootstrap_entry_wins_over_the_tld(tmp_path):
    path = write_bootstrap(
        tmp_path / "b.json", {"uk": "https://uk.example/", "co.uk": "https://co-uk.example/"}
    )
    boot = RdapBootstrap.load(path)
    assert boot.base_urls("shop.co.uk") == ("https://co-uk.example/",)
    assert boot.base_urls("gov.uk") == ("https://uk.example/",)


def test_bundled_bootstrap_is_a_byte_copy_of_the_iana_file():
    bundled = Path(__file__).resolve().parents[1] / "scanner" / "data" / "iana_rdap_dns.json"
    assert bundled.read_bytes() == (RDAP_DIR / "iana_dns_bootstrap_2026-06-26.json").read_bytes()


def test_real_verisign_answer_is_registered_with_its_registration_date(tmp_path):
    with RdapServer({"google.com": [rdap_file("verisign_google.com_2021-12-17.json")]}) as server:
        (reg,) = lookup(make_config(tmp_path, server), "google.com")
        accept = server.requests[0][2]
    assert reg.status is RegistrationStatus.REGISTERED
    assert reg.registered_at == datetime(1997, 9, 15, 4, tzinfo=timezone.utc)
    assert reg.server.endswith("/com/v1/domain/google.com")
    assert "application/rdap+json" in accept


def test_afnic_answer_served_as_plain_json_is_registered(tmp_path):
    reply = rdap_file("afnic_airport.fr_2022-12-29.json", "application/json")
    with RdapServer({"airport.fr": [reply]}) as server:
        (reg,) = lookup(make_config(tmp_path, server), "airport.fr")
    assert reg.status is RegistrationStatus.REGISTERED
    assert reg.registered_at == datetime(2016, 1, 27, 0, 33, 10, tzinfo=timezone.utc)


def test_verisign_404_with_an_empty_body_means_unregistered(tmp_path):
    with RdapServer(default=NOT_FOUND_EMPTY) as server:
        (reg,) = lookup(make_config(tmp_path, server), "jsiqpmcurt.com")
    assert reg.status is RegistrationStatus.UNREGISTERED
    assert reg.detail.startswith("HTTP 404")
    assert reg.attempts == 1


def test_centralnic_404_error_body_means_unregistered_and_keeps_its_title(tmp_path):
    with RdapServer({"jsiqpmcurt.design": [not_found_json()]}) as server:
        (reg,) = lookup(make_config(tmp_path, server), "jsiqpmcurt.design")
    assert reg.status is RegistrationStatus.UNREGISTERED
    assert "Object not found" in reg.detail


def test_a_redirector_404_about_its_bootstrap_is_unknown_not_unregistered(tmp_path):
    body = (RDAP_DIR / "rdap.org_notfound_test.fr_2021-12-17.json").read_bytes()
    with RdapServer({"test.fr": [Reply(404, body)]}) as server:
        (reg,) = lookup(make_config(tmp_path, server), "test.fr")
    assert reg.status is RegistrationStatus.UNKNOWN
    assert "boostrap" in reg.detail


def test_429_retry_after_seconds_is_honoured_before_asking_again(tmp_path):
    script = {"google.com": [too_many("1"), rdap_file("verisign_google.com_2021-12-17.json")]}
    with RdapServer(script) as server:
        (reg,) = lookup(make_config(tmp_path, server), "google.com")
        times = server.requests_for("google.com")
    assert reg.status is RegistrationStatus.REGISTERED
    assert reg.attempts == 2
    assert times[1] - times[0] >= 0.95


def test_429_retry_after_as_an_http_date_is_honoured(tmp_path):
    when = email.utils.formatdate(time.time() + 2, usegmt=True)
    script = {"google.com": [too_many(when), rdap_file("verisign_google.com_2021-12-17.json")]}
    with RdapServer(script) as server:
        (reg,) = lookup(make_config(tmp_path, server), "google.com")
        times = server.requests_for("google.com")
    assert reg.status is RegistrationStatus.REGISTERED
    assert times[1] - times[0] >= 0.9  # the date has one-second resolution


def test_a_429_holds_back_other_names_on_the_same_registry(tmp_path):
    script = {"a.com": [too_many("1"), NOT_FOUND_EMPTY], "b.com": [Reply(404, b"", delay=0.2)]}
    with RdapServer(script) as server:

        async def run() -> None:
            client = RdapClient(make_config(tmp_path, server), backoff_base=0.01)
            first = asyncio.create_task(client.lookup("a.com"))
            await asyncio.sleep(0.1)  # a.com's 429 is in before b.com is asked
            await client.lookup("b.com")
            await first
            await client.close()

        asyncio.run(run())
        a_first = server.requests_for("a.com")[0]
        b_first = server.requests_for("b.com")[0]
    assert b_first - a_first >= 0.9


def test_503_then_success_is_retried_to_an_answer(tmp_path):
    script = {"amazon.com": [UNAVAILABLE, rdap_file("verisign_amazon.com_2024-09-19.json")]}
    with RdapServer(script) as server:
        (reg,) = lookup(make_config(tmp_path, server), "amazon.com")
    assert reg.status is RegistrationStatus.REGISTERED
    assert reg.attempts == 2


def test_a_registry_failing_every_time_gives_unknown_with_the_status(tmp_path):
    with RdapServer({"down.com": [UNAVAILABLE]}) as server:
        (reg,) = lookup(make_config(tmp_path, server, retries=2), "down.com")
        asked = len(server.requests_for("down.com"))
    assert reg.status is RegistrationStatus.UNKNOWN
    assert "503" in reg.detail and "3 attempt" in reg.detail
    assert asked == 3


def test_a_slow_registry_times_out_to_unknown(tmp_path):
    with RdapServer({"slow.com": [Reply(404, b"", delay=1.5)]}) as server:
        (reg,) = lookup(make_config(tmp_path, server, timeout=0.3, retries=1), "slow.com")
    assert reg.status is RegistrationStatus.UNKNOWN
    assert "no answer within 0.3s" in reg.detail


def test_an_html_page_with_status_200_is_unknown_not_registered(tmp_path):
    with RdapServer({"maint.com": [HTML_200]}) as server:
        (reg,) = lookup(make_config(tmp_path, server, retries=1), "maint.com")
    assert reg.status is RegistrationStatus.UNKNOWN
    assert "non-JSON" in reg.detail and "maintenance" in reg.detail


def test_json_that_is_not_a_domain_object_is_unknown(tmp_path):
    with RdapServer({"odd.com": [Reply(200, b'{"objectClassName":"entity"}')]}) as server:
        (reg,) = lookup(make_config(tmp_path, server, retries=0), "odd.com")
    assert reg.status is RegistrationStatus.UNKNOWN


def test_redirects_are_followed_to_the_registry_answer(tmp_path):
    script = {"google.com": [rdap_file("verisign_google.com_2021-12-17.json")]}
    with RdapServer(script) as server:
        (reg,) = lookup(make_config(tmp_path, server), "redirect-to-google.com")
    assert reg.status is RegistrationStatus.REGISTERED
    assert "/moved/domain/google.com" in reg.server


def test_a_refused_connection_is_unknown_and_says_no_connection(tmp_path):
    port = free_port()
    boot = write_bootstrap(tmp_path / "dns.json", {"com": f"http://127.0.0.1:{port}/"})
    config = Config(out_dir=tmp_path, rdap_bootstrap=boot, retries=1, timeout=1)
    (reg,) = lookup(config, "google.com")
    assert reg.status is RegistrationStatus.UNKNOWN
    assert reg.detail.startswith(NO_CONNECTION)


def test_a_tld_without_rdap_service_is_unknown_without_asking(tmp_path):
    with RdapServer() as server:
        (reg,) = lookup(make_config(tmp_path, server), "example.zz")
        assert server.requests == []
    assert reg.status is RegistrationStatus.UNKNOWN


def test_the_per_registry_rate_limit_spaces_requests(tmp_path):
    with RdapServer() as server:
        names = [f"n{i}.com" for i in range(6)]
        lookup(make_config(tmp_path, server, rdap_rate=10), *names)
        times = sorted(t for t, _, _ in server.requests)
    assert len(times) == 6
    # five gaps of 0.1 s at 10/s; the server's clock sees arrivals, which a loaded machine can bunch by a
    # scheduling delay of the first one, so the bound leaves that slack (unlimited, six take ~10 ms)
    assert times[-1] - times[0] >= 0.3


@pytest.mark.parametrize("name", ["speedtest.net", "themarquetry.com"])
def test_other_real_verisign_answers_are_registered(tmp_path, name):
    files = {
        "speedtest.net": "verisign_speedtest.net_2024-09-19.json",
        "themarquetry.com": "verisign_themarquetry.com_2022-01-20.json",
    }
    with RdapServer({name: [rdap_file(files[name])]}) as server:
        (reg,) = lookup(make_config(tmp_path, server), name)
    assert reg.status is RegistrationStatus.REGISTERED
    assert reg.registered_at is not None


NGINX_404 = (b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n<center><h1>404 Not Found</h1>"
             b"</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")


def test_a_404_web_page_from_a_wrong_base_url_is_unknown_not_unregistered(tmp_path):
    # A registry that moved its RDAP service leaves a web server answering 404 pages for every path:
    # read as "not found", every name of that TLD would come out unregistered.
    with RdapServer(default=Reply(404, NGINX_404, "text/html")) as server:
        (reg,) = lookup(make_config(tmp_path, server), "google.com")
    assert reg.status is RegistrationStatus.UNKNOWN, reg.detail
    assert "not an RDAP answer" in reg.detail and "404" in reg.detail


def test_a_404_with_an_rdap_error_body_served_as_plain_json_is_still_unregistered(tmp_path):
    body = (RDAP_DIR / "centralnic_notfound_jsiqpmcurt.design_2021-12-17.json").read_bytes()
    with RdapServer({"jsiqpmcurt.design": [Reply(404, body, "application/json")]}) as server:
        (reg,) = lookup(make_config(tmp_path, server), "jsiqpmcurt.design")
    assert reg.status is RegistrationStatus.UNREGISTERED
