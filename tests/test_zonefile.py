"""--zone-file: TLD zone files (plain or gzip master files, as CZDS publishes them) read as a stream.

Names delegated in a zone are registered; a name missing from it is not thereby unregistered.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from scanner.core.config import Config
from scanner.enrich.registration import RegistrationService
from scanner.enrich.zonefile import read_zone_files
from tests.loopback.registry_servers import RdapServer, rdap_file, write_bootstrap
from tests.loopback.registry_zones import ZoneServer

CZDS_LINES = [
    "com.\t900\tin\tsoa\ta.gtld-servers.net.\tnstld.verisign-grs.com.\t1764590400\t1800\t900\t604800\t86400",
    "com.\t172800\tin\tns\ta.gtld-servers.net.",
    "google.com.\t172800\tin\tns\tns1.google.com.",
    "google.com.\t172800\tin\tns\tns2.google.com.",
    "ns1.google.com.\t172800\tin\ta\t216.239.32.10",
    "onlyglue.com.\t172800\tin\tds\t12345 8 2 abcdef",
]


def czds_zone(path: Path, extra_names: int = 2000) -> Path:
    """A gzip zone in CZDS layout: the SOA, a few real-looking lines, and many filler delegations."""
    with gzip.open(path, "wt") as out:
        out.write("\n".join(CZDS_LINES) + "\n")
        for i in range(extra_names):
            out.write(f"filler{i}.com.\t172800\tin\tns\tns1.filler-dns.net.\n")
    return path


def hand_written_zone(path: Path) -> Path:
    """A plain zone as a person writes one: $ORIGIN, relative names, @, blank owners, comments, parentheses."""
    path.write_text(
        "$ORIGIN org.\n"
        "$TTL 86400\n"
        "@ IN SOA a0.org-servers.test. admin.org. (\n"
        "     2026120101 ; serial\n"
        "     7200 900 1209600 86400 )\n"
        "; a comment line\n"
        "Example IN NS a.iana-servers.net. ; relative, upper case\n"
        "        IN NS b.iana-servers.net.\n"
        "wikipedia.org. 3600 IN NS ns0.wikimedia.org.\n"
        "hosted 3600 IN NS ns1.hosted\n"
        "parenthesised IN NS (\n"
        "   ns.elsewhere.test. )\n"
    )
    return path


def test_a_czds_gzip_zone_gives_the_wanted_delegated_names_with_ns_and_serial(tmp_path):
    zone = czds_zone(tmp_path / "com.txt.gz")
    read = read_zone_files([zone], {"google.com", "onlyglue.com", "not-there.com", "filler7.com"})
    assert set(read.hits) == {"google.com", "filler7.com"}  # a DS alone, or glue, is no delegation
    hit = read.hits["google.com"]
    assert hit.nameservers == ("ns1.google.com", "ns2.google.com") and hit.serial == "1764590400"
    assert "zone file com.txt.gz" in hit.detail() and "SOA serial 1764590400" in hit.detail()
    # every line was read, but only the wanted names were kept
    assert read.owners >= 2000 and len(read.hits) == 2


def test_a_hand_written_zone_with_origin_relative_names_and_comments_is_read(tmp_path):
    zone = hand_written_zone(tmp_path / "org.zone")
    read = read_zone_files([zone], {"example.org", "wikipedia.org", "hosted.org", "parenthesised.org"})
    assert read.hits["example.org"].nameservers == ("a.iana-servers.net", "b.iana-servers.net")
    assert read.hits["wikipedia.org"].nameservers == ("ns0.wikimedia.org",)
    assert read.hits["hosted.org"].nameservers == ("ns1.hosted.org",)
    assert "parenthesised.org" not in read.hits  # skipped past, never misread


def test_a_cut_gzip_zone_keeps_what_was_read_and_says_so(tmp_path):
    whole = czds_zone(tmp_path / "whole.gz", extra_names=20000).read_bytes()
    cut = tmp_path / "cut.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    read = read_zone_files([cut], {"google.com", "filler19999.com"})
    assert "google.com" in read.hits and "filler19999.com" not in read.hits
    assert read.unreadable and "cut.gz" in read.unreadable[0]


@pytest.fixture()
def world(tmp_path):
    held = rdap_file("verisign_google.com_2021-12-17.json")
    with ZoneServer(tlds=("com",), delegated={"delegated-only-in-dns.com": ["ns1.x.test"]}) as zones, \
            RdapServer({"registered-elsewhere.com": [held]}) as rdap:
        boot = write_bootstrap(tmp_path / "dns.json", {"com": rdap.url})
        config = Config(out_dir=tmp_path, rdap_bootstrap=boot, dns_root=zones.address, rdap_rate=0, timeout=0.5,
                        retries=1, cache_dir=tmp_path / "cache", zone_files=(czds_zone(tmp_path / "com.gz"),))
        yield config, zones, rdap


def lookup(config: Config, names: list[str]):
    with RegistrationService(config, progress=False, backoff_base=0.01) as service:
        service.submit(names)
        return service.results().set_index("domain"), service.summary()


def test_names_in_a_zone_file_are_registered_without_a_dns_question_and_the_rest_go_on(world):
    config, zones, rdap = world
    names = ["google.com", "filler3.com", "delegated-only-in-dns.com", "registered-elsewhere.com", "free.com"]
    df, summary = lookup(config, names)
    got = {n: (r.status, r.method) for n, r in df.iterrows()}
    assert got == {
        "google.com": ("registered", "zone-file"),
        "filler3.com": ("registered", "zone-file"),
        # missing from the zone file is not unregistered: the delegation check, then the registry, decide
        "delegated-only-in-dns.com": ("registered", "delegation"),
        "registered-elsewhere.com": ("registered", "rdap"),
        "free.com": ("unregistered", "rdap"),
    }
    assert zones.asked("google.com") == [] and rdap.requests_for("google.com") == []
    assert summary["settled_by"]["zone_file"] == 2 and summary["zone_files"]["found"] == 2
    assert "ns1.google.com" in df.loc["google.com", "detail"]


def test_a_zone_file_run_twice_with_its_cache_gives_the_same_answers(world):
    config, zones, rdap = world
    names = ["google.com", "registered-elsewhere.com", "free.com"]
    first, _ = lookup(config, names)
    asked = (len(zones.queries), len(rdap.requests))
    second, summary = lookup(config, names)
    assert second[["status", "method"]].equals(first[["status", "method"]])
    assert (len(zones.queries), len(rdap.requests)) == asked and summary["cache_hits"] == 3


def test_offline_a_zone_file_still_answers_and_nothing_goes_on_the_network(world):
    from dataclasses import replace

    config, zones, rdap = world
    df, summary = lookup(replace(config, offline=True, use_cache=False), ["google.com", "free.com"])
    assert (df.loc["google.com", "status"], df.loc["google.com", "method"]) == ("registered", "zone-file")
    assert df.loc["free.com", "status"] == "unknown" and "offline" in df.loc["free.com", "detail"]
    assert zones.queries == [] and rdap.requests == [] and summary["offline_unknown"] == 1


def test_registration_dates_all_asks_the_registry_for_the_date_of_a_zone_file_name(world):
    from dataclasses import replace

    config, _zones, rdap = world
    df, summary = lookup(replace(config, registration_dates="all", use_cache=False), ["google.com"])
    assert rdap.requests_for("google.com")  # its date was asked for
    assert summary["registration_dates"]["asked"] == 1
    # this registry answers 404: the zone's own delegation outweighs it, and the evidence says so
    row = df.loc["google.com"]
    assert (row.status, row.method) == ("registered", "zone-file") and "no registration date" in row.detail


def test_a_relative_origin_is_placed_under_the_current_one_and_a_parenthesised_soa_gives_its_serial(tmp_path):
    # RFC 1035 5.1: "$ORIGIN sub" under example. is sub.example.; read as "sub." it put qux.sub.example's
    # delegation on a name of another TLD (qux.sub) and lost the real one.
    zone = tmp_path / "example.zone"
    zone.write_text(
        "$ORIGIN example.\n$TTL 86400\n"
        "@ IN SOA a.nic.example. hostmaster.nic.example. ( 2024010101 ; serial\n"
        "    3600 900 604800 86400 )\n"
        "@ IN NS a.nic.example.\n"
        "$ORIGIN sub\n"
        "qux IN NS ns.qux.example.\n"
    )
    read = read_zone_files([zone], ["qux.sub.example", "qux.sub"])
    assert set(read.hits) == {"qux.sub.example"}
    assert read.hits["qux.sub.example"].serial == "2024010101"


def test_a_unicode_name_is_looked_up_by_its_a_label_never_by_its_ascii_letters_alone(tmp_path):
    # "bücher.example" with its ü dropped is "bcher.example", another name with its own delegation
    zone = tmp_path / "example.zone"
    zone.write_text("bcher.example.\t86400\tin\tns\tns.other.example.\n"
                    "xn--bcher-kva.example.\t86400\tin\tns\tns.books.example.\n")
    read = read_zone_files([zone], ["bücher.example"])
    assert read.hits["bücher.example"].nameservers == ("ns.books.example",)
