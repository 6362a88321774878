"""Subject O values become the labels a subscriber would register."""

from __future__ import annotations

import pytest

from scanner.enrich.organisation import normalise_organisation, organisation_labels


@pytest.mark.parametrize(
    ("organisation", "label"),
    [
        ("CUALTIS S.L.U", "cualtis"),
        ("CUALTIS S.L.U.", "cualtis"),
        ("Banco Santander, S.A.", "bancosantander"),
        ("Telefónica de España, S.A.U.", "telefonicadeespana"),
        ("Foo GmbH & Co. KG", "foo"),
        ("Acme Pty Ltd", "acme"),
        ("Foo (Pty) Ltd", "foo"),
        ("Nokia Oyj", "nokia"),
        ("Volvo AB (publ)", "volvo"),
        ("Deutsche Bank AG", "deutschebank"),
        ("Grupo Bimbo, S.A.B. de C.V.", "grupobimbo"),
        ("Eni S.p.A.", "eni"),
        ("Ferrero S.r.l.", "ferrero"),
        ("Firma Sp. z o.o.", "firma"),
        ("Shell PLC", "shell"),
        ("Example Inc.", "example"),
        ("Example, LLC", "example"),
        ("EXAMPLE CORP", "example"),
        ("Example Co.", "example"),
        ("Example SAS", "example"),
        ("Example SARL", "example"),
        ("Example B.V.", "example"),
        ("Example NV", "example"),
        ("Example Limited", "example"),
        ("The Coca-Cola Company", "cocacola"),
    ],
)
def test_legal_forms_accents_punctuation_and_case_are_removed(organisation, label):
    assert normalise_organisation(organisation) == label


def test_words_that_only_look_like_legal_forms_are_kept():
    assert normalise_organisation("Texas Instruments") == "texasinstruments"
    assert normalise_organisation("Costco") == "costco"
    assert normalise_organisation("Bag AG") == "bag"


def test_a_name_that_is_only_a_legal_form_is_not_stripped_to_nothing():
    assert normalise_organisation("S.A.") == "sa"


def test_missing_organisations_have_no_label():
    assert normalise_organisation(None) == ""
    assert normalise_organisation("") == ""
    assert organisation_labels(None) == ()


def test_distinctive_words_are_candidate_labels_but_generic_and_short_words_are_not():
    assert organisation_labels("Banco Santander, S.A.") == ("bancosantander", "santander")
    assert organisation_labels("CUALTIS S.L.U") == ("cualtis",)
    assert organisation_labels("Grupo ACS S.A.") == ("grupoacs",)


def test_very_long_organisations_are_truncated_not_processed_whole():
    label = normalise_organisation("A" * 100_000 + " S.L.")
    assert 0 < len(label) <= 256
