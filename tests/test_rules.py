"""The Baseline Requirements' dated rules: CRL reasonCodes (BR 7.2.2, 4.9.1.1) and validity limits (6.3.2)."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from cryptography import x509

from scanner.cli import main
from scanner.detect.revocation import detect_early_revocation, detect_revoke_reissue
from scanner.detect.rules import (
    VALIDITY_LIMITS,
    detect_crl_reason_forbidden,
    detect_validity_exceeds_limit,
    is_short_lived,
)
from scanner.enrich.revocation.crl import apply_revocations, crl_revocations, load_crl
from scanner.pipeline import load_scan
from scanner.report.appendix import appendix_frame
from scanner.report.problems import certificate_facts
from scanner.sources.crtsh_sql import reason_name
from tests.issued import issued
from tests.synth import TestCA, der, new_key, pem, utc

R = x509.ReasonFlags
DAY = 86_400


def _days(seconds: int) -> float:
    """TestCA.issue's `days` giving notAfter = notBefore + seconds (exact to the microsecond)."""
    return seconds / DAY


def _validity(days: int, extra_seconds: int = 0) -> float:
    """`days` for a BR Validity Period of days plus extra_seconds (notAfter - notBefore + 1 second)."""
    return _days(days * DAY - 1 + extra_seconds)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --- reasonCodes, through a whole `ctscan scan` of files with --crl ---------------------------------

#: serial -> (notBefore, names, revocationDate or None, reasonCode or None); each serial its own subscriber.
CASES = {
    0xA1: ("2024-05-02T08:00", ["www.unspecified-2024.com"], "2024-05-02T10:00", R.unspecified),
    0xA2: ("2019-05-02T08:00", ["www.hold-2019.com"], "2019-05-02T10:00", R.certificate_hold),
    0xA3: ("2024-05-02T08:00", ["www.hold-2024.com"], "2024-05-20T10:00", R.certificate_hold),
    0xA4: ("2022-05-02T08:00", ["www.unspecified-2022.com"], "2022-05-02T10:00", R.unspecified),
    0xA5: ("2024-05-02T08:00", ["www.no-reason-2024.com"], "2024-05-02T10:00", None),
    0xA6: ("2024-05-02T08:00", ["www.superseded-2024.com"], "2024-05-02T10:00", R.superseded),
    # Typo corrections: revoked within hours, reissued with the name fixed.
    0xB1: ("2024-06-03T09:00", ["mail.nortwind-trading.com"], "2024-06-03T13:00", None),
    0xB2: ("2024-06-03T13:20", ["mail.northwind-trading.com"], None, None),
    0xC1: ("2024-06-03T09:00", ["shop.fabrikamm.com"], "2024-06-03T13:00", R.key_compromise),
    0xC2: ("2024-06-03T13:20", ["shop.fabrikam.com"], None, None),
    0xD1: ("2022-06-03T09:00", ["vpn.contosso.com"], "2022-06-03T13:00", None),
    0xD2: ("2022-06-03T13:20", ["vpn.contoso.com"], None, None),
    # Issued on the SC-081 cut-over day with the old 398-day maximum.
    0xE1: ("2026-03-15T00:00", ["www.long-lived.com"], None, None),
}


@pytest.fixture(scope="module")
def reason_scan(tmp_path_factory) -> tuple[Path, Path, list[Path]]:
    """The cases as certificate files and one CRL, scanned twice with the same cache: (input, CRL, reports)."""
    ca = TestCA()
    tmp = tmp_path_factory.mktemp("reasons")
    src = tmp / "certs"
    src.mkdir()
    keys = {0xB: new_key(), 0xC: new_key(), 0xD: new_key()}
    revoked = []
    for serial, (nb, names, when, reason) in CASES.items():
        days = _validity(398) if serial == 0xE1 else 90
        cert = ca.issue(serial=serial, not_before=utc(nb), days=days, cn=names[0], dns=names,
                        key=keys.get(serial >> 4))
        (src / f"{serial:x}.pem").write_bytes(pem(cert))
        if when is not None:
            revoked.append((serial, utc(when), reason))
    crl = tmp / "ca.crl"
    crl.write_bytes(der(ca.crl(revoked, this_update=utc("2024-07-01T00:00"))))
    outs = []
    for run in ("first", "second"):
        out = tmp / run
        argv = ["scan", str(src), "--crl", str(crl), "--registration", "off", "--cache", str(tmp / "cache"),
                "--workers", "1", "--out", str(out), "-q"]
        assert main(argv) == 0
        outs.append(out)
    return src, crl, outs


def _findings(out: Path) -> dict[tuple[str, str], str]:
    """(serial, code) -> evidence, from the scan's findings table."""
    scan = load_scan(out)
    serial = dict(zip(scan.certs["sha256"], scan.certs["serial"]))
    return {(serial[s], c): e for s, c, e in zip(scan.findings["sha256"], scan.findings["code"],
                                                  scan.findings["evidence"])}


def test_unspecified_present_after_2023_07_15_and_certificate_hold_are_forbidden_reason_codes(reason_scan):
    found = _findings(reason_scan[2][0])
    forbidden = {serial for serial, code in found if code == "crl_reason_forbidden"}
    assert forbidden == {"a1", "a2", "a3"}
    assert "unspecified (0) present as a reasonCode" in found[("a1", "crl_reason_forbidden")]
    assert "certificateHold (6)" in found[("a2", "crl_reason_forbidden")]
    # Before SC061 the unspecified code could still be written; no reasonCode or a listed one is fine.
    assert not {("a4", "crl_reason_forbidden"), ("a5", "crl_reason_forbidden"), ("a6", "crl_reason_forbidden")} & set(found)


def test_a_typo_correction_revoked_without_a_reason_code_is_named_but_not_one_revoked_before_sc061(reason_scan):
    found = _findings(reason_scan[2][0])
    missing = {serial for serial, code in found if code == "crl_reason_missing"}
    assert missing == {"b1"}
    assert "no reasonCode" in found[("b1", "crl_reason_missing")]
    assert "no revocation reason given" in found[("b1", "revoke_reissue")]
    assert ("d1", "revoke_reissue") in found  # the 2022 pair is still a pair


def test_a_typo_correction_revoked_as_key_compromise_is_questioned_in_the_reissue_evidence(reason_scan):
    found = _findings(reason_scan[2][0])
    evidence = found[("c1", "revoke_reissue")]
    assert "revocation reason keyCompromise" in evidence and "was the key compromised?" in evidence
    assert ("c1", "crl_reason_missing") not in found


def test_the_reports_tell_an_unspecified_reason_code_from_none_and_give_every_revoked_latency(reason_scan):
    out = reason_scan[2][0]
    suspects = {r["serial"]: r for r in _rows(out / "suspects.csv")}
    assert suspects["a1"]["revocation_reason"] == "unspecified"
    assert suspects["a5"]["revocation_reason"] == ""
    listing = {r["Serial #"]: r for r in _rows(out / "appendix" / "crl_reason_forbidden.csv")}
    assert (listing["a1"]["Is revoked?"], listing["a1"]["Revocation reason"]) == ("Yes", "unspecified")
    assert listing["a3"]["Revocation reason"] == "certificateHold"
    assert listing["a1"]["Revocation latency"] == "2.0 hours"
    assert listing["a3"]["Revocation latency"] == "18.1 days"


def test_a_certificate_issued_on_the_sc081_cut_over_with_398_days_exceeds_the_200_day_limit(reason_scan):
    found = _findings(reason_scan[2][0])
    evidence = found[("e1", "validity_exceeds_limit")]
    assert "398 days" in evidence and "200-day maximum" in evidence and "2026-03-15" in evidence
    assert "SC-081" in evidence


def test_a_second_scan_with_the_same_cache_gives_the_same_findings_and_suspects(reason_scan):
    first, second = reason_scan[2]
    assert _findings(first) == _findings(second)
    assert _rows(first / "suspects.csv") == _rows(second / "suspects.csv")
    assert _rows(first / "appendix" / "crl_reason_missing.csv") == _rows(second / "appendix" / "crl_reason_missing.csv")


# --- the revocation table: an unspecified reasonCode is not a missing one ---------------------------


def test_a_crl_entry_with_unspecified_present_and_one_without_reason_stay_distinct_in_the_table(test_ca):
    certs = issued(test_ca, [(0x51, "2024-05-02T08:00", dict(dns=["a.example.com"]), None),
                             (0x52, "2024-05-02T08:00", dict(dns=["b.example.com"]), None)])
    crl = test_ca.crl([(0x51, utc("2024-05-03T00:00"), R.unspecified), (0x52, utc("2024-05-03T00:00"), None)],
                      this_update=utc("2024-05-04T00:00"))
    _, revs = crl_revocations(load_crl(der(crl)), "fetched.crl")
    out = apply_revocations(certs, revs, source="crl")  # the path --crl files and fetched CRLs share
    reasons = dict(zip(out["serial"], out["revocation_reason"]))
    assert reasons == {"51": "unspecified", "52": ""}
    assert set(detect_crl_reason_forbidden(out)["sha256"]) == set(out.loc[out["serial"] == "51", "sha256"])


def test_crtsh_crl_revoked_reason_codes_are_checked_like_a_crl_file(test_ca):
    # crt.sh's crl_revoked.reason_code is NULL when the CRL entry had none and 0 when it said unspecified.
    certs = issued(test_ca, [(0x61, "2024-05-02T08:00", dict(dns=["c.example.com"]), "2024-05-03T00:00"),
                             (0x62, "2024-05-02T08:00", dict(dns=["d.example.com"]), "2024-05-03T00:00"),
                             (0x63, "2024-05-02T08:00", dict(dns=["e.example.com"]), "2024-05-03T00:00")])
    certs["revocation_reason"] = [reason_name(0), reason_name(None), reason_name(6)]
    certs["revocation_source"] = "crtsh"
    found = detect_crl_reason_forbidden(certs)
    serial = dict(zip(certs["sha256"], certs["serial"]))
    assert sorted(serial[s] for s in found["sha256"]) == ["61", "63"]
    assert all("(crtsh)" in e for e in found["evidence"])


# --- validity limits around each cut-over -------------------------------------------------------------


def _cut_over_cases() -> list[tuple[str, int, int, bool]]:
    """(notBefore, days, extra seconds, exceeds?) at each limit's first second and the second before it."""
    cases = [("2018-02-28T23:59:59", 1000, 0, False)]  # before ballot 193 the limit was in months: not checked
    for before, rule in zip((None, *VALIDITY_LIMITS), VALIDITY_LIMITS):
        start = rule.since.strftime("%Y-%m-%dT%H:%M:%S")
        cases += [(start, rule.days, 0, False), (start, rule.days, 1, True)]
        if before is not None:  # the last second under the older, longer limit
            last = (rule.since - pd.Timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
            cases += [(last, before.days, 0, False), (last, before.days, 1, True), (start, before.days, 0, True)]
    return cases


@pytest.mark.parametrize(("not_before", "days", "extra", "exceeds"), _cut_over_cases())
def test_the_validity_limit_is_the_one_in_force_on_the_notbefore_to_the_second(test_ca, not_before, days,
                                                                               extra, exceeds):
    certs = issued(test_ca, [(0x71, not_before, dict(dns=["w.example.com"], days=_validity(days, extra)), None)])
    found = detect_validity_exceeds_limit(certs)
    assert len(found) == int(exceeds)
    if exceeds:
        detail = json.loads(found["detail"].iloc[0])
        assert detail["validity_seconds"] == days * DAY + extra


def test_the_limits_table_is_the_brs_with_its_sources():
    assert [(f"{r.since:%Y-%m-%d}", r.days) for r in VALIDITY_LIMITS] == [
        ("2018-03-01", 825), ("2020-09-01", 398), ("2026-03-15", 200), ("2027-03-15", 100), ("2029-03-15", 47)]
    assert all("SC-081" in r.source for r in VALIDITY_LIMITS[2:])


# --- Short-lived Subscriber Certificates ---------------------------------------------------------------


@pytest.fixture()
def short_lived(test_ca) -> pd.DataFrame:
    """Certificates revoked 2 hours after notBefore, either side of the short-lived limits."""
    def spec(serial, nb, days, extra=0):
        return (serial, nb, dict(dns=[f"s{serial:x}.example.com"], days=_validity(days, extra)),
                utc(nb) + timedelta(hours=2))
    return issued(test_ca, [
        spec(0x81, "2026-04-01T00:00", 7),  # short-lived from 2026-03-15
        spec(0x82, "2026-04-01T00:00", 7, 1),  # one second too long
        spec(0x83, "2025-04-01T00:00", 10),  # short-lived from 2024-03-15
        spec(0x84, "2025-04-01T00:00", 10, 1),
        spec(0x85, "2023-04-01T00:00", 10),  # before SC063 there were no short-lived certificates
    ])


def test_a_short_lived_certificate_revoked_early_is_no_early_revocation(short_lived):
    serial = dict(zip(short_lived["sha256"], short_lived["serial"]))
    assert sorted(serial[s] for s in short_lived["sha256"][is_short_lived(short_lived)]) == ["81", "83"]
    early = detect_early_revocation(short_lived, timedelta(days=7))
    assert sorted(serial[s] for s in early["sha256"]) == ["82", "84", "85"]


def test_a_short_lived_typo_certificate_still_pairs_with_its_correction(test_ca):
    key = new_key()
    certs = issued(test_ca, [
        (0x91, "2026-04-01T00:00", dict(dns=["api.tailspin-toyss.com"], days=_validity(6), key=key),
         "2026-04-01T03:00"),
        (0x92, "2026-04-01T03:10", dict(dns=["api.tailspin-toys.com"], days=_validity(6), key=key), None),
    ])
    assert is_short_lived(certs).all()
    pairs = detect_revoke_reissue(certs, timedelta(days=7), timedelta(days=2))
    assert len(pairs) == 1 and "SAN typo fixed" in pairs["evidence"].iloc[0]
    assert detect_early_revocation(certs, timedelta(days=7)).empty


def test_the_appendix_does_not_call_an_unrevoked_short_lived_certificate_planned_for_revocation(test_ca):
    certs = issued(test_ca, [
        (0x95, "2026-11-28T00:00", dict(dns=["a.example.com"], days=_validity(7)), None),
        (0x96, "2026-11-28T00:00", dict(dns=["b.example.com"], days=_validity(30)), None),
    ])
    findings = pd.DataFrame({"sha256": certs["sha256"], "code": "ip_san", "evidence": "an IP SAN"})
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)  # both still valid
    frame = appendix_frame("ip_san", findings, certificate_facts(certs, pd.DataFrame()), pd.DataFrame(), now)
    state = dict(zip(frame["Serial #"], frame["Is revoked?"]))
    assert state == {"95": "N/A", "96": "Planned"}
