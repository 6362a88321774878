"""unregistered_domain, registered_after_issuance, name-kind detectors and the score, over real certificates."""

from __future__ import annotations

import json

from scanner.core.records import FINDING_COLUMNS, REGISTRATION_COLUMNS, Finding, frame_from_rows
from scanner.detect.names import detect_name_kinds
from scanner.detect.registration import detect_registered_after_issuance, detect_unregistered
from scanner.detect.score import build_suspects
from scanner.parse.certs import parse_der, records_frame
from scanner.parse.domains import name_table
from tests.synth import der, utc


def _certs(test_ca, specs):
    return records_frame([parse_der(der(test_ca.issue(serial=s, not_before=utc(nb), dns=dns, ips=ips)))
                          for s, nb, dns, ips in specs])


def _regs(rows):
    return frame_from_rows([dict(domain=d, status=s, method="rdap", server="http://127.0.0.1/", detail="",
                                 checked_at=utc("2024-01-01T00:00"), registered_at=r) for d, s, r in rows],
                           REGISTRATION_COLUMNS)


def test_only_registry_confirmed_unregistered_domains_are_flagged_never_unknown(test_ca):
    certs = _certs(test_ca, [(1, "2020-01-01T00:00", ["mail.cuatis.net", "www.unknown-status.com"], [])])
    regs = _regs([("cuatis.net", "unregistered", None), ("unknown-status.com", "unknown", None)])
    f = detect_unregistered(certs, name_table(certs), regs)
    assert list(f["name"]) == ["mail.cuatis.net"]
    assert "cuatis.net is not registered" in f.iloc[0]["evidence"]


def test_domain_registered_after_notbefore_is_flagged_and_one_registered_before_is_not(test_ca):
    certs = _certs(test_ca, [(1, "2020-05-04T09:00", ["www.new-brand-shop.com"], []),
                             (2, "2020-05-04T09:00", ["www.old-brand.com"], [])])
    regs = _regs([("new-brand-shop.com", "registered", utc("2020-05-20T16:41")),
                  ("old-brand.com", "registered", utc("2001-01-01T00:00"))])
    f = detect_registered_after_issuance(certs, name_table(certs), regs)
    assert list(f["name"]) == ["www.new-brand-shop.com"]
    assert json.loads(f.iloc[0]["detail"])["registered_at"] == "2020-05-20T16:41:00Z"


def test_ip_in_dnsname_internal_and_invalid_names_each_get_their_own_code(test_ca):
    certs = _certs(test_ca, [(1, "2020-04-01T12:00", ["vpn.contoso-corp.com", "10.20.30.40", "vpn.contoso.internal",
                                                       "bad_label-.example.com"], ["192.0.2.10"])])
    f = detect_name_kinds(name_table(certs))
    got = dict(zip(f["name"], f["code"]))
    assert got == {"10.20.30.40": "ip_san", "192.0.2.10": "ip_san", "vpn.contoso.internal": "internal_name",
                   "bad_label-.example.com": "invalid_dns_name"}


def test_combined_evidence_outranks_a_lone_weak_signal(test_ca):
    certs = _certs(test_ca, [(1, "2020-01-01T00:00", ["a.example.com"], []), (2, "2020-01-01T00:00", ["b.example.com"], [])])
    a, b = certs["sha256"]
    findings = frame_from_rows([
        Finding(b, "early_revocation", "revoked early").as_row(),
        Finding(a, "unregistered_domain", "x unregistered").as_row(),
        Finding(a, "typo_neighbour", "x typo", detail=json.dumps({"neighbour_source": "subject_o"})).as_row(),
        Finding(a, "early_revocation", "revoked early").as_row(),
    ], FINDING_COLUMNS)
    s = build_suspects(certs, findings)
    assert list(s["sha256"]) == [a, b]
    assert s.iloc[0]["signals"].split(";")[0] == "unregistered_domain"
    assert s.iloc[0]["score"] == 40 + 25 + 10 + 10  # weights + the own-name typo bonus
    assert s.iloc[1]["score"] == 10


def test_no_findings_means_no_suspects_but_the_right_columns(test_ca):
    certs = _certs(test_ca, [(1, "2020-01-01T00:00", ["a.example.com"], [])])
    s = build_suspects(certs, frame_from_rows([], FINDING_COLUMNS))
    assert s.empty and list(s.columns)[:12] == ["sha256", "crtsh_url", "serial", "subject_o", "subject_cn", "sans",
                                                "not_before", "not_after", "revoked_at", "signals", "score", "evidence"]


def test_a_certificate_with_thousands_of_bad_sans_keeps_a_readable_evidence_cell(test_ca):
    names = [f"www.unreg{i}.com" for i in range(2000)]
    certs = _certs(test_ca, [(1, "2020-01-01T00:00", names, [])])
    regs = _regs([(f"unreg{i}.com", "unregistered", None) for i in range(2000)])
    findings = detect_unregistered(certs, name_table(certs), regs)
    assert len(findings) == 2000  # every SAN is still its own finding in the per-problem list
    evidence = build_suspects(certs, findings).iloc[0]["evidence"]
    assert evidence.endswith("(and 1997 more of this kind)") and len(evidence) < 2000


def test_real_netlock_certificate_with_a_utf8_dnsname_is_flagged_invalid(real_data):
    from scanner.sources.base import RawCert
    from scanner.sources.files import read_files

    [item] = [i for i in read_files([real_data / "cryptography_vectors/x509/utf8-dnsname.pem"]) if isinstance(i, RawCert)]
    certs = records_frame([parse_der(item.der)])
    f = detect_name_kinds(name_table(certs))
    assert set(f["code"]) == {"invalid_dns_name"}
    assert "non-ASCII" in f.iloc[0]["evidence"]
    assert len(f) == 2  # biztosítás.hu and its wildcard, not the A-label forms


def test_a_legacy_certificate_naming_its_host_only_in_the_cn_is_checked_and_a_person_cn_is_not(test_ca):
    legacy = parse_der(der(test_ca.issue(serial=1, not_before=utc("2012-01-01T00:00"), cn="www.cuatis.net")))
    person = parse_der(der(test_ca.issue(serial=2, not_before=utc("2012-01-01T00:00"), cn="Ana Lopes")))
    certs = records_frame([legacy, person])
    regs = _regs([("cuatis.net", "unregistered", None)])
    names = name_table(certs)
    assert list(names["raw"]) == ["www.cuatis.net"]
    assert list(detect_unregistered(certs, names, regs)["name"]) == ["www.cuatis.net"]
    assert detect_name_kinds(names).empty  # "Ana Lopes" is not flagged as an invalid DNS name


def test_registered_after_issuance_says_only_that_the_current_registration_began_later(test_ca):
    certs = _certs(test_ca, [(1, "2020-05-04T09:00", ["www.new-brand-shop.com"], [])])
    regs = _regs([("new-brand-shop.com", "registered", utc("2020-05-20T16:41"))])
    evidence = detect_registered_after_issuance(certs, name_table(certs), regs).iloc[0]["evidence"]
    assert ("the current registration of new-brand-shop.com began 2020-05-20T16:41:00Z, after this certificate's "
            "notBefore 2020-05-04T09:00:00Z") in evidence
    assert "a registration of that time has lapsed since" in evidence
    assert "did not exist" not in evidence  # RDAP dates the current registration, not the name's history


def test_an_unregistered_domain_on_a_long_expired_certificate_scores_lower_than_on_a_live_one_and_says_so(test_ca):
    # The registry was asked on 2024-01-01 (_regs): one certificate was valid then, the other expired in 2020.
    certs = _certs(test_ca, [(1, "2023-06-01T00:00", ["www.cuatis-live.com"], []),
                             (2, "2019-01-01T00:00", ["www.cuatis-old.com"], [])])
    live, old = certs["sha256"]
    regs = _regs([("cuatis-live.com", "unregistered", None), ("cuatis-old.com", "unregistered", None)])
    findings = detect_unregistered(certs, name_table(certs), regs)
    assert set(findings["code"]) == {"unregistered_domain"}  # the code stays; only its weight changes
    by_sha = dict(zip(findings["sha256"], findings["evidence"]))
    assert ("checked 2024-01-01T00:00:00Z, while the certificate was still unexpired (notAfter 2024-05-31T00:00:00Z)"
            in by_sha[live])
    assert "checked 2024-01-01T00:00:00Z, 1461.0 days after the certificate expired (notAfter 2020-01-01T00:00:00Z)" \
        in by_sha[old]
    assert "says little about the day it was issued" in by_sha[old]
    assert {json.loads(d)["unexpired_when_checked"] for d in findings["detail"]} == {True, False}
    scores = dict(zip(*build_suspects(certs, findings)[["sha256", "score"]].T.values))
    assert scores[live] == 40.0
    assert scores[old] == 10.0 < scores[live]
