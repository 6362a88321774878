"""Pairs of names one typo apart (omission, insertion, substitution, adjacent transposition).

The search is a symmetric-deletion index, vectorised with numpy, never an all-pairs comparison.
Every name and every single-character deletion of it is hashed (a position-aware hash, so the
deletion variants come from prefix/suffix XORs instead of building strings), and one sort of all
those keys brings equal strings together. Two names one edit apart always meet there:

* one omission: the shorter name equals a deletion of the longer one;
* one substitution at position p: both names without position p are equal;
* the adjacent transposition of positions p and p+1: the one name without p equals the other without
  p+1, so deletions meeting at positions one apart are kept as candidates too.

Every candidate pair is then verified and classified exactly, so a hash collision or a pair two
edits apart can only cost time, never invent or hide a pair. The result equals the
optimal-string-alignment (OSA) distance 1 pairs of a brute-force comparison.

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


# --- hashing --------------------------------------------------------------------------------------

_U64 = np.uint64
_SHIFT = _U64(21)  # code points need 21 bits; the position goes above them
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


@dataclass
class _Hashed:
    """Keys of a set of names: one per single-character deletion, then one per whole name.

    A key XORs one hash per (position, character) of the string it stands for, so two keys are
    equal when their strings are (or, rarely, by collision: candidates are always verified).
    Element k < C (C = total characters) is the name without character k of the names written
    end to end; element C + i is name i.
    """

    names: list[str]  # distinct names
    lengths: np.ndarray  # (N,)
    keys: np.ndarray  # (C + N,)
    codes: np.ndarray  # (C,) the code point each deletion removed
    positions: np.ndarray  # (C,) its position in the name

    def owners(self, at: np.ndarray) -> np.ndarray:
        """The name each of these deletions came from."""
        return np.searchsorted(np.cumsum(self.lengths), at, side="right")


_CHUNK_CHARS = 1 << 20  # hash this many characters at a time: temporaries stay small and reused


def _hash_names(unique: tuple[list[str], np.ndarray]) -> _Hashed:
    """Hash distinct non-empty names, given with their lengths (see _Hashed)."""
    names, lengths = unique
    ends = np.cumsum(lengths)
    total = int(ends[-1]) if len(ends) else 0
    keys = np.empty(total + len(names), dtype=_U64)
    positions = np.empty(total, dtype=np.uint8 if int(lengths.max(initial=0)) <= 256 else np.int64)
    codes: list[np.ndarray] = []
    first = 0
    while first < len(names):
        base = int(ends[first - 1]) if first else 0
        last = max(int(np.searchsorted(ends, base + _CHUNK_CHARS, side="right")), first + 1)
        chars = slice(base, int(ends[last - 1]))
        codes.append(_code_points(names[first:last]))
        _hash_chunk(codes[-1], lengths[first:last], keys[chars], keys[total + first : total + last], positions[chars])
        first = last
    all_codes = codes[0] if len(codes) == 1 else np.concatenate(codes) if codes else np.zeros(0, np.uint8)
    return _Hashed(names, lengths, keys, all_codes, positions)


def _code_points(names: list[str]) -> np.ndarray:
    """The code points of a run of names, end to end."""
    text = "".join(names)
    if text.isascii():  # one byte per character: a quarter of the memory traffic of UTF-32
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")


def _hash_chunk(codes: np.ndarray, lengths: np.ndarray, deletions: np.ndarray, full: np.ndarray,
                positions: np.ndarray) -> None:
    """Fill the deletion keys, whole-name keys and positions of a run of names (code points end to end)."""
    # Few, reused temporaries: fresh pages cost a fault each, more than the arithmetic on them.
    starts = np.cumsum(lengths) - lengths
    last = starts + lengths - 1
    pos = np.ones(len(codes), dtype=np.intp)  # each character's position in its name
    pos[starts[1:]] = 1 - lengths[:-1]
    np.cumsum(pos, out=pos)
    pos -= 1
    positions[:] = pos
    if int(lengths.max()) < _TABLE_POSITIONS and int(codes.max()) < 128:
        pos *= 128
        pos += codes
        pos += 128
        a = _TABLE.take(pos)  # the character at its own position
        pos -= 128
        b = _TABLE.take(pos)  # the character one position to the left, as after a deletion before it
    else:
        base = (pos.astype(_U64) << _SHIFT) | codes.astype(_U64)
        with np.errstate(over="ignore"):
            a, b = _mix(base.copy()), _mix(base - (_U64(1) << _SHIFT))
    # Deletion k = XOR of a over its name's characters before k and of b over those after k: two
    # running XORs over the chunk, less a per-name constant that a third spreads over the name.
    np.bitwise_xor.accumulate(a, out=a)  # a[k]: XOR of a[0..k]
    np.bitwise_xor.accumulate(b, out=b)
    before_name = a[starts - 1]
    before_name[0] = 0
    full[:] = a[last] ^ before_name
    per_name = before_name ^ b[last]
    spread = pos.view(_U64)
    spread[:] = 0
    spread[starts] = per_name
    spread[starts[1:]] ^= per_name[:-1]
    np.bitwise_xor.accumulate(spread, out=spread)
    np.bitwise_xor(spread, b, out=deletions)
    deletions[1:] ^= a[:-1]


def _candidates(h: _Hashed, at_x: np.ndarray, at_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(name, name) for key matches that can be one edit (elements at_x of h equal elements at_y)."""
    n = len(h.codes)
    whole_x, whole_y = at_x >= n, at_y >= n
    del_x, del_y = np.where(whole_x, 0, at_x), np.where(whole_y, 0, at_y)
    pos_x = h.positions[del_x].astype(np.int64) if n else np.zeros(len(at_x), np.int64)
    pos_y = h.positions[del_y].astype(np.int64) if n else np.zeros(len(at_y), np.int64)
    # Deletions at positions p and p+1 meet for a transposition only if they removed the same
    # character (x[p] == y[p+1]); without that the names are two edits apart.
    same_char = (h.codes[del_x] == h.codes[del_y]) if n else np.zeros(len(at_x), dtype=bool)
    step = np.abs(pos_x - pos_y)
    keep = np.where(
        whole_x | whole_y,
        whole_x != whole_y,  # a whole name equal to a deletion of the other: an omission
        (step == 0) | ((step == 1) & same_char),  # a substitution | a transposition
    )
    # Not two deletions of one name: the name's start, position less, tells them apart.
    keep &= whole_x | whole_y | (del_x - pos_x != del_y - pos_y)
    at_x, at_y, whole_x, whole_y = at_x[keep], at_y[keep], whole_x[keep], whole_y[keep]
    owner_x = np.where(whole_x, at_x - n, h.owners(np.where(whole_x, 0, at_x)))
    owner_y = np.where(whole_y, at_y - n, h.owners(np.where(whole_y, 0, at_y)))
    return owner_x, owner_y


_ID_BITS = 24  # owner ids packed under a key's top bits, so a plain (SIMD) sort does the join
_ID_MASK = _U64((1 << _ID_BITS) - 1)


def _runs(same: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """From same[i] (sorted element i+1 equals element i): elements in runs of 2 or more, each one's run start."""
    equal_next = np.flatnonzero(same)  # few: most keys are unique
    if not len(equal_next):
        return None
    opens = np.ones(len(equal_next), dtype=bool)
    opens[1:] = equal_next[1:] != equal_next[:-1] + 1
    at = np.flatnonzero(opens)
    sizes = np.diff(at, append=len(equal_next)) + 1
    run, keep = _expand(equal_next[at], sizes)
    return keep, (np.cumsum(sizes) - sizes)[run]


def _expand(first: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Element i repeated counts[i] times, paired with first[i], first[i]+1, ..."""
    starts = np.cumsum(counts) - counts
    who = np.repeat(np.arange(len(counts)), counts)
    return who, first[who] + (np.arange(counts.sum()) - starts[who])


def _equal_key_pairs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(i, j), i before j, for every two keys that are equal (or rare top-40-bit collisions: verify after).

    The keys are overwritten: they are the sort's work space.
    """
    if len(keys) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if len(keys) > 1 << _ID_BITS:
        ids = np.argsort(keys)
        ordered = keys[ids]
        runs = _runs(ordered[1:] == ordered[:-1])
    else:
        packed = keys
        packed &= ~_ID_MASK
        packed |= np.arange(len(keys), dtype=_U64)
        packed.sort()
        runs = _runs((packed[1:] ^ packed[:-1]) <= _ID_MASK)  # same top bits, different ids
        ids = packed
    if runs is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    keep, run_start = runs
    ids = ids[keep]
    if ids.dtype == _U64:
        ids = (ids & _ID_MASK).astype(np.int64)
    rank = np.arange(len(keep)) - run_start  # each element pairs with the `rank` before it
    later, earlier = _expand(run_start, rank)
    return ids[earlier], ids[later]


def _lengths(names: list[str]) -> np.ndarray:
    """len() of each name; TypeError unless every name is a str."""
    text = "\0".join(names)  # raises TypeError on a missing value or any other non-str
    if text.isascii():
        ends = np.flatnonzero(np.frombuffer(text.encode("ascii"), dtype=np.uint8) == 0)
        if len(ends) == len(names) - 1:  # else some name holds the separator itself
            return np.diff(ends, prepend=-1, append=len(text)) - 1
    return np.fromiter(map(len, names), dtype=np.int64, count=len(names))


def _unique_names(names: Iterable[str], min_len: int) -> tuple[list[str], np.ndarray]:
    """Distinct names at least min_len long, and their lengths."""
    floor = max(min_len, 1)
    distinct = list(dict.fromkeys(names))
    try:
        lengths = _lengths(distinct)
    except TypeError:  # missing values (None, NaN, pd.NA) among the names
        distinct = [n for n in distinct if isinstance(n, str)]
        lengths = _lengths(distinct)
    if int(lengths.min(initial=floor)) < floor:
        kept = np.flatnonzero(lengths >= floor)
        distinct, lengths = [distinct[i] for i in kept.tolist()], lengths[kept]
    return distinct, lengths


def _frame(rows: list[tuple[str, str, str, int, str]], schema: dict[str, str]) -> pd.DataFrame:
    """A frame of the schema from rows, sorted by their first two columns."""
    rows.sort()  # code point order, as pandas sorts strings; far cheaper than sort_values on a few rows
    columns = list(zip(*rows)) if rows else [()] * len(schema)
    return pd.DataFrame({name: pd.array(list(values), dtype=dtype)
                         for (name, dtype), values in zip(schema.items(), columns)})


def _classified(names: list[str], left: np.ndarray, right: np.ndarray) -> pd.DataFrame:
    """Verify candidate pairs exactly and describe them, each unordered pair once with a < b."""
    n = np.int64(len(names))
    packed = np.unique(np.minimum(left, right) * n + np.maximum(left, right))
    first, second = packed // n, packed % n
    keep = first != second
    rows = []
    for i, j in zip(first[keep].tolist(), second[keep].tolist()):
        x, y = names[i], names[j]
        a, b = (x, y) if x < y else (y, x)
        edit = edit_between(b, a)
        if edit is not None:  # else a hash collision, not a neighbour
            rows.append((a, b, edit.kind, edit.position, edit.detail))
    return _frame(rows, PAIR_COLUMNS)


def one_edit_pairs(names: Sequence[str] | Iterable[str], *, min_len: int = DEFAULT_MIN_LEN,
                   involving: Iterable[str] | None = None) -> pd.DataFrame:
    """Every unordered pair of distinct names one edit apart (PAIR_COLUMNS; the edit turns a into b).

    involving: only the pairs with at least one of these names (verifying the others would be wasted).
    """
    h = _hash_names(_unique_names(names, min_len))
    first, second = _equal_key_pairs(h.keys)  # one sort of every key (see the module docstring)
    left, right = _candidates(h, first, second)
    if involving is not None:
        wanted = set(involving)
        asked = np.fromiter((n in wanted for n in h.names), dtype=bool, count=len(h.names))
        keep = asked[left] | asked[right]
        left, right = left[keep], right[keep]
    return _classified(h.names, left, right)
