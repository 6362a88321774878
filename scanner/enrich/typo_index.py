"""Pairs of names one typo apart (omission, insertion, substitution, adjacent transposition).

The search is a symmetric-deletion index, vectorised with numpy, never an all-pairs comparison:

* every name and every single-character deletion of it is hashed (a position-aware hash, so the
  deletion variants come from prefix/suffix XORs instead of building strings);
* two same-length names one substitution apart share the deletion variant at the same position;
* a name one omission away from another equals one of the longer name's deletion variants;
* a name one adjacent transposition away equals one of the other name's "swap" variants
  (deletion variants alone would only make it a candidate at distance <= 2, so swaps are keyed too).

Every candidate pair is then verified and classified exactly, so a hash collision can only cost
time, never invent or hide a pair. The result equals the optimal-string-alignment (OSA) distance 1
pairs of a brute-force comparison.

Very short names are ignored (``min_len``, default 4): almost every 3-letter string is one edit from
hundreds of others, so pairs among them say nothing about typos and would swamp the output.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

EDIT_KINDS = ("omission", "insertion", "substitution", "transposition")

#: Names shorter than this are ignored by default (see the module docstring).
DEFAULT_MIN_LEN = 4

PAIR_COLUMNS: dict[str, str] = {
    "a": "string",  # a < b
    "b": "string",
    "edit": "string",  # the edit that turns a into b
    "position": "Int64",  # 0-based position in a
    "detail": "string",  # e.g. "'l' omitted"
}


@dataclass(frozen=True)
class Edit:
    """One edit that turns a reference string into a candidate."""

    kind: str  # one of EDIT_KINDS
    position: int  # 0-based position in the reference
    detail: str  # e.g. "'l' omitted", "'a' replaced by 'e'", "'lt' swapped to 'tl'"


def edit_between(candidate: str, reference: str) -> Edit | None:
    """The single edit that turns reference into candidate, or None if they are not one edit apart."""
    lc, lr = len(candidate), len(reference)
    if abs(lc - lr) > 1 or candidate == reference:
        return None
    p = 0
    shortest = min(lc, lr)
    while p < shortest and candidate[p] == reference[p]:
        p += 1
    if lc == lr:
        if candidate[p + 1 :] == reference[p + 1 :]:
            return Edit("substitution", p, f"'{reference[p]}' replaced by '{candidate[p]}'")
        if (
            p + 1 < lr
            and candidate[p] == reference[p + 1]
            and candidate[p + 1] == reference[p]
            and candidate[p + 2 :] == reference[p + 2 :]
        ):
            pair = reference[p : p + 2]
            return Edit("transposition", p, f"'{pair}' swapped to '{pair[::-1]}'")
        return None
    if lc < lr:
        if candidate[p:] == reference[p + 1 :]:
            return Edit("omission", p, f"'{reference[p]}' omitted")
        return None
    if candidate[p + 1 :] == reference[p:]:
        return Edit("insertion", p, f"'{candidate[p]}' inserted")
    return None


def classify_edit(candidate: str, reference: str) -> str | None:
    """The kind of edit (omission|insertion|substitution|transposition) turning reference into candidate."""
    edit = edit_between(candidate, reference)
    return edit.kind if edit else None


# --- hashing --------------------------------------------------------------------------------------

_U64 = np.uint64
_SHIFT = _U64(21)  # code points need 21 bits; the position goes above them
_POS_MARK = 0x1FFFFF  # not a code point: tags the "deletion at position i" keys
_M0, _M1, _M2 = _U64(0x9E3779B97F4A7C15), _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place: a bijection, so distinct (position, char) never collide."""
    with np.errstate(over="ignore"):
        x *= _M0
        x ^= x >> _U64(30)
        x *= _M1
        x ^= x >> _U64(27)
        x *= _M2
        x ^= x >> _U64(31)
    return x


@dataclass
class _Group:
    """Hashes of all names of one length: the name, its deletions, its adjacent swaps."""

    length: int
    ids: np.ndarray  # indices into the unique-name array
    full: np.ndarray  # (n,)
    deletions: np.ndarray  # (n, length): hash of the name without character i
    swaps: np.ndarray  # (k,) hashes of adjacent swaps that change the name
    swap_ids: np.ndarray  # (k,) owner ids of swaps

    def deletion_keys(self) -> np.ndarray:
        """Deletion hashes tagged with the position, so only same-position deletions meet."""
        pos = np.arange(self.length, dtype=_U64) << _SHIFT
        return (self.deletions ^ _mix(pos | _U64(_POS_MARK))[None, :]).ravel()

    def deletion_ids(self) -> np.ndarray:
        """Owner id of each entry of deletions.ravel()."""
        return np.repeat(self.ids, self.length)


def _hash_group(codes: np.ndarray, ids: np.ndarray) -> _Group:
    """Hash names of one length given as an (n, length) array of code points."""
    n, length = codes.shape
    base = (np.arange(length, dtype=_U64) << _SHIFT)[None, :] | codes.astype(_U64)
    a = _mix(base.copy())  # char k at position k
    step = _U64(1) << _SHIFT
    prefix = np.bitwise_xor.accumulate(a, axis=1)
    full = prefix[:, -1].copy()
    deletions = np.zeros((n, length), dtype=_U64)
    deletions[:, 1:] = prefix[:, :-1]
    del prefix
    if length > 1:
        with np.errstate(over="ignore"):
            b = _mix(base[:, 1:] - step)  # char k at position k-1 (it moved left)
        suffix = np.bitwise_xor.accumulate(b[:, ::-1], axis=1)[:, ::-1]
        deletions[:, :-1] ^= suffix
        del suffix
        c = _mix(base[:, :-1] + step)  # char k at position k+1
        swaps = full[:, None] ^ a[:, :-1] ^ a[:, 1:] ^ b ^ c
        changes = codes[:, :-1] != codes[:, 1:]
        swap_ids = np.broadcast_to(ids[:, None], changes.shape)[changes]
        swaps = swaps[changes]
    else:
        swaps = np.zeros(0, dtype=_U64)
        swap_ids = np.zeros(0, dtype=np.int64)
    return _Group(length, ids, full, deletions, swaps, swap_ids)


def _hash_names(names: np.ndarray) -> dict[int, _Group]:
    """Group unique names by length and hash each group."""
    lengths = np.fromiter(map(len, names), dtype=np.int64, count=len(names))
    order = np.argsort(lengths, kind="stable")
    sorted_lengths = lengths[order]
    bounds = np.flatnonzero(np.diff(sorted_lengths)) + 1
    groups: dict[int, _Group] = {}
    for ids in np.split(order, bounds):
        if not len(ids):
            continue
        length = int(lengths[ids[0]])
        if length == 0:
            continue
        text = "".join(names[ids].tolist()).encode("utf-32-le")
        codes = np.frombuffer(text, dtype="<u4").reshape(len(ids), length)
        groups[length] = _hash_group(codes, ids.astype(np.int64))
    return groups


class _Sorted:
    """Hash keys sorted for many-to-many lookups."""

    def __init__(self, keys: np.ndarray, ids: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.ids = ids[order]

    def match(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in keys, owner id) for every stored key equal to a query key."""
        if not len(self.keys) or not len(keys):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        lo = np.searchsorted(self.keys, keys, side="left")
        inside = lo < len(self.keys)
        hit = np.zeros(len(keys), dtype=bool)
        hit[inside] = self.keys[lo[inside]] == keys[inside]
        at = np.flatnonzero(hit)
        lo = lo[at]
        hi = np.searchsorted(self.keys, keys[at], side="right")
        counts = hi - lo
        starts = np.cumsum(counts) - counts
        offsets = np.arange(counts.sum()) - np.repeat(starts - lo, counts)
        return np.repeat(at, counts), self.ids[offsets]


def _equal_key_pairs(keys: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of owners sharing a key (each pair once per shared key)."""
    dup = pd.Series(keys).duplicated(keep=False).to_numpy()
    if not dup.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys, ids = keys[dup], ids[dup]
    order = np.argsort(keys, kind="stable")
    keys, ids = keys[order], ids[order]
    new_run = np.ones(len(keys), dtype=bool)
    new_run[1:] = keys[1:] != keys[:-1]
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(len(keys)), 0))
    rank = np.arange(len(keys)) - run_start  # each element pairs with the `rank` before it
    later = np.repeat(np.arange(len(keys)), rank)
    starts = np.cumsum(rank) - rank
    earlier = run_start[later] + (np.arange(rank.sum()) - np.repeat(starts, rank))
    return ids[earlier], ids[later]


def _unique_names(names: Iterable[str], min_len: int) -> np.ndarray:
    """Distinct names at least min_len long, as an object array."""
    uniq = pd.unique(pd.Series(list(names), dtype=object).dropna().astype(str))
    lengths = np.fromiter(map(len, uniq), dtype=np.int64, count=len(uniq))
    return uniq[lengths >= max(min_len, 1)]


def _classified(names: np.ndarray, left: np.ndarray, right: np.ndarray) -> pd.DataFrame:
    """Verify candidate pairs exactly and describe them, each unordered pair once with a < b."""
    if not len(left):
        return pd.DataFrame({k: pd.Series(dtype=v) for k, v in PAIR_COLUMNS.items()})
    pairs = np.unique(np.stack([np.minimum(left, right), np.maximum(left, right)], axis=1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    rows_a, rows_b, kinds, positions, details = [], [], [], [], []
    for x, y in zip(names[pairs[:, 0]].tolist(), names[pairs[:, 1]].tolist()):
        a, b = (x, y) if x < y else (y, x)
        edit = edit_between(b, a)
        if edit is None:  # a hash collision, not a neighbour
            continue
        rows_a.append(a)
        rows_b.append(b)
        kinds.append(edit.kind)
        positions.append(edit.position)
        details.append(edit.detail)
    out = pd.DataFrame({"a": rows_a, "b": rows_b, "edit": kinds, "position": positions, "detail": details})
    out = out.astype(PAIR_COLUMNS)
    return out.sort_values(["a", "b"], ignore_index=True)


def one_edit_pairs(names: Sequence[str] | Iterable[str], *, min_len: int = DEFAULT_MIN_LEN) -> pd.DataFrame:
    """Every unordered pair of distinct names one edit apart (PAIR_COLUMNS; the edit turns a into b)."""
    uniq = _unique_names(names, min_len)
    groups = _hash_names(uniq)
    lefts: list[np.ndarray] = []
    rights: list[np.ndarray] = []
    for length, group in groups.items():
        left, right = _equal_key_pairs(group.deletion_keys(), group.deletion_ids())  # substitutions
        lefts.append(left)
        rights.append(right)
        same = _Sorted(group.full, group.ids)
        at, right = same.match(group.swaps)  # transpositions
        lefts.append(group.swap_ids[at])
        rights.append(right)
        shorter = groups.get(length - 1)
        if shorter is not None:  # omissions (the shorter name is a deletion variant of the longer)
            at, right = _Sorted(shorter.full, shorter.ids).match(group.deletions.ravel())
            lefts.append(group.ids[at // length])
            rights.append(right)
    left = np.concatenate(lefts) if lefts else np.zeros(0, np.int64)
    right = np.concatenate(rights) if rights else np.zeros(0, np.int64)
    return _classified(uniq, left, right)


class TypoIndex:
    """A reference set of names, queried for names one edit away from it."""

    def __init__(self, reference: Iterable[str], *, min_len: int = DEFAULT_MIN_LEN) -> None:
        self.min_len = min_len
        self._names = _unique_names(reference, min_len)
        self._groups = _hash_names(self._names)
        self._full = {n: _Sorted(g.full, g.ids) for n, g in self._groups.items()}
        self._by_position = {n: _Sorted(g.deletion_keys(), g.deletion_ids()) for n, g in self._groups.items()}
        self._deletions = {
            n: _Sorted(g.deletions.ravel(), g.deletion_ids()) for n, g in self._groups.items()
        }

    def __len__(self) -> int:
        return len(self._names)

    def lookup(self, names: Iterable[str]) -> pd.DataFrame:
        """Columns name, neighbour, edit, position, detail: the edit turns the neighbour into the name."""
        queries = _unique_names(names, self.min_len)
        groups = _hash_names(queries)
        found_q: list[np.ndarray] = []
        found_r: list[np.ndarray] = []

        def add(q: np.ndarray, r: np.ndarray) -> None:
            found_q.append(q)
            found_r.append(r)

        for length, g in groups.items():
            if length in self._by_position:  # substitutions
                at, r = self._by_position[length].match(g.deletion_keys())
                add(g.ids[at // length], r)
            if length in self._full:  # transpositions
                at, r = self._full[length].match(g.swaps)
                add(g.swap_ids[at], r)
            if length - 1 in self._full:  # the reference lacks one of the query's characters
                at, r = self._full[length - 1].match(g.deletions.ravel())
                add(g.ids[at // length], r)
            if length + 1 in self._deletions:  # the reference has one more character
                at, r = self._deletions[length + 1].match(g.full)
                add(g.ids[at], r)
        rows = []
        if found_q:
            q = np.concatenate(found_q)
            r = np.concatenate(found_r)
            pairs = np.unique(np.stack([q, r], axis=1), axis=0)
            for name, ref in zip(queries[pairs[:, 0]].tolist(), self._names[pairs[:, 1]].tolist()):
                edit = edit_between(name, ref)
                if edit is not None:
                    rows.append((name, ref, edit.kind, edit.position, edit.detail))
        out = pd.DataFrame(rows, columns=["name", "neighbour", "edit", "position", "detail"])
        return out.astype(
            {"name": "string", "neighbour": "string", "edit": "string", "position": "Int64", "detail": "string"}
        ).sort_values(["name", "neighbour"], ignore_index=True)

    def neighbours(self, name: str) -> list[tuple[str, str]]:
        """(neighbour, edit that turns the neighbour into name) for each reference name one edit away."""
        found = self.lookup([name])
        return list(zip(found["neighbour"].tolist(), found["detail"].tolist()))
