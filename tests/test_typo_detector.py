"""The typo detector flags the SAN that looks like the typo, with readable evidence, and nothing else."""

from __future__ import annotations

import json
import types

import pandas as pd
import pyarrow as pa
import pytest

from scanner.core.records import CERT_COLUMNS, FINDING_COLUMNS, Finding, frame_from_rows
from scanner.detect import typo
from scanner.detect.namecodes import codes_of, text_order, texts
from scanner.detect.score import certificate_scores
from scanner.detect.typo import detect_typo_neighbours
from scanner.enrich.subscribers import MAX_REGISTRABLES, MIN_LABEL, label_pairs, suffix_pairs, typo_pairs


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


def _suffix_case(intended: str, typo: str) -> pd.DataFrame:
    """The subscriber's usual name under `intended` (twice), then one certificate under `typo`."""
    return detect(
        cert("a", [f"mail.cualtis.{typo}"], CUALTIS, "2021-03-01"),
        cert("b", [f"mail.cualtis.{intended}"], CUALTIS, "2021-03-02"),
        cert("c", [f"cualtis.{intended}"], CUALTIS, "2020-03-02"),
    )


@pytest.mark.parametrize("intended, typo", [
    ("es", "ec"), ("ec", "es"), ("pt", "pl"), ("pl", "pt"), ("at", "it"), ("it", "at"), ("de", "dk"),
])
def test_a_country_code_suffix_one_keystroke_from_the_subscribers_own_is_flagged_in_either_direction(intended, typo):
    found = _suffix_case(intended, typo)
    assert list(found["name"]) == [f"mail.cualtis.{typo}"]
    assert found.iloc[0]["related_sha256"] == "b" * 64
    was, now = next((x, y) for x, y in zip(intended, typo) if x != y)
    assert (f"'cualtis.{typo}' is 'cualtis.{intended}' with '{was}' replaced by '{now}' "
            f"in the public suffix (.{typo} instead of .{intended})") in found.iloc[0]["evidence"]
    detail = details(found)[0]
    assert (detail["scope"], detail["suffix"], detail["neighbour_suffix"]) == ("suffix", typo, intended)
    assert detail["established"] is False


def test_a_country_code_swap_scores_like_a_generic_suffix_typo():
    country = _suffix_case("es", "ec")
    generic = _suffix_case("com", "co")
    assert certificate_scores(country).tolist() == certificate_scores(generic).tolist() == [25.0]


def test_two_long_standing_country_sites_of_one_company_rank_below_a_one_off_unregistered_country_typo():
    acme = "Acme Maschinen GmbH"
    sites = [cert(t, [f"www.acme-maschinen.{s}"], acme, f"{y}-02-01")
             for t, s, y in [("1", "de", 2019), ("2", "de", 2020), ("3", "de", 2021), ("4", "de", 2022),
                             ("5", "dk", 2019), ("6", "dk", 2020), ("7", "dk", 2021)]]
    slip = [cert("8", ["mail.cualtis.ec"], CUALTIS, "2021-03-01T10:00Z", revoked="2021-03-01T14:30Z"),
            cert("9", ["mail.cualtis.es"], CUALTIS, "2021-03-01T14:53Z")]
    found = detect(*sites, *slip)
    by_name = {n: (sha, d) for n, sha, d in zip(found["name"], found["sha256"], details(found))}
    # both are still listed, and the evidence says which suffix edit it is
    assert set(by_name) == {"www.acme-maschinen.dk", "mail.cualtis.ec"}
    assert by_name["www.acme-maschinen.dk"][1]["established"] is True
    sentence = found[found["name"] == "www.acme-maschinen.dk"].iloc[0]["evidence"]
    assert "(.dk instead of .de)" in sentence and "likely one the subscriber really uses" in sentence
    # the registry's answer is the other evidence that ranks the slip first
    unregistered = frame_from_rows([Finding("8" * 64, "unregistered_domain", "cualtis.ec is not registered").as_row()],
                                   FINDING_COLUMNS)
    scores = certificate_scores(pd.concat([found, unregistered], ignore_index=True))
    site = by_name["www.acme-maschinen.dk"][0]
    assert scores[site] == 10.0  # 25, weighed down as established
    assert scores["8" * 64] == 65.0 > scores[site]


# --- the detector's steps, one at a time ------------------------------------------------------


def prepared(*rows: dict) -> tuple[typo._Table, typo._Subjects]:
    """(the coded registrables with their certificates' facts, subjects) as detect_typo_neighbours prepares them."""
    certs = frame_from_rows(list(rows), CERT_COLUMNS)
    table = typo._registrables(certs, MIN_LABEL, MAX_REGISTRABLES)
    subjects = typo._subjects(certs, MIN_LABEL)
    return typo._with_subjects(table, subjects), subjects


def sides(table: typo._Table) -> tuple[pd.DataFrame, pd.DataFrame]:
    labels = typo._coded_pairs(label_pairs(table.keys.to_pylist()), table.keys)
    suffixes = typo._coded_pairs(suffix_pairs(table.suffixes.to_pylist()), table.suffixes)
    pairs = typo_pairs(table.regs, labels.astype(object), suffixes.astype(object))
    pairs = pairs.astype({"registrable": "int64", "registrable_n": "int64"})
    return typo._suspect_sides(table.regs, pairs[["registrable", "registrable_n", "scope"]])


def text(values, codes) -> list[str]:
    """The strings a column of codes stands for."""
    return texts(values, list(codes))


def test_the_subject_o_step_compares_a_san_with_its_own_certificates_o_only():
    table, _ = prepared(cert("a", ["mail.cuatis.net"], CUALTIS), cert("b", ["mail.cuatis.es"], "Other SA"),
                        cert("c", ["www.cualtis.net"], CUALTIS))
    labels = typo._coded_pairs(label_pairs(table.keys.to_pylist()), table.keys)
    found = typo._subject_o_candidates(table.regs, table.olabels, labels)
    assert list(zip(found["cert"], text(table.registrables, found["registrable"]),
                    text(table.keys, found["neighbour"]))) == [(0, "cuatis.net", "cualtis")]


def test_codes_are_ranked_by_their_strings_where_an_order_decides():
    codes, values = codes_of(pa.array(["b", "é", "a", "b", "Z", "ab", ""]))
    assert [values[c].as_py() for c in codes] == ["b", "é", "a", "b", "Z", "ab", ""]
    ranks = text_order(codes, values)
    assert [s for _, s in sorted(zip(ranks, ["b", "é", "a", "b", "Z", "ab", ""]))] == sorted(
        ["b", "é", "a", "b", "Z", "ab", ""])


def test_of_equal_neighbours_the_first_in_text_order_is_named_not_the_first_seen():
    # zbcdef.com is seen first, so its code is the smaller; abcdef.com comes first as text.
    found = detect(cert("a", ["www.zbcdef.com", "www.abcdef.com", "www.xbcdef.com"]))
    by_name = {row["name"]: json.loads(row["detail"]) for _, row in found.iterrows()}
    assert by_name["www.xbcdef.com"]["neighbour"] == "abcdef.com"


def test_the_same_certificate_step_flags_the_rarer_name_and_on_a_tie_the_later_san():
    table, _ = prepared(cert("a", ["www.example-shop.com", "www.exmaple-shop.com"]),
                        cert("b", ["example-shop.com"]), cert("c", ["www.abcdef.com", "www.abcdeg.com"]))
    found = typo._same_cert_candidates(*sides(table))
    assert list(zip(found["cert"], text(table.registrables, found["registrable"]),
                    text(table.registrables, found["neighbour"]))) == [
        (0, "exmaple-shop.com", "example-shop.com"), (2, "abcdeg.com", "abcdef.com")]


def test_the_organisation_witness_is_the_certificate_nearest_in_time():
    table, subjects = prepared(*CAMERFIRMA_CASE)
    mine, _ = sides(table)
    found = typo._organisation_witnesses(mine, typo._holders(table.regs), subjects.no_okey)
    suspect = found[[r == "cuatis.net" for r in text(table.registrables, found["registrable"])]]
    assert list(zip(suspect["cert_n"], suspect["link_kind"], text(subjects.okeys, suspect["link_value"]))) == [
        (1, typo._BY_ORGANISATION, "cualtis")]  # the reissue, not 2020's


def test_a_shared_domain_witness_needs_a_third_domain_on_both_certificates():
    table, _ = prepared(cert("a", ["mail.cuatis.net", "www.grupo-cualtis.es"]),
                        cert("b", ["mail.cualtis.net", "www.grupo-cualtis.es"]),
                        cert("c", ["mail.cualtis.net"]))
    mine, _ = sides(table)
    found = typo._shared_domain_witnesses(mine, typo._holders(table.regs), table.regs)
    assert set(zip(found["cert"], found["cert_n"], found["link_kind"], text(table.registrables, found["link_value"]))) == {
        (0, 1, typo._BY_SHARED_DOMAIN, "grupo-cualtis.es"), (1, 0, typo._BY_SHARED_DOMAIN, "grupo-cualtis.es")}


def test_the_other_certificate_step_keeps_only_the_suspect_that_is_not_the_more_legitimate():
    table, subjects = prepared(*CAMERFIRMA_CASE)
    mine, _ = sides(table)
    witnesses = typo._organisation_witnesses(mine, typo._holders(table.regs), subjects.no_okey)
    witnesses["link_rank"] = typo._link_ranks(witnesses, table, subjects)
    found = typo._other_cert_candidates(witnesses, table.regs)
    assert list(zip(found["cert"], text(table.registrables, found["registrable"]), found["cert_n"])) == [
        (0, "cuatis.net", 1)]


def test_the_best_evidence_is_the_subject_o_and_the_witness_is_kept_for_the_sentence():
    table, subjects = prepared(*CAMERFIRMA_CASE)
    best, witnesses = typo._best_evidence(typo._candidates(table, subjects, MIN_LABEL), table)
    assert [(r.cert, text(table.registrables, [r.registrable])[0], r.source) for r in best] == [
        (0, "cuatis.net", "subject_o")]
    ((cert_, reg), (cert_n, neighbour, (kind, value))), = witnesses.items()
    assert (cert_, cert_n, kind) == (0, 1, typo._BY_ORGANISATION)
    assert text(table.registrables, [reg, neighbour]) == ["cuatis.net", "cualtis.net"]
    assert text(subjects.okeys, [value]) == ["cualtis"]


def test_a_suffix_pair_is_shown_as_whole_domains_with_the_suffix_named():
    table, subjects = prepared(cert("a", ["mail.cualtis.ne"], CUALTIS), cert("b", ["mail.cualtis.net"], CUALTIS))
    best, _ = typo._best_evidence(typo._candidates(table, subjects, MIN_LABEL), table)
    r = best[0]
    row = typo._Best(r.cert, *text(table.registrables, [r.registrable]), r.source, r.scope,
                     *text(table.registrables, [r.neighbour]))
    shown, shown_n, edit, where = typo._pair_edit(row, typo._Domains.of(table, [r.registrable, r.neighbour]))
    assert (shown, shown_n, edit.detail, where) == (
        "cualtis.ne", "cualtis.net", "'t' omitted", " in the public suffix (.ne instead of .net)")


def test_the_count_clauses_say_how_often_each_name_was_certified_and_when_it_weighs_less():
    row = types.SimpleNamespace(registrable="acme.dk", neighbour="acme.de")
    assert typo._count_clauses(row, 1, 4) == (["acme.de is named in 4 of the CA's certificates, acme.dk in 1"], "")
    clauses, tail = typo._count_clauses(row, 3, None)
    assert clauses == ["acme.dk is named in 3 of the CA's certificates"] and "weighs less" in tail
