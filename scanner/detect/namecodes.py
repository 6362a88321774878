"""The classified names of a scan as integer codes, derived once and shared by the detectors that compare them.

A code stands for one distinct string, so codes join and compare for equality as the strings do
while holding no Python object; where an order of strings decides (which neighbour, which witness),
text_order ranks the few codes involved. The strings are looked up only for the names a finding quotes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from scanner.enrich.subscribers import comparison_keys
from scanner.enrich.typo_index import one_edit_pairs
from scanner.parse.domains import PUBLIC, Classified, with_names


def codes_of(values: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(each value's code, the distinct values): equal strings, equal codes (in no particular order)."""
    encoded = pc.dictionary_encode(values)
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def text_order(codes: np.ndarray, values: pa.Array) -> np.ndarray:
    """Each code's rank among these codes' strings in code point order: sorting by it sorts by the strings.

    Only the codes asked about are sorted (a few candidates), never the whole column of distinct names.
    """
    used, inverse = np.unique(codes, return_inverse=True)
    order = pc.sort_indices(values.take(pa.array(used, type=pa.int64()))).to_numpy()
    rank = np.empty(len(used), dtype=np.int64)
    rank[order] = np.arange(len(used))
    return rank[inverse.reshape(-1)]


@dataclass(frozen=True)
class NameCodes:
    """Per row of a Classified: whether the name is public, its registrable domain, suffix and comparison key, as codes."""

    public: np.ndarray  # bool
    registrable: np.ndarray  # code into registrables ('' for a name without one)
    registrables: pa.Array
    suffix: np.ndarray  # code into suffixes
    suffixes: pa.Array
    key: np.ndarray  # the comparison key of the registrable label, code into keys
    keys: pa.Array
    key_length: np.ndarray  # per key code: its length in code points


def name_codes(classified: Classified) -> NameCodes:
    """The codes of every name classified (kept in classified.memo: computed once per scan)."""
    got = classified.memo.get("name_codes")
    if got is not None and got[0] is classified.raw:
        return got[1]
    registrable, registrables = codes_of(classified.columns["registrable"])
    suffix, suffixes = codes_of(classified.columns["suffix"])
    labels = pc.dictionary_encode(classified.columns["label"])
    key_of_label, keys = codes_of(comparison_keys(labels.dictionary))
    codes = NameCodes(
        public=pc.equal(classified.columns["kind"], PUBLIC).to_numpy(zero_copy_only=False),
        registrable=registrable, registrables=registrables, suffix=suffix, suffixes=suffixes,
        key=key_of_label[labels.indices.to_numpy(zero_copy_only=False)], keys=keys,
        key_length=pc.utf8_length(keys).to_numpy(zero_copy_only=False).astype(np.int64),
    )
    classified.memo["name_codes"] = (classified.raw, codes)
    return codes


def positions(classified: Classified | None, values: pa.Array, *more: pa.Array) -> tuple[Classified, np.ndarray]:
    """with_names(classified, values + more), the part for values kept in classified.memo for the same array.

    values is an exploded column the next detector asks about again; more are looked up in the same
    pass (each lookup hashes every classified name once).
    """
    memo = classified.memo.setdefault("positions", {}) if classified is not None else {}
    got = memo.get(id(values))
    if got is not None and got[0] is values:
        if not more:
            return classified, got[1]  # type: ignore[return-value]
        held, rest = with_names(classified, pa.concat_arrays(list(more)))
        return held, np.concatenate([got[1], rest])  # a name added by more comes after those held: still valid
    held, at = with_names(classified, pa.concat_arrays([values, *more]) if more else values)
    if held is classified:  # else names were missing: a new Classified the memo does not describe
        memo[id(values)] = (values, at[: len(values)])  # the array is kept, so its id cannot be reused meanwhile
    return held, at


def texts(values: pa.Array, codes: "list[int] | np.ndarray") -> list[str]:
    """The strings these codes stand for."""
    return values.take(pa.array(np.asarray(codes, dtype=np.int64), type=pa.int64())).to_pylist()


def key_pairs(classified: Classified | None, keys: pa.Array, min_len: int, *, also: pa.Array | None = None
              ) -> pd.DataFrame:
    """one_edit_pairs(keys, min_len=min_len), from one search per scan over every comparison key and `also`.

    Two detectors compare keys of the same names (the typo detector, revoke_reissue's typo links):
    whether two strings are one edit apart depends on them alone, so the pairs of a superset kept
    in classified.memo, cut down to keys, are the pairs of keys (in the same order); the sort of
    every deletion of a few hundred thousand keys is done once instead of per detector.
    """
    keys = pc.unique(keys.cast(pa.string()))
    if classified is None:
        return one_edit_pairs(keys.to_pylist(), min_len=min_len)
    memo = classified.memo.get(("key_pairs", min_len))
    if memo is None or not pc.all(pc.is_in(keys, value_set=memo[0])).as_py():
        codes = name_codes(classified)
        parts = [codes.keys, keys] + ([also.cast(pa.string())] if also is not None else [])
        if memo is not None:
            parts.append(memo[0])
        universe = pc.unique(pa.concat_arrays(parts))
        universe = universe.filter(pc.greater_equal(pc.utf8_length(universe), min_len))
        memo = classified.memo[("key_pairs", min_len)] = (universe, one_edit_pairs(universe.to_pylist(),
                                                                                     min_len=min_len))
    pairs = memo[1]
    a = pa.array(pairs["a"], type=pa.string(), from_pandas=True)
    b = pa.array(pairs["b"], type=pa.string(), from_pandas=True)
    kept = pc.and_(pc.is_in(a, value_set=keys), pc.is_in(b, value_set=keys)).to_numpy(zero_copy_only=False)
    return pairs[kept].reset_index(drop=True)
