"""RegistrationService end to end against loopback RDAP, WHOIS and DNS servers."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from scanner.core.config import Config
from scanner.core.records import REGISTRATION_COLUMNS
from scanner.enrich.registration import RegistrationService
from tests.loopback.registry_servers import (
    NOERROR,
    NOT_FOUND_EMPTY,
    NXDOMAIN,
    SERVFAIL,
    UNAVAILABLE,
    DnsServer,
    RdapServer,
    Reply,
    WhoisServer,
    free_port,
    rdap_file,
    whois_file,
    write_bootstrap,
)

GOOGLE = rdap_file("verisign_google.com_2021-12-17.json")
DE_FREE = "de_notfound_likexian-have-no-money-to-register.de.txt"


@pytest.fixture()
def servers():
    rdap = RdapServer({"google.com": [GOOGLE], "down.com": [UNAVAILABLE], "alsodown.com": [UNAVAILABLE]})
    whois = WhoisServer({"likexian-have-no-money-to-register.de": [whois_file(DE_FREE)]})
    dns = DnsServer({"down.com": NXDOMAIN, "alsodown.com": SERVFAIL, "google.com": NOERROR}, default=NXDOMAIN)
    with rdap, whois, dns:
        yield rdap, whois, dns


def make_config(tmp_path: Path, servers, **kw) -> Config:
    rdap, whois, dns = servers
    boot = write_bootstrap(tmp_path / "dns.json", {"com": rdap.url + "com/v1/"})
    kw.setdefault("timeout", 2.0)
    kw.setdefault("retries", 1)
    kw.setdefault("rdap_rate", 0)
    kw.setdefault("whois_rate", 0)
    kw.setdefault("cache_dir", tmp_path / "cache")
    return Config(
        out_dir=tmp_path,
        rdap_bootstrap=boot,
        whois_server=whois.address,
        dns_server=dns.address,
        **kw,
    )


def run(config: Config, names: list[str]):
    with RegistrationService(config, progress=False, backoff_base=0.01) as service:
        service.submit(names)
        df = service.results()
        return df, service.summary(), service.notice


def statuses(df) -> dict[str, tuple[str, str]]:
    return {r.domain: (r.status, r.method) for r in df.itertuples()}


def test_auto_mode_asks_the_registry_only_for_names_dns_does_not_show_delegated(tmp_path, servers):
    rdap = servers[0]
    df, summary, notice = run(
        make_config(tmp_path, servers),
        ["google.com", "nobody-has-this.com", "likexian-have-no-money-to-register.de"],
    )
    assert statuses(df) == {
        "google.com": ("registered", "delegation"),
        "nobody-has-this.com": ("unregistered", "rdap"),
        "likexian-have-no-money-to-register.de": ("unregistered", "whois"),
    }
    assert rdap.requests_for("google.com") == []
    assert list(df.columns) == list(REGISTRATION_COLUMNS)
    assert str(df["registered_at"].dtype) == "datetime64[us, UTC]"
    assert notice is None
    assert summary["by_method"] == {"delegation": 1, "rdap": 1, "whois": 1}


def test_registration_dates_all_asks_rdap_for_the_date_of_delegated_names_too(tmp_path, servers):
    df, summary, _ = run(make_config(tmp_path, servers, registration_dates="all"), ["google.com"])
    row = df.set_index("domain").loc["google.com"]
    assert (row.status, row.method, row.registered_at.year) == ("registered", "rdap", 1997)
    assert "delegated" in row.detail  # the delegation stays in the evidence
    assert summary["registration_dates"] == {"mode": "all", "asked": 1, "found": 1}


def test_a_name_not_delegated_whose_registry_fails_is_unknown_never_unregistered(tmp_path, servers):
    df, _, _ = run(make_config(tmp_path, servers), ["down.com"])
    row = df.iloc[0]
    assert (row.status, row.method) == ("unknown", "rdap")
    assert "503" in row.detail and "NXDOMAIN" in row.detail  # both steps stay in the evidence


def test_unknown_from_every_method_stays_unknown(tmp_path, servers):
    df, summary, notice = run(make_config(tmp_path, servers), ["alsodown.com"])
    row = df.iloc[0]
    assert row.status == "unknown"
    assert "503" in row.detail and "SERVFAIL" in row.detail
    assert summary["by_status"]["unregistered"] == 0
    assert notice is None  # the registry answered, badly: that is not a missing network


def test_duplicates_are_looked_up_once_and_rows_follow_submission_order(tmp_path, servers):
    rdap = servers[0]
    config = make_config(tmp_path, servers)
    with RegistrationService(config, progress=False) as service:
        service.submit(["Google.com.", "b.com"])
        service.submit(["google.com", "a.com", "b.com"])
        df = service.results()
    assert list(df["domain"]) == ["google.com", "b.com", "a.com"]
    assert len(rdap.requests_for("b.com")) == 1
    assert [q for q, _ in servers[2].queries].count("google.com") == 1


def test_a_second_run_is_served_from_the_cache(tmp_path, servers):
    rdap, dns = servers[0], servers[2]
    config = make_config(tmp_path, servers, registration_dates="all")
    names = ["google.com", "free1.com", "likexian-have-no-money-to-register.de"]
    first, _, _ = run(config, names)
    asked = (len(rdap.requests), len(dns.queries))
    second, summary, _ = run(config, names)
    assert (len(rdap.requests), len(dns.queries)) == asked
    assert summary["cache_hits"] == 3 and summary["network_lookups"] == 0
    assert statuses(second) == statuses(first)
    assert second.set_index("domain").loc["google.com", "registered_at"].year == 1997


def test_unknown_answers_are_not_cached(tmp_path, servers):
    rdap = servers[0]
    config = make_config(tmp_path, servers)
    run(config, ["alsodown.com"])
    before = len(rdap.requests_for("alsodown.com"))
    _df, summary, _ = run(config, ["alsodown.com"])
    assert summary["cache_hits"] == 0
    assert len(rdap.requests_for("alsodown.com")) > before


def test_offline_mode_answers_from_the_cache_and_never_touches_the_network(tmp_path, servers):
    rdap, whois, dns = servers
    run(make_config(tmp_path, servers), ["google.com"])
    asked = (len(rdap.requests), len(whois.queries), len(dns.queries))
    df, summary, notice = run(make_config(tmp_path, servers, offline=True), ["google.com", "new.com", "x.de"])
    assert (len(rdap.requests), len(whois.queries), len(dns.queries)) == asked
    rows = df.set_index("domain")
    assert rows.loc["google.com", "status"] == "registered"
    assert rows.loc["new.com", "status"] == "unknown" and "offline" in rows.loc["new.com", "detail"]
    assert summary["offline_unknown"] == 2
    assert notice is not None and notice.startswith("Offline: 2 domain(s)") and "unknown" in notice


def test_offline_unknowns_are_said_once_in_the_log_however_often_results_are_asked(tmp_path, servers, caplog):
    config = make_config(tmp_path, servers, offline=True)
    with caplog.at_level(logging.WARNING), RegistrationService(config, progress=False) as service:
        service.submit(["new1.com", "new2.com"])
        service.results()
        service.submit(["new3.com"])
        service.results()
        service.summary()
        notice = service.notice
    assert notice is not None and notice.startswith("Offline: 3 domain(s)")
    assert caplog.text.count("Offline:") == 1


def test_recorded_answers_of_an_earlier_run_are_used_before_cache_and_network(tmp_path, servers):
    rdap = servers[0]
    first, _, _ = run(
        make_config(tmp_path, servers, use_cache=False), ["google.com", "free2.com", "alsodown.com"]
    )
    recorded = tmp_path / "registrations.csv"
    first.to_csv(recorded, index=False)
    asked = len(rdap.requests)
    config = make_config(tmp_path, servers, use_cache=False, offline=True, registry_answers=(recorded,))
    df, summary, _ = run(config, ["google.com", "free2.com", "alsodown.com"])
    assert len(rdap.requests) == asked
    assert statuses(df)["google.com"] == ("registered", "delegation")
    assert statuses(df)["free2.com"] == ("unregistered", "rdap")
    assert statuses(df)["alsodown.com"][0] == "unknown"  # a recorded unknown is no answer
    assert summary["recorded_answers"] == 2


def test_mode_off_marks_everything_unknown_without_asking(tmp_path, servers):
    rdap, whois, dns = servers
    df, _summary, _ = run(make_config(tmp_path, servers, registration="off"), ["google.com", "x.de"])
    assert set(df["status"]) == {"unknown"} and set(df["method"]) == {"none"}
    assert rdap.requests == [] and whois.queries == [] and dns.queries == []


def test_rdap_only_mode_never_falls_back(tmp_path, servers):
    _, whois, dns = servers
    df, _, _ = run(make_config(tmp_path, servers, registration="rdap"), ["down.com", "x.de"])
    assert set(df["status"]) == {"unknown"}
    assert whois.queries == [] and dns.queries == []


def test_dns_only_mode_asks_only_dns(tmp_path, servers):
    rdap = servers[0]
    df, _, _ = run(make_config(tmp_path, servers, registration="dns"), ["google.com", "free3.com"])
    assert statuses(df) == {"google.com": ("registered", "dns"), "free3.com": ("unregistered", "dns")}
    assert rdap.requests == []


def test_no_network_gives_one_plain_notice_and_unknowns(tmp_path, caplog):
    dead = f"127.0.0.1:{free_port()}"
    boot = write_bootstrap(tmp_path / "dns.json", {"com": f"http://{dead}/"})
    config = Config(
        out_dir=tmp_path,
        rdap_bootstrap=boot,
        whois_server=dead,
        dns_server=f"127.0.0.1:{free_port()}",
        timeout=0.5,
        retries=0,
        use_cache=False,
    )
    with caplog.at_level(logging.WARNING):
        df, _summary, notice = run(config, ["a.com", "b.com", "c.de"])
    assert set(df["status"]) == {"unknown"}
    assert notice is not None and notice.startswith("No network: 3 domain")
    assert caplog.text.count("No network") == 1


def test_submit_returns_at_once_while_lookups_run_in_the_background(tmp_path):
    with RdapServer({"slow.com": [Reply(404, b"", delay=1.5)]}) as rdap:
        boot = write_bootstrap(tmp_path / "dns.json", {"com": rdap.url})
        config = Config(out_dir=tmp_path, rdap_bootstrap=boot, rdap_rate=0, use_cache=False)
        with RegistrationService(config, progress=False) as service:
            start = time.monotonic()
            service.submit(["slow.com"])
            returned = time.monotonic() - start
            df = service.results()
    assert returned < 1.0
    assert df.iloc[0].status == "unregistered"


def test_progress_bar_is_silent_when_switched_off(tmp_path, servers, capsys):
    run(make_config(tmp_path, servers), ["google.com"])
    assert capsys.readouterr().err == ""


def test_an_empty_run_gives_an_empty_table_with_the_schema(tmp_path, servers):
    df, summary, notice = run(make_config(tmp_path, servers), [])
    assert df.empty and list(df.columns) == list(REGISTRATION_COLUMNS)
    assert summary["domains"] == 0 and notice is None


def test_default_404_is_unregistered_only_from_the_registry_itself(tmp_path):
    with RdapServer(default=NOT_FOUND_EMPTY) as rdap:
        boot = write_bootstrap(tmp_path / "dns.json", {"com": rdap.url})
        config = Config(
            out_dir=tmp_path, rdap_bootstrap=boot, rdap_rate=0, use_cache=False, registration="rdap"
        )
        df, _, _ = run(config, ["free4.com", "x.zz"])
    assert statuses(df) == {"free4.com": ("unregistered", "rdap"), "x.zz": ("unknown", "rdap")}


def test_registered_answers_are_kept_30_days_and_unregistered_ones_1_day(tmp_path, servers):
    import sqlite3

    from scanner.core.cache import CACHE_FILENAME

    config = make_config(tmp_path, servers)
    run(config, ["google.com", "free5.com", "alsodown.com"])
    conn = sqlite3.connect(str(config.cache_dir / CACHE_FILENAME))
    rows = dict(conn.execute("SELECT key, (expires_at - stored_at) / 86400.0 FROM entries").fetchall())
    conn.close()
    assert rows["google.com"] == pytest.approx(30)
    assert rows["free5.com"] == pytest.approx(1)
    assert "alsodown.com" not in rows


def test_progress_bar_goes_to_stderr_when_asked(tmp_path, servers, capsys):
    with RegistrationService(make_config(tmp_path, servers), progress=True) as service:
        service.submit(["google.com"])
        service.results()
    err = capsys.readouterr().err
    assert "registration" in err and "1/1" in err


def test_closing_early_abandons_slow_lookups_instead_of_waiting(tmp_path):
    with RdapServer({"slow.com": [Reply(404, b"", delay=5)]}) as rdap:
        boot = write_bootstrap(tmp_path / "dns.json", {"com": rdap.url})
        config = Config(out_dir=tmp_path, rdap_bootstrap=boot, rdap_rate=0, use_cache=False, timeout=10)
        service = RegistrationService(config, progress=False)
        service.submit(["slow.com"])
        time.sleep(0.2)
        start = time.monotonic()
        service.close()
        assert time.monotonic() - start < 2


def test_a_dns_only_unregistered_answer_in_the_cache_is_not_taken_as_the_registry_s_word_in_auto_mode(tmp_path):
    # --registration dns calls NXDOMAIN unregistered (the user chose DNS alone); a registered name on
    # clientHold gives NXDOMAIN too. Auto mode calls a name unregistered only when the registry says so,
    # so a later auto run on the same cache must ask the registry, which knows the name.
    held = rdap_file("verisign_google.com_2021-12-17.json")
    with RdapServer({"held.com": [held]}) as rdap, DnsServer({}, default=NXDOMAIN) as dns:
        boot = write_bootstrap(tmp_path / "dns.json", {"com": rdap.url})
        common = dict(out_dir=tmp_path, rdap_bootstrap=boot, dns_server=dns.address, rdap_rate=0, timeout=2.0,
                      retries=0, cache_dir=tmp_path / "cache")
        first, _, _ = run(Config(registration="dns", **common), ["held.com"])
        assert statuses(first) == {"held.com": ("unregistered", "dns")}
        again, _, _ = run(Config(registration="auto", **common), ["held.com"])
        assert statuses(again) == {"held.com": ("registered", "rdap")}
        assert len(rdap.requests_for("held.com")) == 1
        # and the same cache gives the same answer on a rerun, from the cache
        third, summary, _ = run(Config(registration="auto", **common), ["held.com"])
    assert statuses(third) == {"held.com": ("registered", "rdap")} and summary["cache_hits"] == 1


def test_a_registry_whose_rdap_refuses_with_403_is_asked_over_whois_in_auto_mode(tmp_path):
    # An RDAP service that answers 403 (or a web page, or 400 for the name) says nothing; the registry's
    # WHOIS does: the real Verisign "No match" for a name not in the zone, the real registered answer.
    with RdapServer(default=Reply(403, b'{"errorCode":403,"title":"Forbidden"}')) as rdap, \
            WhoisServer({"likexian-have-no-money-to-register.com": [whois_file(
                "com_notfound_likexian-have-no-money-to-register.com.txt")],
                "urlowl.com": [whois_file("com_urlowl.com.txt")]}) as whois, \
            DnsServer({}, default=NXDOMAIN) as dns:
        boot = write_bootstrap(tmp_path / "dns.json", {"com": rdap.url})
        config = Config(out_dir=tmp_path, rdap_bootstrap=boot, dns_server=dns.address, whois_server=whois.address,
                        rdap_rate=0, whois_rate=0, timeout=2.0, retries=0, use_cache=False)
        df, summary, notice = run(config, ["likexian-have-no-money-to-register.com", "urlowl.com"])
    assert statuses(df) == {"likexian-have-no-money-to-register.com": ("unregistered", "whois"),
                            "urlowl.com": ("registered", "whois")}
    detail = df.set_index("domain").loc["urlowl.com", "detail"]
    assert "403" in detail and notice is None
