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


_TABLE_POSITIONS = 256  # all-ASCII names shorter than this use a lookup table instead of _mix
_TABLE = _mix(
    (np.arange(-1, _TABLE_POSITIONS + 1, dtype=np.int64).astype(_U64) << _SHIFT)[:, None]
     | np.arange(128, dtype=_U64)[None, :]
).ravel()  # row r holds position r-1, so the shifted lookups below never index below zero


def _tags(values: np.ndarray, mark: int) -> np.ndarray:
    """Hashes tagging a length or a position, distinct from any character's hash."""
    return _mix((values.astype(_U64) << _SHIFT) | _U64(mark))


@dataclass
class _Hashed:
    """Hash keys of a set of names, their deletions and their adjacent swaps, all flat arrays.

    Every key also hashes the length of the string it stands for, so strings of different lengths
    meet only by collision; "sub" keys also hash the deleted position.
    """

    names: np.ndarray  # object array of distinct names
    full: np.ndarray  # (N,) each name
    deletions: np.ndarray  # (C,) each name without one character (C = total characters)
    del_owner: np.ndarray  # (C,) the name each deletion came from
    sub: np.ndarray  # (C,) deletions tagged with their position: equal for one-substitution pairs
    swaps: np.ndarray  # (K,) each name with two different adjacent characters swapped
    swap_owner: np.ndarray  # (K,)


_CHUNK_CHARS = 1 << 20  # hash this many characters at a time: temporaries stay small and reused


def _hash_names(names: np.ndarray) -> _Hashed:
    """Hash distinct non-empty names (see _Hashed)."""
    lengths = np.fromiter(map(len, names), dtype=np.int64, count=len(names))
    ends = np.cumsum(lengths)
    max_len = int(lengths.max(initial=0))
    length_tag = _tags(np.arange(max_len + 2), 0x1FFFFE)
    pos_tag = _tags(np.arange(max_len + 1), 0x1FFFFF)
    total = int(ends[-1]) if len(ends) else 0
    full = np.empty(len(names), dtype=_U64)
    deletions = np.empty(total, dtype=_U64)
    sub = np.empty(total, dtype=_U64)
    del_owner = np.repeat(np.arange(len(names), dtype=np.int64), lengths)
    swaps: list[np.ndarray] = []
    swap_owner: list[np.ndarray] = []
    first = 0
    while first < len(names):
        base = int(ends[first - 1]) if first else 0
        last = max(int(np.searchsorted(ends, base + _CHUNK_CHARS, side="right")), first + 1)
        chunk = slice(first, last)
        chars = slice(base, int(ends[last - 1]))
        f, d, sb, sw, so = _hash_chunk(names[chunk], lengths[chunk], length_tag, pos_tag)
        full[chunk], deletions[chars], sub[chars] = f, d, sb
        swaps.append(sw)
        swap_owner.append(so + first)
        first = last
    return _Hashed(
        names, full, deletions, del_owner, sub,
        np.concatenate(swaps) if swaps else np.zeros(0, _U64),
        np.concatenate(swap_owner) if swap_owner else np.zeros(0, np.int64),
    )


def _hash_chunk(
    names: np.ndarray, lengths: np.ndarray, length_tag: np.ndarray, pos_tag: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """full, deletions, sub, swaps, swap owners (chunk-local) of a run of names."""
    codes = np.frombuffer("".join(names.tolist()).encode("utf-32-le"), dtype="<u4")
    ends = np.cumsum(lengths)
    starts = ends - lengths
    pos = np.arange(len(codes), dtype=np.int64) - np.repeat(starts, lengths)
    if int(lengths.max()) < _TABLE_POSITIONS and int(codes.max()) < 128:
        flat = pos * 128 + codes + 128
        a, b, c = _TABLE[flat], _TABLE[flat - 128], _TABLE[flat + 128]
    else:
        base = (pos.astype(_U64) << _SHIFT) | codes.astype(_U64)
        step = _U64(1) << _SHIFT
        with np.errstate(over="ignore"):
            a, b, c = _mix(base.copy()), _mix(base - step), _mix(base + step)
    # a: char at its position; b: one position left (after a deletion before it); c: one right.
    # Prefix XORs over the whole flat array; XOR is its own inverse, so any slice is two lookups.
    pa = np.zeros(len(codes) + 1, dtype=_U64)
    np.bitwise_xor.accumulate(a, out=pa[1:])
    pb = np.zeros(len(codes) + 1, dtype=_U64)
    np.bitwise_xor.accumulate(b, out=pb[1:])
    full = pa[ends] ^ pa[starts]
    deletions = pa[:-1] ^ pb[1:]
    deletions ^= np.repeat(pa[starts] ^ pb[ends], lengths)
    sub = deletions ^ pos_tag[pos]
    sub ^= np.repeat(length_tag[lengths], lengths)
    deletions ^= np.repeat(length_tag[lengths - 1], lengths)
    last_in_name = np.zeros(len(codes), dtype=bool)
    last_in_name[ends - 1] = True
    at = np.flatnonzero(~last_in_name[:-1] & (codes[:-1] != codes[1:]))
    owner = np.repeat(np.arange(len(names), dtype=np.int64), lengths)[at]
    full ^= length_tag[lengths]
    swaps = full[owner] ^ a[at] ^ a[at + 1] ^ b[at + 1] ^ c[at]
    return full, deletions, sub, swaps, owner


class _Sorted:
    """Hash keys indexed for many-to-many lookups."""

    def __init__(self, keys: np.ndarray, ids: np.ndarray) -> None:
        self.ids = ids
        self._index = pd.Index(keys)
        self._unique = self._index.is_unique  # false only for repeated keys or a hash collision
        if not self._unique:
            order = np.argsort(keys, kind="stable")
            self.keys = keys[order]
            self.ids = ids[order]

    def match(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in keys, owner id) for every stored key equal to a query key."""
        if not len(self.ids) or not len(keys):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if self._unique:  # a hash probe per key: much faster than a binary search
            found = self._index.get_indexer(keys)
            at = np.flatnonzero(found >= 0)
            return at, self.ids[found[at]]
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


_ID_BITS = 24  # owner ids packed under a key's top bits, so a plain (SIMD) sort does the join
_ID_MASK = _U64((1 << _ID_BITS) - 1)


def _runs(top: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """For sorted keys: indices of elements in runs of 2 or more, and each one's run start (or None)."""
    same = top[1:] == top[:-1]
    if not same.any():
        return None
    in_run = np.zeros(len(top), dtype=bool)
    in_run[1:] |= same
    in_run[:-1] |= same
    keep = np.flatnonzero(in_run)
    kept = top[keep]
    new_run = np.ones(len(kept), dtype=bool)
    new_run[1:] = kept[1:] != kept[:-1]
    return keep, np.maximum.accumulate(np.where(new_run, np.arange(len(kept)), 0))


def _expand(first: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Element i repeated counts[i] times, paired with first[i], first[i]+1, ..."""
    starts = np.cumsum(counts) - counts
    who = np.repeat(np.arange(len(counts)), counts)
    return who, first[who] + (np.arange(counts.sum()) - starts[who])


def _equal_key_pairs(keys: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of owners sharing a key (plus rare top-40-bit collisions, dropped by verification)."""
    if not len(ids):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if int(ids.max()) >= 1 << _ID_BITS:
        order = np.argsort(keys)
        top, ids = keys[order], ids[order]
    else:
        packed = np.sort((keys >> _U64(_ID_BITS)) << _U64(_ID_BITS) | ids.astype(_U64))
        ids = (packed & _ID_MASK).astype(np.int64)
        top = packed >> _U64(_ID_BITS)
    runs = _runs(top)
    if runs is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keep, run_start = runs
    ids = ids[keep]
    rank = np.arange(len(keep)) - run_start  # each element pairs with the `rank` before it
    later, earlier = _expand(run_start, rank)
    return ids[earlier], ids[later]


def _probe_pairs(stored: np.ndarray, probes: np.ndarray, probe_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probe owner, stored index) for every probe equal to a stored key (top 39 bits; verify after)."""
    n = len(stored)
    if not n or not len(probes):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if max(n - 1, int(probe_ids.max())) >= 1 << _ID_BITS:
        at, found = _Sorted(stored, np.arange(n, dtype=np.int64)).match(probes)
        return probe_ids[at], found
    # top 39 bits | 1 bit "is a probe" | 24-bit id: stored keys sort first within each run.
    shift = _U64(_ID_BITS + 1)
    packed = np.concatenate([
        (stored >> shift) << shift | np.arange(n, dtype=_U64),
        (probes >> shift) << shift | _U64(1 << _ID_BITS) | probe_ids.astype(_U64),
    ])
    packed.sort()
    runs = _runs(packed >> shift)
    if runs is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keep, run_start = runs
    packed = packed[keep]
    is_probe = (packed & _U64(1 << _ID_BITS)) != 0
    ids = (packed & _ID_MASK).astype(np.int64)
    stored_before = np.cumsum(~is_probe)  # stored elements up to here; runs begin with them
    stored_in_run = stored_before - np.where(is_probe, 0, 1)
    stored_in_run = stored_in_run - (stored_before[run_start] - 1 + is_probe[run_start])
    probe_at = np.flatnonzero(is_probe)
    who, partner = _expand(run_start[probe_at], stored_in_run[probe_at])
    return ids[probe_at[who]], ids[partner]


def _unique_names(names: Iterable[str], min_len: int) -> np.ndarray:
    """Distinct names at least min_len long, as an object array."""
    floor = max(min_len, 1)
    distinct = list(dict.fromkeys(names))
    try:
        lengths = np.fromiter(map(len, distinct), dtype=np.int64, count=len(distinct))
        if not all(map(str.__instancecheck__, distinct)):
            raise TypeError("not all names are str")
        kept = [distinct[i] for i in np.flatnonzero(lengths >= floor).tolist()]
    except TypeError:  # missing values (None, NaN, pd.NA) among the names
        kept = [n for n in distinct if isinstance(n, str) and len(n) >= floor]
    out = np.empty(len(kept), dtype=object)
    out[:] = kept
    return out


def _classified(names: np.ndarray, left: np.ndarray, right: np.ndarray) -> pd.DataFrame:
    """Verify candidate pairs exactly and describe them, each unordered pair once with a < b."""
    if not len(left):
        return pd.DataFrame({k: pd.Series(dtype=v) for k, v in PAIR_COLUMNS.items()})
    n = np.int64(len(names))
    packed = np.unique(np.minimum(left, right) * n + np.maximum(left, right))
    first, second = packed // n, packed % n
    keep = first != second
    rows_a, rows_b, kinds, positions, details = [], [], [], [], []
    for x, y in zip(names[first[keep]].tolist(), names[second[keep]].tolist()):
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
    h = _hash_names(_unique_names(names, min_len))
    sub_a, sub_b = _equal_key_pairs(h.sub, h.del_owner)  # substitutions
    # transpositions and omissions (the shorter name is a deletion of the longer), in one sort
    probe_a, probe_b = _probe_pairs(
        h.full, np.concatenate([h.swaps, h.deletions]), np.concatenate([h.swap_owner, h.del_owner])
    )
    left = np.concatenate([sub_a, probe_a])
    right = np.concatenate([sub_b, probe_b])
    return _classified(h.names, left, right)


class TypoIndex:
    """A reference set of names, queried for names one edit away from it."""

    def __init__(self, reference: Iterable[str], *, min_len: int = DEFAULT_MIN_LEN) -> None:
        self.min_len = min_len
        h = _hash_names(_unique_names(reference, min_len))
        self._names = h.names
        self._full = _Sorted(h.full, np.arange(len(h.names), dtype=np.int64))
        self._sub = _Sorted(h.sub, h.del_owner)
        self._deletions = _Sorted(h.deletions, h.del_owner)

    def __len__(self) -> int:
        return len(self._names)

    def lookup(self, names: Iterable[str]) -> pd.DataFrame:
        """Columns name, neighbour, edit, position, detail: the edit turns the neighbour into the name."""
        q = _hash_names(_unique_names(names, self.min_len))
        at_s, ref_s = self._sub.match(q.sub)  # substitutions
        at_t, ref_t = self._full.match(q.swaps)  # transpositions
        at_o, ref_o = self._full.match(q.deletions)  # the reference lacks one of the query's characters
        at_i, ref_i = self._deletions.match(q.full)  # the reference has one more character
        left = np.concatenate([q.del_owner[at_s], q.swap_owner[at_t], q.del_owner[at_o], at_i])
        right = np.concatenate([ref_s, ref_t, ref_o, ref_i])
        rows = []
        if len(left):
            width = np.int64(max(len(self._names), 1))
            packed = np.unique(left * width + right)
            for name, ref in zip(q.names[packed // width].tolist(), self._names[packed % width].tolist()):
                edit = edit_between(name, ref)
                if edit is not None:  # drop hash collisions
                    rows.append((name, ref, edit.kind, edit.position, edit.detail))
        out = pd.DataFrame(rows, columns=["name", "neighbour", "edit", "position", "detail"])
        return out.astype(
            {"name": "string", "neighbour": "string", "edit": "string", "position": "Int64", "detail": "string"}
        ).sort_values(["name", "neighbour"], ignore_index=True)

    def neighbours(self, name: str) -> list[tuple[str, str]]:
        """(neighbour, edit that turns the neighbour into name) for each reference name one edit away."""
        found = self.lookup([name])
        return list(zip(found["neighbour"].tolist(), found["detail"].tolist()))
