"""early_revocation and revoke_reissue over real certificates from a throwaway CA."""

from __future__ import annotations

import json
from datetime import timedelta

import pandas as pd
import pytest

from scanner.detect.revocation import detect_early_revocation, detect_revoke_reissue
from tests.issued import issued
from tests.synth import new_key

WEEK, TWO_DAYS = timedelta(days=7), timedelta(days=2)


def _by_serial(df):
    return {r["serial"]: r for _, r in df.iterrows()}


@pytest.fixture()
def cualtis(test_ca):
    key = new_key()
    org = "CUALTIS S.L.U"
    return issued(test_ca, [
        (0x1001, "2018-11-05T09:12", dict(org=org, cn="mail.cualtis.net", dns=["mail.cualtis.net"], key=key), None),
        (0x1002, "2019-11-12T12:17", dict(org=org, cn="mail.cuatis.net", dns=["mail.cuatis.net"], key=key),
         "2019-11-12T16:55"),
        (0x1003, "2019-11-12T17:18", dict(org=org, cn="mail.cualtis.net", dns=["mail.cualtis.net"], key=key), None),
        # an unrelated subscriber issued in the same minutes must not be taken for the reissue
        (0x1004, "2019-11-12T17:00", dict(org="Other SA", cn="www.other.es", dns=["www.other.es"]), None),
    ])


def test_camerfirma_typo_cert_revoked_within_hours_is_paired_with_its_correction(cualtis):
    f = detect_revoke_reissue(cualtis, WEEK, TWO_DAYS)
    by = _by_serial(cualtis)
    assert list(f["sha256"]) == [by["1002"]["sha256"]]
    assert f.iloc[0]["related_sha256"] == by["1003"]["sha256"]
    detail = json.loads(f.iloc[0]["detail"])
    assert detail["change"] == "san_typo_fixed"
    assert detail["relation"] == "typo"
    assert abs(detail["reissue_offset_seconds"] - 23 * 60) < 1
    assert "mail.cuatis.net -> mail.cualtis.net" in f.iloc[0]["evidence"]


def test_camerfirma_typo_cert_is_an_early_revocation_with_its_latency(cualtis):
    f = detect_early_revocation(cualtis, WEEK)
    by = _by_serial(cualtis)
    assert list(f["sha256"]) == [by["1002"]["sha256"]]
    assert json.loads(f.iloc[0]["detail"])["latency_seconds"] == pytest.approx(4 * 3600 + 38 * 60)
    assert "4.6 hours" in f.iloc[0]["evidence"]


def test_sectigo_style_replacement_issued_before_the_revocation_is_a_subject_change_pair(test_ca):
    key = new_key()
    names = ["www.widgets-example.com"]
    df = issued(test_ca, [
        (0x2001, "2020-03-02T09:00", dict(org="Exmaple Widgets Ltd", dns=names, key=key), "2020-03-02T13:10"),
        (0x2002, "2020-03-02T11:05", dict(org="Example Widgets Ltd", dns=names, key=key), None),
    ])
    f = detect_revoke_reissue(df, WEEK, TWO_DAYS)
    assert len(f) == 1
    detail = json.loads(f.iloc[0]["detail"])
    assert detail["change"] == "subject_changed"
    assert detail["reissue_offset_seconds"] < 0  # the correction came first
    assert "before the revocation" in f.iloc[0]["evidence"]


def test_ordinary_renewal_with_late_superseded_revocation_is_not_a_pair_nor_early(test_ca):
    names = ["shop.acme-tools.com"]
    df = issued(test_ca, [
        (0x4001, "2019-01-15T10:00", dict(org="Acme Tools GmbH", dns=names), "2020-01-11T09:00"),
        (0x4002, "2020-01-10T10:00", dict(org="Acme Tools GmbH", dns=names), None),
    ])
    assert detect_revoke_reissue(df, WEEK, TWO_DAYS).empty
    assert detect_early_revocation(df, WEEK).empty


def test_rekey_only_reissue_is_classified_as_such(test_ca):
    names = ["api.example-corp.com"]
    df = issued(test_ca, [
        (0x9001, "2021-05-01T08:00", dict(org="Example Corp", dns=names, key=new_key()), "2021-05-02T08:00"),
        (0x9002, "2021-05-02T08:30", dict(org="Example Corp", dns=names, key=new_key()), None),
    ])
    f = detect_revoke_reissue(df, WEEK, TWO_DAYS)
    assert json.loads(f.iloc[0]["detail"])["change"] == "rekey_only"


def test_revocation_after_the_window_is_not_early(test_ca):
    df = issued(test_ca, [
        (0x9101, "2021-05-01T08:00", dict(dns=["a.example-corp.com"]), "2021-05-09T08:00"),
    ])
    assert detect_early_revocation(df, WEEK).empty
    assert len(detect_early_revocation(df, timedelta(days=9))) == 1


def test_reissue_outside_the_reissue_window_is_not_paired(test_ca):
    names = ["api.example-corp.com"]
    df = issued(test_ca, [
        (0x9201, "2021-05-01T08:00", dict(org="Example Corp", dns=names), "2021-05-01T10:00"),
        (0x9202, "2021-05-05T08:30", dict(org="Example Corp", dns=names), None),
    ])
    assert detect_revoke_reissue(df, WEEK, TWO_DAYS).empty
    assert len(detect_revoke_reissue(df, WEEK, timedelta(days=5))) == 1


def test_empty_certificate_table_gives_empty_findings():
    from scanner.core.records import CERT_COLUMNS, empty_frame

    empty = empty_frame(CERT_COLUMNS)
    assert detect_revoke_reissue(empty, WEEK, TWO_DAYS).empty
    assert detect_early_revocation(empty, WEEK).empty
    assert isinstance(detect_early_revocation(empty, WEEK), pd.DataFrame)


def test_certificates_with_thousands_of_sans_are_paired_without_quadratic_work(test_ca):
    big = [f"h{i}.bulk-hosting-{i}.com" for i in range(5000)]
    df = issued(test_ca, [
        (0x9301, "2021-05-01T08:00", dict(org="Bulk Hosting", dns=big), "2021-05-01T10:00"),
        (0x9302, "2021-05-01T11:00", dict(org="Bulk Hosting", dns=big[1:]), None),
    ])
    f = detect_revoke_reissue(df, WEEK, TWO_DAYS)  # pytest-timeout catches a quadratic hang
    assert len(f) == 1 and json.loads(f.iloc[0]["detail"])["change"] == "san_set_changed"
    assert "removed h0.bulk-hosting-0.com; added none" in f.iloc[0]["evidence"]
    assert len(f.iloc[0]["evidence"]) < 1000  # the sentence names a few names, not thousands
