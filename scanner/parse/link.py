"""Precertificate / certificate linking: the two CT entries of one issuance become one row."""

from __future__ import annotations

import contextlib
import ctypes
import operator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.arrays import ArrowExtensionArray

from scanner.core.records import CERT_COLUMNS, coerce, frame_from_rows

_FILL_FROM_PRECERT = ("revoked_at", "revocation_reason", "revocation_source", "crtsh_id", "issuer_ca_id",
                      "parse_note")  # a malformed precertificate stays a finding when merged
_NAMED = ("subject_dn", "san_dns", "san_ip", "san_email")  # what twins must agree on


def pair_codes(certs: pd.DataFrame) -> np.ndarray:
    """The unit a precertificate and its certificate share, issuer (key id, else DN) and serial, as one group
    number per row, without a string per row (a million keys are hundreds of MB)."""
    kid = certs["issuer_key_id"].fillna("")
    dn_codes = pd.factorize(certs["issuer_dn"].fillna(""))[0]
    # the key id's number, else the DN's (negative, so that the two never meet)
    issuer = np.where((kid == "").to_numpy(dtype=bool), -1 - dn_codes, pd.factorize(kid)[0])
    serial = pd.factorize(certs["serial"].fillna(""))[0]
    # One number per (issuer, serial), numbered in order of first appearance as groupby's ngroup numbers them,
    # from a single int64 key (a two-column groupby holds several times more at a million rows).
    width = int(serial.max()) + 1 if len(serial) else 1
    return pd.factorize((issuer - int(issuer.min(initial=0))) * width + serial)[0]


def _names(dn: Any, *sans: Any) -> tuple:
    return (dn if isinstance(dn, str) else "",
            *(tuple(sorted(v)) if isinstance(v, (list, tuple)) else () for v in sans))


def _same_names(a: Any, b: Any) -> bool:
    """Two SAN cells name the same set (what _names compares), without sorting when they are equal as they are."""
    if type(a) is type(b) and type(a) in (list, tuple) and a == b:
        return True
    return _names("", a) == _names("", b)


def _twins_naming_alike(df: pd.DataFrame, pre_rows: np.ndarray, final_rows: np.ndarray) -> np.ndarray:
    """For each twin pair, True when the precertificate names what its certificate names (subject DN and SANs)."""
    pre_dn, final_dn = ([v if isinstance(v, str) else "" for v in df["subject_dn"].take(rows).tolist()]
                        for rows in (pre_rows, final_rows))
    same = np.fromiter(map(operator.eq, pre_dn, final_dn), dtype=bool, count=len(pre_dn))
    for col in _NAMED[1:]:
        values = df[col].to_numpy(dtype=object)
        pre, final = values[pre_rows], values[final_rows]
        for i in np.flatnonzero(same).tolist():
            if not _same_names(pre[i], final[i]):
                same[i] = False
    return same


#: List columns whose values repeat on a CA's certificates: the same CRL, OCSP and caIssuers URLs on each.
REPEATED_LIST_COLUMNS = ("crl_distribution_points", "ocsp_urls", "ca_issuers")


def share_repeated_lists(certs: pd.DataFrame, memo: dict[Any, Any]) -> pd.DataFrame:
    """certs with each non-empty URL list replaced by the one equal list seen first (kept in memo across calls).

    A CA puts the same few URLs on every certificate; as a list of new strings per cell they are
    about 500 bytes a certificate (half a gigabyte at a million), shared they are nothing. Cells are
    only read downstream, so one object in many rows is safe; certs is updated in place.
    """
    for name in REPEATED_LIST_COLUMNS:
        if name not in certs.columns:
            continue
        values = certs[name].to_numpy(dtype=object)
        shared = None
        for i, value in enumerate(values.tolist()):
            if not value or type(value) not in (list, tuple):
                continue  # empty cells already share one tuple
            first = memo.setdefault((type(value), tuple(value)), value)
            if first is not value:
                if shared is None:
                    shared = values.copy()
                shared[i] = first
        if shared is not None:
            certs[name] = pd.Series(shared, index=certs.index, dtype=object)
    return certs


@dataclass(frozen=True)
class _Plan:
    """How the table's rows become the collapsed table's, as row numbers of the table."""

    kept: np.ndarray  # the rows that stay, in order
    merged: bool  # twins were merged (else kept only drops exact duplicates)
    from_pre: dict[str, np.ndarray] = field(default_factory=dict)  # column -> kept, with twins' fact rows swapped in
    provenance: tuple[np.ndarray, pd.Series] | None = None  # ascending positions in the result, their provenance

    def rows(self, column: str) -> np.ndarray:
        """The rows of the table the result's column is read from."""
        return self.from_pre.get(column, self.kept)


def _plan(certs: pd.DataFrame) -> _Plan:
    """Which rows stay and where each merged fact is read from; reads only the _PLAN_COLUMNS."""
    dup = certs["sha256"].duplicated().to_numpy()
    unique = np.flatnonzero(~dup)
    df = certs.iloc[unique].reset_index(drop=True) if dup.any() else certs.reset_index(drop=True)
    codes = pair_codes(df)
    size = np.bincount(codes)[codes]
    is_pre = df["is_precert"].to_numpy(dtype=bool)
    precerts_in_group = np.bincount(codes, weights=is_pre)[codes]
    twin = (size == 2) & (precerts_in_group == 1)
    if not twin.any():
        return _Plan(unique, merged=False)
    # Each twin pair as (precertificate row, certificate row), aligned by their key.
    pre_rows = np.flatnonzero(twin & is_pre)
    cert_rows = np.flatnonzero(twin & ~is_pre)
    cert_of_code = np.empty(codes.max() + 1, dtype=np.int64)
    cert_of_code[codes[cert_rows]] = cert_rows
    final_rows = cert_of_code[codes[pre_rows]]
    # A precertificate naming what its certificate does not is no twin: merged, its names would go unchecked.
    same = _twins_naming_alike(df, pre_rows, final_rows)
    pre_rows, final_rows = pre_rows[same], final_rows[same]
    if not len(pre_rows):
        return _Plan(unique, merged=False)
    keep = np.ones(len(df), dtype=bool)
    keep[pre_rows] = False
    kept = np.flatnonzero(keep)
    at = np.searchsorted(kept, final_rows)  # where each merged certificate stands in the result

    def pair(col: str) -> tuple[pd.Series, pd.Series]:
        return (df[col].take(pre_rows).reset_index(drop=True), df[col].take(final_rows).reset_index(drop=True))

    # Where the precertificate's value wins: its own hash, a fact only its entry carried, an earlier first sighting.
    wins: dict[str, np.ndarray] = {"precert_sha256": np.ones(len(pre_rows), dtype=bool)}
    for col in _FILL_FROM_PRECERT:
        _, f = pair(col)
        wins[col] = (f.isna() | (f.astype("string").fillna("") == "")).to_numpy(dtype=bool)
    p, f = pair("first_seen")
    wins["first_seen"] = ((f.isna() & p.notna()) | (p < f).fillna(False)).to_numpy(dtype=bool)
    from_pre = {}
    for col, won in wins.items():
        rows = kept.copy()
        rows[at[won]] = pre_rows[won]
        from_pre[col] = unique[rows]
    p, f = pair("provenance")
    other = ((p.fillna("") != "") & (p != f)).fillna(False).to_numpy(dtype=bool)
    provenance = None
    if other.any():
        order = np.argsort(at[other], kind="stable")  # by position in the result, as a mask replaces them
        merged = (f[other] + " + precert " + p[other]).reset_index(drop=True)
        provenance = (at[other][order], merged.take(order).reset_index(drop=True))
    return _Plan(unique[kept], True, from_pre, provenance)


#: The columns _plan reads.
_PLAN_COLUMNS = ("sha256", "issuer_key_id", "issuer_dn", "serial", "is_precert", *_NAMED, *_FILL_FROM_PRECERT,
                 "first_seen", "provenance")


def _column(plan: _Plan, name: str, values: pd.Series) -> pd.Series:
    """One column of the collapsed table from the same column of the table."""
    column = values.take(plan.rows(name)).reset_index(drop=True)
    if name == "provenance" and plan.provenance is not None:
        at, merged = plan.provenance
        merged = merged.astype(column.dtype)
        if isinstance(column.array, ArrowExtensionArray) and isinstance(merged.array, ArrowExtensionArray):
            # Arrow's own replace builds the column once; pandas' setitem by position builds it twice over
            mask = np.zeros(len(column), dtype=bool)
            mask[at] = True
            replaced = pc.replace_with_mask(pa.array(column.array), pa.array(mask), pa.array(merged.array))
            return pd.Series(type(column.array)(replaced), name=column.name, copy=False)
        column.iloc[at] = merged.array
    return column


def collapse_precerts(certs: pd.DataFrame) -> pd.DataFrame:
    """One row per certificate: precertificate/certificate twins merged (both hashes kept), exact duplicates dropped.

    Two different final certificates (or two precertificates) with one issuer and serial are both
    kept: that is a defect worth seeing, not a twin. A million rows are a gigabyte, so each column is
    taken once, by row number: a merged fact is read from the precertificate's row by pointing the
    certificate's position at it, and only the provenance of merged rows is built anew.
    """
    if certs.empty:
        return certs
    plan = _plan(certs)
    if not plan.merged:
        return certs.iloc[plan.kept].reset_index(drop=True) if len(plan.kept) < len(certs) else (
            certs.reset_index(drop=True))
    columns = {name: _column(plan, name, certs[name]) for name in certs.columns}
    out = coerce(pd.DataFrame(columns, copy=False), CERT_COLUMNS)
    release_freed_memory()
    return out


def collapse_chunks(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """collapse_precerts of the frames one after another (pd.concat), emptying frames as it goes.

    The caller hands the chunks over: each column of the result is built while the chunks' copy of it
    is let go, so the table and its collapsed copy are never both whole in memory (at a million
    certificates, each is most of a gigabyte).
    """
    frames[:] = [f for f in frames if not f.empty]
    if not frames:
        return frame_from_rows([], CERT_COLUMNS)
    certs = pd.concat(frames, ignore_index=True)  # Arrow columns: the chunks' own buffers, not copied
    frames.clear()
    plan = _plan(certs[[c for c in _PLAN_COLUMNS if c in certs.columns]])
    columns = {}
    for name in list(certs.columns):
        columns[name] = _column(plan, name, certs.pop(name))
        release_freed_memory()  # the chunks' copy of the column, for the next column to be built in
    del certs
    out = pd.DataFrame(columns, copy=False)
    release_freed_memory()
    return coerce(out, CERT_COLUMNS) if plan.merged else out


def release_freed_memory() -> None:
    """Hand memory freed by pandas and Arrow back to the system, so that later stages find it free.

    Arrow's allocator (mimalloc) and glibc's keep freed pages for reuse by themselves alone: after the
    collapse that is hundreds of MB at a million certificates that Python objects of later stages
    cannot use. Best effort: elsewhere than glibc, only Arrow's pool is asked.
    """
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
