"""The typo detector flags the SAN that looks like the typo, with readable evidence, and nothing else."""

from __future__ import annotations

import json

import pandas as pd

from scanner.detect.typo import detect_typo_neighbours
from scanner.records import CERT_COLUMNS, FINDING_COLUMNS, frame_from_rows


def cert(tag: str, sans: list[str], o: str | None = None, nb: str = "2021-01-01", revoked: str | None = None) -> dict:
    return {"sha256": tag * 64, "san_dns": sans, "subject_o": o, "not_before": nb, "revoked_at": revoked}


def detect(*rows: dict, **kwargs) -> pd.DataFrame:
    return detect_typo_neighbours(frame_from_rows(list(rows), CERT_COLUMNS), **kwargs)


def details(found: pd.DataFrame) -> list[dict]:
    return [json.loads(d) for d in found["detail"]]


CUALTIS = "CUALTIS S.L.U"
CAMERFIRMA_CASE = (
    cert("a", ["mail.cuatis.net"], CUALTIS, "2021-03-01T10:00Z", revoked="2021-03-01T14:30Z"),
    cert("b", ["mail.cualtis.net"], CUALTIS, "2021-03-01T14:53Z"),
    cert("c", ["www.cualtis.net", "cualtis.net"], CUALTIS, "2020-02-01T00:00Z"),
)


def test_the_camerfirma_typo_cert_is_flagged_against_the_subject_o_and_linked_to_its_reissue():
    found = detect(*CAMERFIRMA_CASE)
    assert list(found["name"]) == ["mail.cuatis.net"]
    row = found.iloc[0]
    assert row["sha256"] == "a" * 64
    assert row["code"] == "typo_neighbour"
    assert row["severity"] == "medium"
    assert row["related_sha256"] == "b" * 64  # the reissue, nearest in time, not the 2020 certificate
    assert row["evidence"].startswith(
        "mail.cuatis.net: 'cuatis' is 'cualtis' with 'l' omitted; 'cualtis' is the subject O 'CUALTIS S.L.U'"
    )
    detail = details(found)[0]
    assert detail["neighbour"] == "cualtis"
    assert detail["edit"] == "omission"
    assert detail["neighbour_source"] == "subject_o"


def test_the_correct_name_is_never_flagged():
    found = detect(*CAMERFIRMA_CASE)
    assert "mail.cualtis.net" not in set(found["name"])
    assert "b" * 64 not in set(found["sha256"])


def test_renewals_of_the_correct_name_alone_flag_nothing():
    found = detect(
        cert("b", ["mail.cualtis.net"], CUALTIS, "2021-03-01"),
        cert("c", ["www.cualtis.net", "cualtis.net"], CUALTIS, "2020-02-01"),
        cert("d", ["mail.cualtis.net", "cualtis.es"], CUALTIS, "2022-02-01"),
    )
    assert found.empty
    assert list(found.columns) == list(FINDING_COLUMNS)


def test_a_public_suffix_typo_is_flagged_against_the_subscribers_usual_suffix():
    found = detect(
        cert("a", ["mail.cualtis.ne"], CUALTIS, "2021-03-01"),
        cert("b", ["mail.cualtis.net"], CUALTIS, "2021-03-02"),
        cert("c", ["cualtis.net"], CUALTIS, "2020-03-02"),
    )
    assert list(found["name"]) == ["mail.cualtis.ne"]
    assert found.iloc[0]["related_sha256"] == "b" * 64
    assert "'cualtis.ne' is 'cualtis.net' with 't' omitted in the public suffix" in found.iloc[0]["evidence"]
    detail = details(found)[0]
    assert (detail["scope"], detail["neighbour_source"]) == ("suffix", "other_cert")


def test_a_transposition_of_the_subject_o_is_flagged():
    found = detect(cert("a", ["www.cuatlis.net"], CUALTIS))
    assert list(found["name"]) == ["www.cuatlis.net"]
    assert "'cuatlis' is 'cualtis' with 'lt' swapped to 'tl'" in found.iloc[0]["evidence"]
    assert details(found)[0]["edit"] == "transposition"


def test_a_typo_next_to_the_right_name_on_the_same_certificate_is_flagged_not_the_right_name():
    found = detect(
        cert("a", ["www.example-shop.com", "www.exmaple-shop.com"]),
        cert("b", ["example-shop.com"]),
    )
    assert list(found["name"]) == ["www.exmaple-shop.com"]
    assert details(found)[0]["neighbour_source"] == "same_cert"
    assert "'example-shop.com' is also on this certificate (www.example-shop.com)" in found.iloc[0]["evidence"]


def test_a_revoked_typo_certificate_is_paired_with_its_reissue_through_a_shared_domain():
    found = detect(
        cert("a", ["mail.cuatis.net", "www.grupo-cualtis.es"], nb="2021-03-01T10:00Z", revoked="2021-03-01T14:30Z"),
        cert("b", ["mail.cualtis.net", "www.grupo-cualtis.es"], nb="2021-03-01T14:53Z"),
    )
    assert list(found["name"]) == ["mail.cuatis.net"]
    row = found.iloc[0]
    assert row["related_sha256"] == "b" * 64
    assert "shared domain grupo-cualtis.es" in row["evidence"]
    assert "cualtis.net is named in 1 of the CA's certificates, cuatis.net in 1" in row["evidence"]
    assert details(found)[0]["neighbour_source"] == "other_cert"


def test_similar_names_of_different_subscribers_are_not_paired():
    found = detect(
        cert("a", ["www.acmewidgets.com"], "Acme Widgets Ltd"),
        cert("b", ["www.acmewidgets.com"], "Acme Widgets Ltd"),
        cert("c", ["www.acmewidgetz.com"], "Zeta Trading SL"),
        cert("d", ["www.brandnames.es"]),
        cert("e", ["www.brandname.es"]),
    )
    assert found.empty


def test_subdomains_and_numbered_siblings_of_one_subscriber_are_not_typos():
    found = detect(
        cert("a", ["shop1.example.com", "shop2.example.com", "example.com"], "Example SA"),
        cert("b", ["www.event2023.org", "www.event2024.org"]),
        cert("c", ["www.foo-bar.com", "www.foobar.com"]),
    )
    assert found.empty


def test_names_in_large_multi_customer_certificates_are_not_compared_with_each_other():
    bundle = [f"www.customer{i:02d}shop.com" for i in range(30)] + ["www.acmewidgets.com", "www.acmewidgetz.com"]
    assert detect(cert("a", bundle)).empty
    assert not detect(cert("a", bundle), max_registrables=100).empty


def test_short_labels_are_ignored():
    assert detect(cert("a", ["www.abc.com", "www.abd.com"], "ABC SA")).empty
    assert not detect(cert("a", ["www.abcd.com", "www.abce.com"], "ABCD SA")).empty


def test_certificates_without_names_or_rows_give_an_empty_findings_table():
    assert detect().empty
    found = detect(cert("a", []), cert("b", ["192.0.2.1", "intranet"]))
    assert found.empty and list(found.columns) == list(FINDING_COLUMNS)
