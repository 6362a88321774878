"""Certificates grouped into subscribers by what the cross-certificate detectors compare."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scanner.enrich.subscribers import connected_components, link_subscribers


def _certs(*rows: tuple[str | None, list[str]]) -> pd.DataFrame:
    return pd.DataFrame({
        "subject_o": [o for o, _ in rows],
        "subject_cn": [sans[0] if sans else None for _, sans in rows],
        "san_dns": [sans for _, sans in rows],
    })


def _together(subs, a: int, b: int) -> bool:
    return bool(subs.component[a] == subs.component[b])


def test_a_chain_of_edges_is_one_component_named_by_its_smallest_node():
    roots = connected_components(7, np.array([5, 4, 3, 1]), np.array([6, 5, 4, 2]))
    assert roots.tolist() == [0, 1, 1, 3, 3, 3, 3]


def test_the_same_organisation_links_certificates_with_unrelated_names():
    subs = link_subscribers(_certs(("CUALTIS S.L.U", ["a-one.com"]), ("Cualtis, S.L.U.", ["b-two.net"]),
                                   ("Other SA", ["c-three.org"])))
    assert _together(subs, 0, 1) and not _together(subs, 0, 2)


def test_a_shared_registrable_domain_links_certificates():
    subs = link_subscribers(_certs((None, ["www.example.com"]), (None, ["mail.example.com", "x.test.org"]),
                                   (None, ["y.test.org"]), (None, ["unrelated.net"])))
    assert _together(subs, 0, 2) and not _together(subs, 0, 3)


def test_labels_one_edit_apart_under_one_suffix_are_linked_like_cuatis_and_cualtis():
    subs = link_subscribers(_certs((None, ["mail.cuatis.net"]), (None, ["mail.cualtis.net"]),
                                   (None, ["mail.cualtis.de"]), (None, ["abc.net"]), (None, ["abd.net"])))
    assert _together(subs, 0, 1)
    assert not _together(subs, 0, 2)  # another label under another suffix: two edits away
    assert not _together(subs, 3, 4)  # labels too short to mean a typo


def test_a_suffix_one_edit_away_links_the_same_label():
    subs = link_subscribers(_certs((None, ["cualtis.ne"]), (None, ["cualtis.net"]), (None, ["cualtis.org"])))
    assert _together(subs, 0, 1) and not _together(subs, 1, 2)


def test_a_hosting_certificate_with_many_domains_does_not_glue_its_customers_together():
    many = [f"customer{j:02d}.com" for j in range(23)] + ["kiwifoods.com", "zebratools.com"]
    subs = link_subscribers(_certs(("Hosting Ltd", many), (None, ["kiwifoods.com"]), (None, ["zebratools.com"])))
    assert subs.bundle.tolist() == [True, False, False]
    assert len(set(subs.component.tolist())) == 3
    assert sorted(subs.bundle_pairs["other"].tolist()) == [1, 2]  # its name links are kept apart


def test_certificates_without_names_or_organisation_stay_alone():
    subs = link_subscribers(_certs((None, []), (None, ["10.0.0.1"]), ("", ["localhost"])))
    assert subs.component.tolist() == [0, 1, 2]
