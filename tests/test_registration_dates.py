"""--registration-dates in a whole scan: RDAP dates for the flagged certificates' names, or for every name.

The delegation check settles delegated names without a date; registered_after_issuance needs one.
Against a loopback root/TLD DNS server and a loopback RDAP registry, through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.loopback.registry_servers import RDAP_DIR, RdapServer, Reply, write_bootstrap
from tests.loopback.registry_zones import ZoneServer


def registered_days_ago(name: str, days: int) -> Reply:
    """A registry's record of a name whose current registration began `days` ago."""
    from datetime import datetime, timedelta, timezone

    doc = json.loads((RDAP_DIR / "verisign_google.com_2021-12-17.json").read_bytes())
    doc["ldhName"] = name.upper()
    when = (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc["events"] = [{"eventAction": "registration", "eventDate": when}]
    return Reply(200, json.dumps(doc).encode())


@pytest.fixture()
def scan_world(tmp_path):
    """Two certificates issued 30 days ago for names registered 2 days ago; the first one revoked."""
    from datetime import datetime, timedelta, timezone

    from cryptography import x509

    from tests.synth import TestCA, der, pem

    now = datetime.now(timezone.utc).replace(microsecond=0)
    ca = TestCA(name="ctscan Registration Dates CA")
    certs = tmp_path / "certs"
    certs.mkdir()
    for serial, name in ((1, "www.revoked-one.com"), (2, "www.quiet-one.com")):
        cert = ca.issue(serial=serial, not_before=now - timedelta(days=30), days=90, dns=[name])
        (certs / f"{serial}.pem").write_bytes(pem(cert))
    crl = tmp_path / "ca.crl"
    crl.write_bytes(der(ca.crl([(1, now - timedelta(days=29), x509.ReasonFlags.superseded)],
                               this_update=now - timedelta(hours=1))))
    delegated = {"revoked-one.com": ["ns1.x.test"], "quiet-one.com": ["ns1.x.test"]}
    script = {"revoked-one.com": [registered_days_ago("revoked-one.com", 2)],
              "quiet-one.com": [registered_days_ago("quiet-one.com", 2)]}
    with ZoneServer(tlds=("com",), delegated=delegated) as zones, RdapServer(script) as rdap:
        boot = write_bootstrap(tmp_path / "dns.json", {"com": rdap.url})
        yield certs, crl, zones, rdap, boot


def scan(tmp_path: Path, world, out: str, *extra: str) -> dict[str, set[str]]:
    import csv

    from scanner.cli import main

    certs, crl, zones, _rdap, boot = world
    code = main(["scan", str(certs), "--crl", str(crl), "--dns-root", zones.address, "--rdap-bootstrap", str(boot),
                 "--rdap-rate", "0", "--timeout", "1", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / out),
                 "-q", "--no-progress", *extra])
    assert code == 0
    with open(tmp_path / out / "suspects.csv", newline="") as fh:
        return {r["sans"]: set(r["signals"].split(";")) for r in csv.DictReader(fh)}


def test_flagged_dates_are_fetched_only_for_suspect_certificates_and_find_registered_after_issuance(
        tmp_path, scan_world):
    rdap = scan_world[3]
    signals = scan(tmp_path, scan_world, "flagged")
    assert "registered_after_issuance" in signals["www.revoked-one.com"]
    assert "www.quiet-one.com" not in signals  # no other signal: its date was not asked (README: what flagged leaves out)
    assert len(rdap.requests_for("revoked-one.com")) == 1 and rdap.requests_for("quiet-one.com") == []
    summary = json.loads((tmp_path / "flagged" / "summary.json").read_text())
    assert summary["lookups"]["registration_dates"] == {"mode": "flagged", "asked": 1, "found": 1}
    # the same scan again, with its cache: the same suspects, nothing asked again
    asked = len(rdap.requests)
    assert scan(tmp_path, scan_world, "again") == signals
    assert len(rdap.requests) == asked


def test_all_dates_check_every_certificate_for_registered_after_issuance(tmp_path, scan_world):
    signals = scan(tmp_path, scan_world, "all", "--registration-dates", "all")
    assert "registered_after_issuance" in signals["www.revoked-one.com"]
    assert "registered_after_issuance" in signals["www.quiet-one.com"]
