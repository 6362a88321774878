"""revoke_reissue's subscriber index (_Subscribers) finds exactly the candidates a brute-force comparison finds."""

from __future__ import annotations

import random

import pandas as pd
import pyarrow as pa
import pytest
from rapidfuzz.distance import OSA

from scanner.detect.namecodes import key_pairs
from scanner.detect.revocation import _Subscribers
from scanner.enrich.organisation import key_and_labels
from scanner.enrich.subscribers import MIN_LABEL, comparison_key
from scanner.enrich.typo_index import one_edit_pairs
from scanner.parse.domains import classify_all, classify_name

_LABELS = ["cualtis", "cuatis", "cualtiss", "acme", "acne", "münchen", "munchen", "xn--mnchen-3ya", "abc", "abd",
           "example", "exampel", "other"]
_SUFFIXES = ["com", "net", "es", "co.uk"]
_ORGS = ["CUALTIS S.L.U", "Cualtis SL", "ACME Inc.", "Other SA", None, ""]


def _certs(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        names = [f"{rng.choice(['', 'www.', 'mail.'])}{rng.choice(_LABELS)}.{rng.choice(_SUFFIXES)}"
                 for _ in range(rng.randint(0, 3))]
        cn = rng.choice([None, "", names[0] if names else f"{rng.choice(_LABELS)}.com", "Some Person"])
        rows.append((f"{i:064x}", names, cn, rng.choice(_ORGS),
                     pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(hours=rng.randrange(200))))
    return pd.DataFrame(rows, columns=["sha256", "san_dns", "subject_cn", "subject_o", "not_before"]).astype(
        {"sha256": "string", "subject_cn": "string", "subject_o": "string"})


def _facts(row: pd.Series) -> tuple[set[str], set[str], str]:
    """(registrable domains, comparison keys, organisation key) of a certificate, one name at a time."""
    cn = row["subject_cn"] if isinstance(row["subject_cn"], str) else ""
    infos = [x for x in map(classify_name, [*row["san_dns"], cn]) if x.registrable]
    org = row["subject_o"] if isinstance(row["subject_o"], str) else ""
    return {x.registrable for x in infos}, {comparison_key(x.label) for x in infos}, key_and_labels(org)[0]


def _linked(a: tuple, b: tuple) -> bool:
    if a[0] & b[0] or a[1] & b[1] or (a[2] and a[2] == b[2]):
        return True
    return any(OSA.distance(x, y) == 1 for x in a[1] if len(x) >= MIN_LABEL for y in b[1] if len(y) >= MIN_LABEL)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_candidates_are_the_rows_a_brute_force_comparison_links(seed):
    certs = _certs(120, seed)
    subs = _Subscribers(certs, None, classify_all(certs))
    facts = [_facts(certs.iloc[int(k)]) for k in subs.order]
    for i in range(len(certs)):
        lo, hi = max(0, i - 30), min(len(certs), i + 40)
        expected = {j for j in range(lo, hi) if j != i and _linked(facts[i], facts[j])}
        assert subs.candidates(i, lo, hi) == expected, i
        domains, keys = subs._names_of(i)
        assert (domains, set(keys)) == facts[i][:2] and keys == sorted(keys)


def test_only_the_asking_rows_keys_are_indexed_and_their_candidates_are_unchanged():
    certs = _certs(150, 7)
    classified = classify_all(certs)
    whole = _Subscribers(certs, None, classified)
    asking_rows = list(range(0, 150, 9))
    asking = pa.array([whole.sha(i) for i in asking_rows], type=pa.string())
    windows = [(whole.not_before(i), whole.not_before(i) + pd.Timedelta(hours=30)) for i in asking_rows]
    part = _Subscribers(certs, windows, classified, asking)
    for i in asking_rows:
        hi = int(pd.Series(whole.nb).searchsorted((whole.not_before(i) + pd.Timedelta(hours=30)).tz_convert(None)
                                                  .to_datetime64(), side="right"))
        lo = int(pd.Series(whole.nb).searchsorted(whole.nb[i], side="left"))
        assert part.candidates(i, lo, hi) == whole.candidates(i, lo, hi)


def test_key_pairs_cut_from_the_scans_search_equal_a_search_of_those_keys_alone():
    certs = _certs(200, 11)
    classified = classify_all(certs)
    everything = pa.array(sorted(set(_LABELS) | {"cualtiz", "unrelated"}), type=pa.string())
    for keys in (pa.array(["cualtis", "cuatis", "acme"]), pa.array([], type=pa.string()), everything,
                 pa.array(["cualtis", "cualtis", "nothing-like-it"])):
        expected = one_edit_pairs(keys.to_pylist(), min_len=MIN_LABEL)
        pd.testing.assert_frame_equal(key_pairs(classified, keys, MIN_LABEL), expected)
