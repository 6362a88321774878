"""Precertificate / certificate linking: the two CT entries of one issuance become one row."""

from __future__ import annotations

import pandas as pd

from scanner.core.records import CERT_COLUMNS, coerce

_FILL_FROM_PRECERT = ("revoked_at", "revocation_reason", "revocation_source", "crtsh_id", "issuer_ca_id",
                      "parse_note")  # a malformed precertificate stays a finding when merged


def pair_key(certs: pd.DataFrame) -> pd.Series:
    """The unit a precertificate and its certificate share: issuer (key id, else DN) and serial."""
    issuer = certs["issuer_key_id"].fillna("")
    issuer = issuer.where(issuer != "", "dn:" + certs["issuer_dn"].fillna(""))
    return issuer + "|" + certs["serial"].fillna("")


def collapse_precerts(certs: pd.DataFrame) -> pd.DataFrame:
    """One row per certificate: precertificate/certificate twins merged (both hashes kept), exact duplicates dropped.

    Two different final certificates (or two precertificates) with one issuer and serial are both
    kept: that is a defect worth seeing, not a twin.
    """
    if certs.empty:
        return certs
    df = certs.drop_duplicates("sha256").reset_index(drop=True)
    key = pair_key(df)
    size = key.map(key.value_counts())
    precerts_in_group = df["is_precert"].astype(int).groupby(key).transform("sum")
    twin = (size == 2) & (precerts_in_group == 1)
    if twin.any():
        # A precertificate naming what its certificate does not is no twin: merged, its names would go unchecked.
        pairs = df.loc[twin, ["subject_dn", "san_dns", "san_ip", "san_email"]]
        names = pd.Series([
            (dn if isinstance(dn, str) else "", *(tuple(sorted(v)) if isinstance(v, (list, tuple)) else () for v in sans))
            for dn, *sans in zip(*(pairs[c].tolist() for c in pairs.columns))
        ], index=pairs.index, dtype=object)
        same = pd.Series(pd.factorize(names)[0], index=pairs.index).groupby(key[twin]).transform("nunique") == 1
        twin &= same.reindex(df.index, fill_value=False)
    if not twin.any():
        return df
    pre = df[twin & df["is_precert"]].set_index(key[twin & df["is_precert"]])
    final = df[twin & ~df["is_precert"]].copy()
    fkey = key[final.index]
    p = pre.loc[fkey.values]
    p.index = final.index
    final["precert_sha256"] = p["precert_sha256"]
    for col in _FILL_FROM_PRECERT:
        missing = final[col].isna() | (final[col].astype("string").fillna("") == "")
        final.loc[missing, col] = p.loc[missing, col]
    final["first_seen"] = pd.concat([final["first_seen"], p["first_seen"]], axis=1).min(axis=1)
    other = (p["provenance"].fillna("") != "") & (p["provenance"] != final["provenance"])
    final.loc[other, "provenance"] = final.loc[other, "provenance"] + " + precert " + p.loc[other, "provenance"]
    out = pd.concat([df[~twin], final]).sort_index(kind="stable")
    return coerce(out.reset_index(drop=True), CERT_COLUMNS)
