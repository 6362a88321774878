"""One definition of same subscriber: the links, the components, the labels, and every user agreeing on them."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from scanner.core.config import Config
from scanner.core.records import REGISTRATION_COLUMNS, empty_frame
from scanner.detect.revocation import detect_revoke_reissue
from scanner.detect.run import run_detectors
from scanner.detect.score import build_suspects
from scanner.enrich.subscribers import (
    comparison_key,
    connected_components,
    domain_typo,
    link_subscribers,
    organisation_keys,
    subscriber_key,
    typo_links,
)
from scanner.parse.domains import classify_name
from scanner.report import plots
from scanner.scale.engine import bin_rows
from tests.issued import issued
from tests.synth import new_key

WEEK, TWO_DAYS = timedelta(days=7), timedelta(days=2)


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


def test_certificates_one_typo_apart_only_behind_a_hyphen_are_linked_as_the_detectors_compare_them():
    # "cu-atis" is two edits from "cualtis" as written, one as read (the comparison key "cuatis").
    subs = link_subscribers(_certs((None, ["mail.cu-atis.net"]), (None, ["mail.cualtis.net"])))
    assert _together(subs, 0, 1)


def test_numbered_siblings_are_not_a_typo_link():
    subs = link_subscribers(_certs((None, ["web1shop.com"]), (None, ["web2shop.com"])))
    assert not _together(subs, 0, 1)


def test_the_comparison_key_reads_a_label_as_a_person_does():
    assert comparison_key("Cual-Tis") == "cualtis"
    assert comparison_key("xn--mnchen-3ya") == "munchen"  # münchen, accents folded
    assert comparison_key("xn--abc-") == "xnabc"  # not a valid A-label: read as written


@pytest.mark.parametrize(("a", "b", "linked"), [
    ("mail.cuatis.net", "mail.cualtis.net", True),  # a label typo under one suffix
    ("cualtis.ne", "www.cualtis.net", True),  # a suffix typo
    ("cualtis.es", "cu-altis.ec", True),  # a suffix typo of one comparison key
    ("cuatis.net", "cualtis.es", False),  # both changed: two edits
    ("foo-bar.com", "foobar.com", False),  # one name as read, not a typo
    ("web1shop.com", "web2shop.com", False),  # numbered siblings
    ("abc.com", "abd.com", False),  # too short to mean anything
    ("www.cualtis.net", "mail.cualtis.net", False),  # one registrable domain
    ("10.0.0.1", "10.0.0.2", False),
])
def test_the_typo_link_between_registrable_domains(a, b, linked):
    assert (domain_typo(classify_name(a), classify_name(b)) is not None) is linked
    domains = pd.DataFrame([asdict(classify_name(n)) for n in (a, b)], columns=["registrable", "label", "suffix"])
    found = typo_links(domains[domains["registrable"] != ""])
    assert (len(found) == 2) is linked  # the vectorised link agrees, in both orders


def test_the_organisation_key_and_the_subscriber_key():
    assert organisation_keys(["CUALTIS S.L.U", "Cualtis SLU", None, float("nan")]).tolist() == [
        "cualtis", "cualtis", "", ""]
    assert subscriber_key("CUALTIS S.L.U", "mail.cuatis.net") == "cualtis"
    assert subscriber_key(None, "vpn.example.co.uk") == "example.co.uk"
    assert subscriber_key("", "10.0.0.1") == ""
    assert subscriber_key(None, None) == ""


@pytest.fixture()
def cualtis(test_ca) -> pd.DataFrame:
    """Camerfirma's CUALTIS case, with the reissue's subject O written another way, among other subscribers."""
    key = new_key()
    fillers = [(0x2000 + i, f"2019-11-{1 + i:02d}T08:00", dict(org=f"Filler {i} GmbH", cn=f"www.filler{i}shop.de",
                                                               dns=[f"www.filler{i}shop.de"]), None)
               for i in range(8)]
    return issued(test_ca, [
        (0x1001, "2018-11-05T09:12", dict(org="CUALTIS S.L.U", cn="mail.cualtis.net", dns=["mail.cualtis.net"],
                                          key=key), None),
        # mail.cuatis.net, revoked 4.6 hours after issuance and reissued as mail.cualtis.net 23 minutes later
        (0x1002, "2019-11-12T12:17", dict(org="CUALTIS S.L.U", cn="mail.cuatis.net", dns=["mail.cuatis.net"],
                                          key=key), "2019-11-12T16:53"),
        (0x1003, "2019-11-12T17:16", dict(org="Cualtis SLU", cn="mail.cualtis.net", dns=["mail.cualtis.net"],
                                          key=key), None),
        (0x1004, "2019-11-12T17:00", dict(org="Other SA", cn="www.other.es", dns=["www.other.es"]), None),
        *fillers,
    ]).reset_index(drop=True)


def test_dask_partitions_pairing_and_plot_labels_agree_on_the_cualtis_reissue(cualtis, tmp_path):
    certs, config = cualtis, Config(out_dir=tmp_path)
    sha = dict(zip(certs["serial"].map(lambda s: int(s, 16)), certs["sha256"]))
    typo, fixed = sha[0x1002], sha[0x1003]
    findings = run_detectors(certs, empty_frame(REGISTRATION_COLUMNS), config)
    pairs = findings[findings["related_sha256"].fillna("") != ""]
    reissue = pairs[pairs["code"] == "revoke_reissue"]
    assert list(zip(reissue["sha256"], reissue["related_sha256"])) == [(typo, fixed)]
    assert (typo, fixed) in set(zip(pairs.loc[pairs["code"] == "typo_neighbour", "sha256"],
                                    pairs.loc[pairs["code"] == "typo_neighbour", "related_sha256"]))

    # every pair a detector made is inside one component, so inside one Dask bin however many there are
    position = {s: i for i, s in enumerate(certs["sha256"])}
    component = link_subscribers(certs).component
    for a, b in zip(pairs["sha256"], pairs["related_sha256"]):
        assert component[position[a]] == component[position[b]]
    for n_bins in range(1, len(certs) + 1):
        owner = {int(r): b for b, (rows, owned) in enumerate(bin_rows(certs, config, n_bins)) for r in rows[owned]}
        assert owner[position[typo]] == owner[position[fixed]], n_bins
    assert component[position[typo]] != component[position[sha[0x1004]]]  # issued in the same minutes, not linked

    # the plots label both "cualtis" and draw the pair on that one row
    labels = plots.subscribers(certs)
    assert labels[position[typo]] == labels[position[fixed]] == labels[position[sha[0x1001]]] == "cualtis"
    suspects = build_suspects(certs, findings)
    frame = plots.timeline_frame(certs, findings, suspects=suspects)
    assert frame.loc[frame["sha256"].isin([typo, fixed]), "row"].nunique() == 1
    ax = plots.issuance_timeline(certs, findings, suspects=suspects).axes[0]
    assert f"revoke_reissue:{typo}:{fixed}" in [line.get_gid() for line in ax.get_lines()]
    assert "revoked after 4.6 h, reissued 23 min later" in [t.get_text() for t in ax.texts]


def test_a_reissue_correcting_a_typo_behind_a_hyphen_is_paired_and_kept_in_one_partition(test_ca):
    certs = issued(test_ca, [
        (0x3001, "2021-05-03T08:00", dict(cn="mail.cu-atis.net", dns=["mail.cu-atis.net"]), "2021-05-03T10:00"),
        (0x3002, "2021-05-03T10:30", dict(org="Cualtis SLU", cn="mail.cualtis.net", dns=["mail.cualtis.net"]), None),
    ])
    found = detect_revoke_reissue(certs, WEEK, TWO_DAYS)
    assert list(zip(found["sha256"], found["related_sha256"])) == [tuple(certs["sha256"])]
    assert len(set(link_subscribers(certs).component)) == 1
