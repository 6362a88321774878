"""Registration in the order that answers fastest: the TLD's own DNS servers first, the registry for the rest.

Against a loopback DNS server playing the root and the TLDs (delegations, NXDOMAIN, SERVFAIL,
silence) and loopback RDAP registries, one of them enforcing a rate limit with 429 + Retry-After.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from scanner.core.config import Config
from scanner.enrich.rdap_rates import DEFAULT, RATES, politeness_for
from scanner.enrich.registration import RegistrationService
from tests.loopback.registry_servers import RDAP_DIR, RdapServer, Reply, rdap_file, write_bootstrap
from tests.loopback.registry_zones import DROP, SERVFAIL, RateLimitedRdapServer, ZoneServer

GOOGLE = rdap_file("verisign_google.com_2021-12-17.json")


def held_reply(name: str) -> Reply:
    """A registry's answer for a registered name on clientHold: registered, no nameservers, so not in the zone."""
    doc = json.loads((RDAP_DIR / "verisign_google.com_2021-12-17.json").read_bytes())
    doc["ldhName"] = name.upper()
    doc["status"] = ["client hold", "client transfer prohibited"]
    doc["nameservers"] = []
    return Reply(200, json.dumps(doc).encode())


DELEGATED = {"google.com": ["ns1.google.com", "ns2.google.com"], "example.org": ["a.iana-servers.net"]}
WORLD = {
    "held.com": [held_reply("held.com")],  # registered, undelegated: NXDOMAIN in the zone
    "broken.com": [GOOGLE],  # the TLD answers SERVFAIL for it
    "silent.com": [GOOGLE],  # the TLD never answers for it
}


@pytest.fixture()
def zones():
    with ZoneServer(tlds=("com", "org"), delegated=DELEGATED,
                    behaviour={"broken.com": SERVFAIL, "silent.com": DROP}) as server:
        yield server


@pytest.fixture()
def rdap():
    with RdapServer(dict(WORLD)) as server:
        yield server


def make_config(tmp_path: Path, zones: ZoneServer, rdap: RdapServer, **kw) -> Config:
    boot = write_bootstrap(tmp_path / "dns.json", {"com": rdap.url + "com/v1/", "org": rdap.url + "org/"})
    kw.setdefault("timeout", 0.5)
    kw.setdefault("retries", 1)
    kw.setdefault("rdap_rate", 0)
    kw.setdefault("cache_dir", tmp_path / "cache")
    return Config(out_dir=tmp_path, rdap_bootstrap=boot, dns_root=zones.address, **kw)


def run(config: Config, names: list[str], **submit):
    with RegistrationService(config, progress=False, backoff_base=0.01) as service:
        service.submit(names, **submit)
        df = service.results()
        return df.set_index("domain"), service.summary()


def answers(df) -> dict[str, tuple[str, str]]:
    return {name: (r.status, r.method) for name, r in df.iterrows()}


def test_a_delegated_name_is_registered_from_the_tld_servers_with_its_ns_set_and_no_rdap(tmp_path, zones, rdap):
    df, summary = run(make_config(tmp_path, zones, rdap), ["google.com", "example.org"])
    assert answers(df) == {"google.com": ("registered", "delegation"), "example.org": ("registered", "delegation")}
    assert "ns1.google.com, ns2.google.com" in df.loc["google.com", "detail"]
    # the TLD's own server was asked, without recursion, after the root told where it is
    assert zones.asked("google.com") == [("com", False)] and zones.asked("com") == [("root", False)]
    assert rdap.requests == []
    assert summary["settled_by"]["delegation"] == 2 and summary["by_method"] == {"delegation": 2}


def test_an_undelegated_name_the_registry_holds_comes_out_registered_never_unregistered(tmp_path, zones, rdap):
    df, _ = run(make_config(tmp_path, zones, rdap), ["held.com"])
    row = df.loc["held.com"]
    assert (row.status, row.method) == ("registered", "rdap")
    assert row.registered_at.year == 1997  # the registry's own record, with its date
    assert "NXDOMAIN" in row.detail  # the delegation check's answer stays in the evidence


def test_a_name_is_unregistered_only_when_the_registry_says_so(tmp_path, zones, rdap):
    df, summary = run(make_config(tmp_path, zones, rdap), ["nobody-has-this.com", "not-in-zone.org"])
    assert answers(df) == {"nobody-has-this.com": ("unregistered", "rdap"), "not-in-zone.org": ("unregistered", "rdap")}
    assert summary["settled_by"]["registry_after_delegation"] == 2


def test_servfail_and_silence_from_the_tld_are_settled_by_the_registry(tmp_path, zones, rdap):
    df, _ = run(make_config(tmp_path, zones, rdap), ["broken.com", "silent.com"])
    assert answers(df) == {"broken.com": ("registered", "rdap"), "silent.com": ("registered", "rdap")}
    assert "SERVFAIL" in df.loc["broken.com", "detail"] and "no answer" in df.loc["silent.com", "detail"]


def test_when_the_registry_fails_too_an_undelegated_name_is_unknown(tmp_path, zones):
    with RdapServer(default=Reply(503, b"down", "text/html")) as down:
        df, summary = run(make_config(tmp_path, zones, down), ["gone.com", "google.com"])
    assert answers(df) == {"gone.com": ("unknown", "rdap"), "google.com": ("registered", "delegation")}
    assert summary["by_status"]["unregistered"] == 0


def test_a_tld_the_root_does_not_know_is_not_delegated_and_left_to_the_registry(tmp_path, zones, rdap):
    df, _ = run(make_config(tmp_path, zones, rdap), ["name.zz"])
    assert df.loc["name.zz", "status"] == "unknown"  # no RDAP or WHOIS for .zz here: unknown, not unregistered
    assert "no TLD zz" in df.loc["name.zz", "detail"]


def test_a_rerun_with_the_same_cache_gives_the_same_answers_without_asking_again(tmp_path, zones, rdap):
    config = make_config(tmp_path, zones, rdap)
    names = ["google.com", "held.com", "nobody-has-this.com", "example.org"]
    first, _ = run(config, names)
    asked = (len(zones.queries), len(rdap.requests))
    second, summary = run(config, names)
    assert (len(zones.queries), len(rdap.requests)) == asked
    assert answers(second) == answers(first) and summary["cache_hits"] == 4
    assert second.loc["held.com", "registered_at"] == first.loc["held.com", "registered_at"]


def test_the_registry_s_429_and_retry_after_are_obeyed_and_every_name_still_answered(tmp_path, zones):
    names = [f"free{i}.com" for i in range(8)]
    with RateLimitedRdapServer(rate=2.0, retry_after=1) as limited:
        # the table's default (5/s) is faster than this registry allows: it answers 429 + Retry-After
        df, _ = run(make_config(tmp_path, zones, limited, rdap_rate=None, retries=6, use_cache=False), names)
        refused = [t for t, _, kind in limited.requests if kind == "429"]
        after = [t for t, _, kind in limited.requests if kind != "429"]
    assert set(df["status"]) == {"unregistered"}
    assert refused, "the registry should have had to refuse the table's default pace"
    first_refusal = refused[0]
    # after a Retry-After of 1 s nothing more was sent for that long (but what was already on its way)
    assert not [t for t in after if first_refusal + 0.1 < t < first_refusal + 0.9]


def test_rdap_rate_overrides_the_table_and_keeps_under_the_registry_s_limit(tmp_path, zones):
    names = [f"free{i}.com" for i in range(5)]
    with RateLimitedRdapServer(rate=2.0) as limited:
        df, summary = run(make_config(tmp_path, zones, limited, rdap_rate=1.0, use_cache=False), names)
        refused = limited.refused
    assert set(df["status"]) == {"unregistered"} and refused == 0
    (rates,) = summary["rdap_rates"].values()
    assert rates == {"per_second": 1.0, "source": "--rdap-rate"}


def test_the_politeness_table_gives_each_registry_its_rate_and_its_source():
    assert politeness_for("https://rdap.nominet.uk/uk/").rate == 2.0
    assert politeness_for("https://rdap.verisign.com/com/v1/") == RATES["https://rdap.verisign.com/"]
    assert politeness_for("https://rdap.example-registry.test/") == DEFAULT
    assert politeness_for("https://rdap.nominet.uk/uk/", 0.5).source == "--rdap-rate"
    assert all(p.source for p in RATES.values())


def test_names_of_suspect_certificates_are_asked_of_the_registry_first(tmp_path, zones):
    names = [f"free{i}.com" for i in range(6)]
    with RdapServer() as registry:
        config = make_config(tmp_path, zones, registry, lookup_concurrency=1, use_cache=False)
        run(config, names, first=["free5.com"])
        order = [path.rsplit("/", 1)[-1] for _, path, _ in registry.requests]
    assert order[0] == "free5.com" and sorted(order) == sorted(names)


def test_a_lookup_stage_stopped_half_way_resumes_from_the_cache(tmp_path, zones):
    names = [f"free{i}.com" for i in range(10)]
    with RdapServer() as registry:
        config = make_config(tmp_path, zones, registry, rdap_rate=4.0)
        service = RegistrationService(config, progress=False, backoff_base=0.01)
        service.submit(names)
        deadline = time.monotonic() + 30
        while len(registry.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        service.close()  # the run is stopped with lookups still queued
        answered_first = {path.rsplit("/", 1)[-1] for _, path, _ in registry.requests}
        before = len(registry.requests)
        df, summary = run(config, names)
        asked_again = {path.rsplit("/", 1)[-1] for _, path, _ in registry.requests[before:]}
    assert set(df["status"]) == {"unregistered"} and len(df) == 10
    assert answered_first and len(answered_first) < 10
    assert not asked_again & answered_first  # what the stopped run learned was not asked again
    assert summary["cache_hits"] >= len(answered_first) - 1  # (a request in flight at the stop may be lost)


def test_the_progress_bar_shows_the_time_left_from_the_registry_s_rate(tmp_path, zones, capsys):
    names = [f"free{i}.com" for i in range(6)]
    with RdapServer() as registry:
        config = make_config(tmp_path, zones, registry, rdap_rate=4.0, use_cache=False)
        with RegistrationService(config, progress=True, backoff_base=0.01) as service:
            service.submit(names)
            service.results()
    assert "left" in capsys.readouterr().err



def test_a_root_that_never_answers_costs_one_round_of_questions_then_the_registry_answers(tmp_path, rdap):
    names = ["held.com", *(f"free{i}.com" for i in range(9))]
    with ZoneServer(tlds=("com",), behaviour={"com": DROP}) as silent_root:
        config = make_config(tmp_path, silent_root, rdap, use_cache=False)
        df, summary = run(config, names)
        root_questions = len(silent_root.asked("com"))
    assert df.loc["held.com", "status"] == "registered" and summary["by_status"]["unregistered"] == 9
    assert root_questions <= 3  # not a round per name: the TLD stays failed for the run's next minutes
