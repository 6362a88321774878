"""The one-edit index finds exactly the pairs a brute-force OSA comparison finds, and names the edit."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
from rapidfuzz import process
from rapidfuzz.distance import OSA

from scanner.enrich import typo_index
from scanner.enrich.typo_index import edit_between, one_edit_pairs


def brute_force(names: list[str], min_len: int = 1) -> set[tuple[str, str]]:
    """Pairs at OSA distance exactly 1, by comparing every name with every other."""
    names = sorted({n for n in names if len(n) >= min_len})
    found = set()
    for start in range(0, len(names), 2000):
        block = process.cdist(names[start : start + 2000], names, scorer=OSA.distance, score_cutoff=1,
                              dtype=np.uint8, workers=-1)
        for r, c in zip(*np.nonzero(block == 1)):
            a, b = names[start + int(r)], names[int(c)]
            if a < b:
                found.add((a, b))
    return found


def random_names(count: int, seed: int, alphabet: str, lengths: tuple[int, int], typo_share: float) -> list[str]:
    """Random names with planted omissions, insertions, substitutions and transpositions."""
    rng = random.Random(seed)
    names = ["".join(rng.choice(alphabet) for _ in range(rng.randint(*lengths))) for _ in range(count)]
    for _ in range(int(count * typo_share)):
        s = rng.choice(names)
        if not s:
            continue
        p = rng.randrange(len(s))
        kind = rng.randrange(4)
        if kind == 0:
            s = s[:p] + s[p + 1 :]
        elif kind == 1:
            s = s[:p] + rng.choice(alphabet) + s[p:]
        elif kind == 2:
            s = s[:p] + rng.choice(alphabet) + s[p + 1 :]
        elif p + 1 < len(s):
            s = s[:p] + s[p + 1] + s[p] + s[p + 2 :]
        names.append(s)
    return names


def pair_set(frame) -> set[tuple[str, str]]:
    return set(zip(frame["a"].tolist(), frame["b"].tolist()))


def test_a_dense_small_alphabet_gives_exactly_the_brute_force_pairs_of_every_edit_kind():
    names = random_names(4000, seed=1, alphabet="abcd", lengths=(1, 7), typo_share=0.2)
    pairs = one_edit_pairs(names, min_len=1)
    assert pair_set(pairs) == brute_force(names)
    assert set(pairs["edit"]) == {"omission", "insertion", "substitution", "transposition"}


def test_twenty_thousand_registrable_names_give_exactly_the_brute_force_pairs():
    rng = random.Random(7)
    labels = random_names(19_000, seed=7, alphabet="etaoinsrhldcumfpgwyb0123-", lengths=(4, 12), typo_share=0)
    names = [f"{label}.{rng.choice(['com', 'net', 'es', 'co', 'ne', 'com.es'])}" for label in labels]
    planted = []
    for name in rng.sample(names, 1000):  # plant typos anywhere, the suffix included
        p = rng.randrange(len(name))
        planted.append(name[:p] + name[p + 1 :] if p % 2 else name[:p] + rng.choice("aeio.") + name[p:])
    names = (names + planted)[:20_000]
    assert len(set(names)) > 19_000
    pairs = one_edit_pairs(names, min_len=1)
    expected = brute_force(names)
    assert len(expected) > 1000
    assert pair_set(pairs) == expected


def test_non_ascii_and_long_names_are_compared_by_character_not_by_byte():
    long_a = "x" * 300 + "abc"
    long_b = "x" * 300 + "acb"
    names = ["münchen", "munchen", "münchen-1", "東京タワー", "東京タワ", "ab\u00e9cd", "abecd", long_a, long_b]
    assert pair_set(one_edit_pairs(names, min_len=1)) == brute_force(names)


def test_names_hashed_in_separate_chunks_and_control_characters_still_meet(monkeypatch):
    # Small chunks: some all-ASCII, some not, so both hashing paths meet in one sort; NUL and
    # other control characters are attacker-controlled input like any other character.
    monkeypatch.setattr(typo_index, "_CHUNK_CHARS", 64)
    names = random_names(800, seed=5, alphabet="ab\0c\x7f", lengths=(1, 6), typo_share=0.3)
    names += random_names(200, seed=6, alphabet="abé", lengths=(1, 6), typo_share=0.3)
    pairs = one_edit_pairs(names, min_len=1)
    assert pair_set(pairs) == brute_force(names)
    assert set(pairs["edit"]) == {"omission", "insertion", "substitution", "transposition"}


def test_each_unordered_pair_appears_once_with_the_edit_that_turns_a_into_b():
    pairs = one_edit_pairs(["cualtis", "cuatis", "cualtis", "cuaitis", "cualits"])
    rows = {(r.a, r.b): (r.edit, r.position, r.detail) for r in pairs.itertuples()}
    assert rows == {
        ("cualtis", "cuatis"): ("omission", 3, "'l' omitted"),
        ("cuaitis", "cualtis"): ("substitution", 3, "'i' replaced by 'l'"),
        ("cuaitis", "cuatis"): ("omission", 3, "'i' omitted"),
        ("cualits", "cualtis"): ("transposition", 4, "'it' swapped to 'ti'"),
    }


def test_names_shorter_than_the_minimum_are_ignored():
    pairs = one_edit_pairs(["abc", "abd", "abcd", "abce"], min_len=4)
    assert pair_set(pairs) == {("abcd", "abce")}
    assert pair_set(one_edit_pairs(["abc", "abd"], min_len=3)) == {("abc", "abd")}


def test_missing_values_and_duplicates_do_not_break_the_search():
    pairs = one_edit_pairs(["example", None, float("nan"), "exampel", "example"])
    assert pair_set(pairs) == {("exampel", "example")}
    assert one_edit_pairs([]).empty


@pytest.mark.parametrize(
    ("candidate", "reference", "kind", "detail"),
    [
        ("cuatis", "cualtis", "omission", "'l' omitted"),
        ("cualltis", "cualtis", "insertion", "'l' inserted"),
        ("cuoltis", "cualtis", "substitution", "'a' replaced by 'o'"),
        ("cuatlis", "cualtis", "transposition", "'lt' swapped to 'tl'"),
        ("ne", "net", "omission", "'t' omitted"),
    ],
)
def test_edit_between_names_the_edit_that_turns_the_reference_into_the_candidate(candidate, reference, kind, detail):
    edit = edit_between(candidate, reference)
    assert (edit.kind, edit.detail) == (kind, detail)


def test_names_two_edits_apart_or_equal_are_not_one_edit():
    assert edit_between("cualtis", "cualtis") is None
    assert edit_between("ctuails", "cualtis") is None
    assert edit_between("cualtisxx", "cualtis") is None
    assert edit_between("abc", "cab") is None  # a rotation is two edits under OSA


def brute_force_involving(names: list[str], involving, min_len: int = 1) -> set[tuple[str, str]]:
    """brute_force's pairs with at least one name among involving."""
    wanted = set(involving)
    return {(a, b) for a, b in brute_force(names, min_len) if a in wanted or b in wanted}


# One edit at the first and at the last position of each kind, and names that are no pair.
_EDGE_NAMES = [
    "cualtis", "ualtis", "cualti",  # omissions: first, last
    "xcualtis", "cualtisx",  # insertions: first, last
    "dualtis", "cualtiz",  # substitutions: first, last
    "ucaltis", "cualtsi",  # transpositions: first, last
    "cualtis", "cualtis",  # the same name again: no pair with itself
    "zzzzzzz", "cuxxxis",  # two edits or more from everything
]
_UNICODE_NAMES = ["münchen", "munchen", "mûnchen", "münchenn", "xn--mnchen-3ya", "xn--mnchen-3yb", "xn--mnche-3ya",
                  "köln", "kóln", "日本語", "日本", "日本語x"]


@pytest.mark.parametrize("involving", [
    [], ["cualtis"], ["ualtis"], ["cualtisx", "ucaltis"], ["zzzzzzz"], ["cualtis", "cualtis", "cualtis"],
    ["absent", "cualtisy"],  # not among the names (cualtisy is one edit from cualtis): no pair of its own
    ["cualtis", "absent"], _EDGE_NAMES,
])
def test_pairs_involving_some_names_are_the_brute_force_pairs_holding_one_of_them(involving):
    pairs = one_edit_pairs(_EDGE_NAMES, min_len=1, involving=involving)
    assert pair_set(pairs) == brute_force_involving(_EDGE_NAMES, involving)
    assert pair_set(pairs) <= pair_set(one_edit_pairs(_EDGE_NAMES, min_len=1))


def test_each_edit_kind_is_found_at_the_first_and_the_last_position_for_an_involved_name():
    pairs = one_edit_pairs(_EDGE_NAMES, min_len=1, involving=["cualtis"])
    got = {(a if b == "cualtis" else b): (kind, position)
           for a, b, kind, position in zip(pairs["a"], pairs["b"], pairs["edit"], pairs["position"])}
    assert set(got) == {"ualtis", "cualti", "xcualtis", "cualtisx", "dualtis", "cualtiz", "ucaltis", "cualtsi"}
    assert {kind for kind, _ in got.values()} == {"omission", "insertion", "substitution", "transposition"}
    for row in pairs.itertuples():
        assert edit_between(row.b, row.a).kind == row.edit  # the edit turns a into b


@pytest.mark.parametrize("involving", [["münchen"], ["xn--mnchen-3ya"], ["日本語"], ["köln", "munchen"], []])
def test_pairs_involving_unicode_and_idna_labels_are_the_brute_force_pairs(involving):
    pairs = one_edit_pairs(_UNICODE_NAMES, min_len=1, involving=involving)
    assert pair_set(pairs) == brute_force_involving(_UNICODE_NAMES, involving)


def test_involving_on_empty_names_or_only_absent_names_gives_no_pairs():
    assert one_edit_pairs([], involving=["cualtis"]).empty
    assert one_edit_pairs([], involving=[]).empty
    assert one_edit_pairs(["cualtis", "cuatis"], involving=["other", "cualtiss"]).empty
    assert one_edit_pairs(["cualtis", "cualtis"], involving=["cualtis"]).empty  # equal names: no pair
    assert one_edit_pairs(["cualtis"], involving=["cualtis"]).empty


def test_involving_names_shorter_than_the_minimum_pair_with_nothing():
    names = ["abc", "abd", "abcd", "abce"]
    assert pair_set(one_edit_pairs(names, min_len=4, involving=["abc", "abd"])) == set()
    assert pair_set(one_edit_pairs(names, min_len=4, involving=["abc", "abcd"])) == {("abcd", "abce")}


def test_involving_may_be_any_iterable_and_names_may_hold_missing_values_and_duplicates():
    names = ["example", None, float("nan"), "exampel", "example", "sample", "exampl"]
    pairs = one_edit_pairs(names, involving=(n for n in ["example", "example"]))
    assert pair_set(pairs) == {("exampel", "example"), ("exampl", "example")}


@pytest.mark.parametrize("seed", [3, 4])
def test_random_dense_names_involving_a_random_part_are_the_brute_force_pairs(seed):
    names = random_names(1500, seed=seed, alphabet="abcé", lengths=(1, 6), typo_share=0.3)
    rng = random.Random(seed)
    involving = rng.sample(names, 200) + ["absent-name", ""]
    pairs = one_edit_pairs(names, min_len=2, involving=involving)
    assert pair_set(pairs) == brute_force_involving(names, involving, min_len=2)
    whole = one_edit_pairs(names, min_len=2)
    wanted = set(involving)
    # The same rows, in the same order, as the whole search's that hold an involved name.
    kept = whole[[a in wanted or b in wanted for a, b in zip(whole["a"], whole["b"])]].reset_index(drop=True)
    pd.testing.assert_frame_equal(pairs, kept)
