"""revoke_reissue pairs as the incidents happened: a replacement any time after the original, never an older one."""

from __future__ import annotations

import json
from datetime import timedelta

import pandas as pd

from scanner.detect.revocation import detect_revoke_reissue
from tests.issued import issued
from tests.synth import new_key

# The defaults of --window and --reissue-window.
WEEK, TWO_DAYS = timedelta(days=7), timedelta(days=2)


def _sha_by_serial(df: pd.DataFrame) -> dict[int, str]:
    return {int(s, 16): sha for s, sha in zip(df["serial"], df["sha256"])}


def _pairs(df: pd.DataFrame, found: pd.DataFrame) -> set[tuple[int, int]]:
    serial = {sha: s for s, sha in _sha_by_serial(df).items()}
    return {(serial[a], serial[b]) for a, b in zip(found["sha256"], found["related_sha256"])}


def test_a_replacement_issued_three_and_a_half_days_before_the_revocation_is_paired_with_the_default_windows(test_ca):
    # Sectigo (bug 1649961): the corrected certificate came about 25 June, the original was revoked
    # 29 June 02:37 UTC, in a batch.
    key, names = new_key(), ["www.alpha-data.com"]
    df = issued(test_ca, [
        (0x5001, "2020-06-24T09:00", dict(org="Alpha Dta GmbH", dns=names, key=key), "2020-06-29T02:37:40"),
        (0x5002, "2020-06-25T15:10", dict(org="Alpha Data GmbH", dns=names, key=key), None),
    ])
    found = detect_revoke_reissue(df, WEEK, TWO_DAYS)
    assert _pairs(df, found) == {(0x5001, 0x5002)}
    detail = json.loads(found.iloc[0]["detail"])
    assert detail["change"] == "subject_changed"
    assert detail["reissue_offset_seconds"] == -(3 * 86400 + 11 * 3600 + 27 * 60 + 40)
    assert "the replacement was issued 3.5 days before the revocation" in found.iloc[0]["evidence"]


def test_a_certificate_older_than_the_revoked_one_is_never_its_replacement(test_ca):
    names = ["api.example-corp.com"]
    df = issued(test_ca, [
        (0x5101, "2021-05-02T08:00", dict(org="Example Corp", dns=names), None),  # issued the day before A
        (0x5102, "2021-05-03T08:00", dict(org="Example Corp", dns=names), "2021-05-03T10:00"),
    ])
    assert detect_revoke_reissue(df, WEEK, TWO_DAYS).empty


def test_a_routine_renewal_of_another_name_is_not_taken_for_the_replacement_of_an_early_revoked_certificate(
        test_ca):
    org = "Acme Tools GmbH"
    df = issued(test_ca, [
        # vpn.acme-tools.com is revoked early (a key compromise, say) and never reissued
        (0x5201, "2021-03-01T08:00", dict(org=org, dns=["vpn.acme-tools.com"]), "2021-03-02T08:00"),
        # shop.acme-tools.com is renewed as usual the same day; the old one is never revoked
        (0x5202, "2020-03-03T08:00", dict(org=org, dns=["shop.acme-tools.com"]), None),
        (0x5203, "2021-03-02T09:00", dict(org=org, dns=["shop.acme-tools.com"]), None),
    ])
    assert detect_revoke_reissue(df, WEEK, TWO_DAYS).empty


def test_a_subscriber_with_300_certificates_gets_exactly_the_pairs_of_its_replacements(test_ca):
    org, t0, six_hours = "Contoso Hosting SL", pd.Timestamp("2022-01-03T00:00Z"), pd.Timedelta(hours=6)

    def host(i):
        return dict(org=org, dns=[f"h{i:03d}.contoso-hosting.com"])

    nb = {i: t0 + i * six_hours for i in range(300)}  # one certificate every six hours, each for its own host
    revoked = {
        10: nb[10] + pd.Timedelta(days=5),  # replaced 1.5 days after issuance, 3.5 days before its revocation
        100: nb[100] + pd.Timedelta(hours=2),  # replaced 30 minutes after its revocation
        200: nb[200] + pd.Timedelta(days=1),  # revoked early, never replaced
        150: nb[150] + pd.Timedelta(hours=1),  # revoked early; only an older certificate for its host exists
        60: nb[60] + pd.Timedelta(days=30),  # superseded a day after its renewal: a late revocation
    }
    specs = [(0x6000 + i, nb[i], host(i), revoked.get(i)) for i in range(300)]
    specs += [
        (0x7010, nb[10] + pd.Timedelta(hours=36), host(10), None),
        (0x7100, revoked[100] + pd.Timedelta(minutes=30), host(100), None),
        (0x7150, nb[150] - pd.Timedelta(days=1), host(150), None),
        (0x7060, nb[60] + pd.Timedelta(days=29), host(60), None),
        (0x7050, nb[50] + pd.Timedelta(days=2), host(50), None),  # a renewal while h050's first lives, no revocation
    ]
    df = issued(test_ca, specs)
    found = detect_revoke_reissue(df, WEEK, TWO_DAYS)
    assert _pairs(df, found) == {(0x600A, 0x7010), (0x6064, 0x7100)}
    assert {json.loads(d)["change"] for d in found["detail"]} == {"same_content"}
