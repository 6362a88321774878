"""Precertificate / certificate linking: the two CT entries of one issuance become one row."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from scanner.core.records import CERT_COLUMNS, coerce

_FILL_FROM_PRECERT = ("revoked_at", "revocation_reason", "revocation_source", "crtsh_id", "issuer_ca_id",
                      "parse_note")  # a malformed precertificate stays a finding when merged
_NAMED = ("subject_dn", "san_dns", "san_ip", "san_email")  # what twins must agree on


def pair_key(certs: pd.DataFrame) -> pd.Series:
    """The unit a precertificate and its certificate share: issuer (key id, else DN) and serial."""
    issuer = certs["issuer_key_id"].fillna("")
    issuer = issuer.where(issuer != "", "dn:" + certs["issuer_dn"].fillna(""))
    return issuer + "|" + certs["serial"].fillna("")


def pair_codes(certs: pd.DataFrame) -> np.ndarray:
    """pair_key as one group number per row, without a string per row (a million keys are hundreds of MB)."""
    kid = certs["issuer_key_id"].fillna("")
    dn_codes = pd.factorize(certs["issuer_dn"].fillna(""))[0]
    # the key id's number, else the DN's (negative, so that the two never meet)
    issuer = np.where((kid == "").to_numpy(dtype=bool), -1 - dn_codes, pd.factorize(kid)[0])
    serial = pd.factorize(certs["serial"].fillna(""))[0]
    return pd.DataFrame({"issuer": issuer, "serial": serial}).groupby(["issuer", "serial"], sort=False).ngroup().to_numpy()


def _names(dn: Any, *sans: Any) -> tuple:
    return (dn if isinstance(dn, str) else "",
            *(tuple(sorted(v)) if isinstance(v, (list, tuple)) else () for v in sans))


def collapse_precerts(certs: pd.DataFrame) -> pd.DataFrame:
    """One row per certificate: precertificate/certificate twins merged (both hashes kept), exact duplicates dropped.

    Two different final certificates (or two precertificates) with one issuer and serial are both
    kept: that is a defect worth seeing, not a twin. Each column is copied once at most (a million
    rows are a gigabyte): the twin's row is updated where it stands, the precertificate's row left out.
    """
    if certs.empty:
        return certs
    dup = certs["sha256"].duplicated().to_numpy()
    df = certs[~dup].reset_index(drop=True) if dup.any() else certs.reset_index(drop=True)
    codes = pair_codes(df)
    size = np.bincount(codes)[codes]
    is_pre = df["is_precert"].to_numpy(dtype=bool)
    precerts_in_group = np.bincount(codes, weights=is_pre)[codes]
    twin = (size == 2) & (precerts_in_group == 1)
    if not twin.any():
        return df
    # Each twin pair as (precertificate row, certificate row), aligned by their key.
    pre_rows = np.flatnonzero(twin & is_pre)
    cert_rows = np.flatnonzero(twin & ~is_pre)
    cert_of_code = np.empty(codes.max() + 1, dtype=np.int64)
    cert_of_code[codes[cert_rows]] = cert_rows
    final_rows = cert_of_code[codes[pre_rows]]
    # A precertificate naming what its certificate does not is no twin: merged, its names would go unchecked.
    cols = [df[c].tolist() for c in _NAMED]
    same = np.fromiter((_names(*(col[p] for col in cols)) == _names(*(col[f] for col in cols))
                        for p, f in zip(pre_rows.tolist(), final_rows.tolist())), dtype=bool, count=len(pre_rows))
    pre_rows, final_rows = pre_rows[same], final_rows[same]
    if not len(pre_rows):
        return df
    keep = np.ones(len(df), dtype=bool)
    keep[pre_rows] = False
    p = df.iloc[pre_rows].reset_index(drop=True)
    f = df.iloc[final_rows].reset_index(drop=True)
    out = df[keep]
    at = out.index.get_indexer(final_rows)  # where each merged certificate stands in out
    updates: dict[str, pd.Series] = {"precert_sha256": p["precert_sha256"]}
    for col in _FILL_FROM_PRECERT:
        missing = f[col].isna() | (f[col].astype("string").fillna("") == "")
        updates[col] = f[col].where(~missing, p[col])
    updates["first_seen"] = pd.concat([f["first_seen"], p["first_seen"]], axis=1).min(axis=1)
    other = (p["provenance"].fillna("") != "") & (p["provenance"] != f["provenance"])
    updates["provenance"] = f["provenance"].where(~other, f["provenance"] + " + precert " + p["provenance"])
    out = out.reset_index(drop=True)
    for col, values in updates.items():
        column = out[col].copy()
        column.iloc[at] = values.astype(column.dtype).array
        out[col] = column
    return coerce(out, CERT_COLUMNS)
