"""The whole-column paths of the detect stage give the answers of the one-value-at-a-time functions they replace."""

from __future__ import annotations

import random
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from scanner.enrich import organisation
from scanner.enrich.organisation import LEGAL_FORMS, fold, key_and_labels, keys_and_labels, strip_legal_forms
from scanner.enrich.subscribers import comparison_key, comparison_keys
from scanner.parse import domains
from scanner.parse.domains import (
    NAME_COLUMNS,
    PUBLIC,
    _classify,
    classify_all,
    classify_name,
    classify_names,
    explode_names,
    name_table,
)

_ODD_NAMES = [
    "", ".", "a..com", "-a.com", "a-.com", "localhost", "foo.local", "1.2.3.4", "a.1.2.3.4", "::1", "[::1]",
    "beef.de", "cafe.face", "x" * 64 + ".com", "a." * 130 + "com", "foo.com.", "FOO.COM", " foo.com", "foo.com\n",
    "*.foo.com", "*.*.foo.com", "*.com", "münchen.de", "xn--mnchen-3ya.de", "foo.xn--p1ai", "a.b.ck", "www.ck",
    "a.www.ck", "city.kobe.jp", "a.city.kobe.jp", "x.y.kobe.jp", "foo_bar.com", "a.b.c.d.e.f.co.uk", "co.uk", "uk",
    "com", "x.com.es", "www.x.com.es", "x.y.z.unknowntld", "foo\x1f.com", "a.b.kawasaki.jp",
]


def _psl_names() -> list[str]:
    """Names under every rule of the bundled suffix list, at several depths, wildcards and exceptions included."""
    out = []
    for rule in domains._EXTRACT.tlds:
        base = rule.lstrip("!").replace("*", "x")
        out += [base, "a." + base, "b-c.d." + base, "w.e.f.g." + base, "xn--bcher-kva." + base, "*.a." + base]
    return out


def test_classify_names_answers_as_classify_does_for_every_suffix_list_rule_and_odd_names():
    names = list(dict.fromkeys(_psl_names() + _ODD_NAMES))
    classified = classify_names(pa.array(names))
    wrong = [n for n in names if classified[n] != _classify(n)]
    assert wrong == []


def test_classify_all_holds_every_san_ip_and_cn_and_looks_up_like_a_dict():
    certs = pd.DataFrame({"san_dns": [["a.com", "www.a.com"], None, ("b.org",), np.array(["c.net"])],
                          "san_ip": [["10.0.0.1"], [], None, []],
                          "subject_cn": ["a.com", "Jane Doe", None, "c.net"]})
    classified = classify_all(certs)
    assert set(classified) == {"a.com", "www.a.com", "b.org", "c.net", "10.0.0.1", "Jane Doe"}
    assert classified["www.a.com"] == classify_name("www.a.com")
    assert classified.get("not.there.com") is None
    assert classified.positions(pa.array(["b.org", "zzz"])).tolist()[1] == -1


def _name_table_by_rows(certs: pd.DataFrame, max_per_cert: int | None) -> pd.DataFrame:
    """name_table as it was written before: one certificate and one name at a time."""

    def checked_names(san_dns, subject_cn):  # the SANs, else a CN that is a public host name
        dns = list(san_dns) if isinstance(san_dns, (list, tuple)) else []
        if dns or not isinstance(subject_cn, str) or not subject_cn:
            return dns
        return [subject_cn] if classify_name(subject_cn).kind == PUBLIC else []

    rows = []
    for sha, dns, ips, cn in zip(certs["sha256"], certs["san_dns"], certs["san_ip"], certs["subject_cn"]):
        names = checked_names(dns, cn) + (list(ips) if isinstance(ips, (list, tuple)) else [])
        for raw in names[:max_per_cert] if max_per_cert is not None else names:
            info = classify_name(raw)
            rows.append((sha, raw, info.name, info.kind, info.registrable, info.label, info.suffix, info.reason))
    return pd.DataFrame(rows, columns=list(NAME_COLUMNS)).astype("string")


@pytest.mark.parametrize("max_per_cert", [None, 2])
def test_name_table_matches_the_row_by_row_table_with_cn_only_ip_and_odd_names(max_per_cert):
    rng = random.Random(4)
    certs = pd.DataFrame({
        "sha256": [f"{i:064x}" for i in range(300)],
        "san_dns": [rng.sample(_ODD_NAMES, rng.randint(0, 4)) if i % 7 else [] for i in range(300)],
        "san_ip": [["10.0.0.1", "::1"] if i % 5 == 0 else [] for i in range(300)],
        "subject_cn": [rng.choice(["host.example.com", "Some Person", None, "", "q.com", "intranet"])
                       for _ in range(300)],
    }).astype({"sha256": "string", "subject_cn": "string"})
    got = name_table(certs, max_per_cert, classify_all(certs))
    pd.testing.assert_frame_equal(got, _name_table_by_rows(certs, max_per_cert))
    pd.testing.assert_frame_equal(name_table(certs, max_per_cert), got)


def test_a_subset_of_the_rows_is_exploded_anew_not_taken_from_the_whole_tables_memo():
    certs = pd.DataFrame({"san_dns": [["a.com"], ["b.com", "c.com"], ["d.com"]]})
    classified = classify_all(certs.assign(subject_cn=None))
    whole = explode_names(certs, "san_dns", classified)
    assert explode_names(certs, "san_dns", classified) is whole  # the same table: exploded once
    part = explode_names(certs.iloc[1:], "san_dns", classified)
    assert part.values.to_pylist() == ["b.com", "c.com", "d.com"] and part.cert.tolist() == [0, 0, 1]
    assert part.order.tolist() == [0, 1, 0]


def test_comparison_keys_match_comparison_key():
    labels = ["cualtis", "cual-tis", "CUALTIS", "xn--mnchen-3ya", "xn--zz", "a-b-c", "", "ß-x"]
    assert comparison_keys(pa.array(labels)).to_pylist() == [comparison_key(v) for v in labels]


_PIECES = ["S.L.", "S. L. U.", "GmbH & Co. KG", "Pty Ltd", "ltd", "inc.", "sa", "s.a.", "Banco", "the", "la", "Co",
           "sp. z o.o.", "(SA)", "/ sl", ",", "&", "Telefónica", "ÅB", "s.r.o.", "e.V.", "\n", "\v", " ", ".", "s l",
           "SLNE", "sdn bhd", "GK", "\u00a0SL", "Santander", "Grupo", "El", "x"]


def _organisations(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice([" ", ", ", "&", "(", "/", ""]) + rng.choice(_PIECES) for _ in range(rng.randint(1, 6)))
            for _ in range(count)] + ["", "   ", "S.L.", "The Acme", "ACME S.L.\n", "x" * 300 + " sl"]


def test_the_letter_trie_of_legal_forms_matches_where_the_plain_alternation_does():
    plain = re.compile(r"(?<=[\s,&(/])(?:" + "|".join(
        r"[.\s]*".join(map(re.escape, form)) for form in sorted(set(LEGAL_FORMS), key=len, reverse=True)) + r")\.?$")
    for o in _organisations(3000, 1):
        text = fold(o)
        expected = plain.search(text)
        got = organisation._form_at_end(text)
        assert (got.start() if got else None) == (expected.start() if expected else None), o


@pytest.mark.parametrize(("min_len", "max_words"), [(4, 8), (6, 2)])
def test_keys_and_labels_of_many_organisations_at_once_match_one_at_a_time(min_len, max_words):
    values = _organisations(3000, 2)
    expected = [key_and_labels(o, min_len=min_len, max_words=max_words) for o in values]
    assert keys_and_labels(values, min_len=min_len, max_words=max_words) == expected
    assert [e[0] for e in expected] == [organisation.normalise_organisation.__wrapped__(o) for o in values]
    assert strip_legal_forms(fold("Acme Holding GmbH & Co. KG")) == "acme holding"


@pytest.mark.parametrize(("min_len", "max_words"), [(4, 8), (6, 2), (1, 3)])
def test_the_organisation_table_holds_key_and_labels_of_each_value_as_columns(min_len, max_words):
    values = _organisations(3000, 3) + ["Acme Acme Acme SL", "Banco Banco, S.A.", "ACME\x01 SL", "Grupo Grupo", "the the"]
    keys, owner, labels = organisation.organisation_table(pa.array(values), min_len=min_len, max_words=max_words)
    got = [(key, tuple(labels.filter(pa.array(owner == i)).to_pylist())) for i, key in enumerate(keys.to_pylist())]
    assert got == [key_and_labels(o, min_len=min_len, max_words=max_words) for o in values]
