"""Detectors over revocation dates: early revocations and revoke-and-reissue pairs."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
from rapidfuzz.distance import OSA

from ..enrich.domains import classify_name
from ..enrich.organisation import normalise_organisation
from ..records import Finding
from .findings import as_json, findings_frame, human_duration, iso

MIN_TYPO_LABEL = 4  # shorter labels are one edit away from too much to mean anything


def early_revocations(certs: pd.DataFrame, window: timedelta) -> pd.DataFrame:
    """Certificates revoked within `window` of notBefore (or before it), with the latency."""
    revoked = certs[certs["revoked_at"].notna()]
    latency = revoked["revoked_at"] - revoked["not_before"]
    return revoked.assign(latency=latency)[latency <= pd.Timedelta(window)]


def detect_early_revocation(certs: pd.DataFrame, window: timedelta) -> pd.DataFrame:
    """A finding per certificate revoked within the window after notBefore: the list to audit."""
    early = early_revocations(certs, window)
    found = []
    for r in early.itertuples(index=False):
        reason = f", reason {r.revocation_reason}" if r.revocation_reason else ", no reason given"
        when = "before its notBefore" if r.latency < pd.Timedelta(0) else "after notBefore"
        found.append(Finding(
            r.sha256, "early_revocation",
            f"Revoked {iso(r.revoked_at)}, {human_duration(abs(r.latency))} {when}{reason}.",
            detail=as_json({"latency_seconds": r.latency.total_seconds(), "revoked_at": iso(r.revoked_at),
                            "reason": r.revocation_reason or ""}),
        ))
    return findings_frame(found)


def _labels(names: list[str]) -> dict[str, str]:
    """Registrable label -> registrable domain, for the public names of one certificate."""
    out = {}
    for n in names:
        info = classify_name(n)
        if info.registrable:
            out[info.label] = info.registrable
    return out


def _typo_link(a_names: list[str], b_names: list[str]) -> tuple[str, str] | None:
    """A pair (name in A, name in B) one edit apart in their registrable label or suffix, if any."""
    for na in a_names:
        ia = classify_name(na)
        if not ia.registrable:
            continue
        for nb in b_names:
            ib = classify_name(nb)
            if not ib.registrable or ia.registrable == ib.registrable:
                continue
            if ia.suffix == ib.suffix and min(len(ia.label), len(ib.label)) >= MIN_TYPO_LABEL:
                if OSA.distance(ia.label, ib.label, score_cutoff=1) <= 1:
                    return na, nb
            elif ia.label == ib.label and OSA.distance(ia.suffix, ib.suffix, score_cutoff=1) <= 1:
                return na, nb
    return None


def classify_change(a: pd.Series, b: pd.Series) -> tuple[str, str]:
    """How the reissue B differs from the revoked A: (kind, readable detail)."""
    sans_a, sans_b = set(a["san_dns"] or []), set(b["san_dns"] or [])
    if sans_a != sans_b:
        link = _typo_link(sorted(sans_a - sans_b), sorted(sans_b - sans_a))
        if link:
            return "san_typo_fixed", f"SAN typo fixed ({link[0]} -> {link[1]})"
        gone, new = sorted(sans_a - sans_b), sorted(sans_b - sans_a)
        return "san_set_changed", f"SAN set changed (removed {', '.join(gone) or 'none'}; added {', '.join(new) or 'none'})"
    if a["subject_dn"] != b["subject_dn"]:
        return "subject_changed", f"subject changed ({a['subject_dn']} -> {b['subject_dn']})"
    if a["spki_sha256"] != b["spki_sha256"]:
        return "rekey_only", "same names and subject, new key (re-key only)"
    return "same_content", "same names, subject and key"


def _subscriber_keys(row: pd.Series) -> set[str]:
    keys = {"d:" + d for d in _labels(list(row["san_dns"] or [])).values()}
    org = normalise_organisation(row["subject_o"] or "")
    if org:
        keys.add("o:" + org)
    cn = classify_name(row["subject_cn"] or "")
    if cn.registrable:
        keys.add("d:" + cn.registrable)
    return keys


def _naive_utc(col: pd.Series) -> pd.Series:
    """A tz-aware UTC column as naive datetime64 (what numpy's searchsorted can compare)."""
    return col.dt.tz_convert("UTC").dt.tz_localize(None)


_RELATION_RANK = {"typo": 0, "organisation": 1, "domain": 2}


def detect_revoke_reissue(certs: pd.DataFrame, window: timedelta, reissue_window: timedelta) -> pd.DataFrame:
    """Pair each early-revoked certificate with the subscriber's certificate issued close to the revocation.

    B counts when it shares the subject O (normalised), a registrable domain, or a name one typo away
    with A, and its notBefore is within `reissue_window` of A's revocation, before or after it: the
    correction may come first (Sectigo) or after (Camerfirma). Renewals whose predecessor was revoked
    late are not pairs, because A must itself have been revoked within `window` of issuance.
    """
    early = early_revocations(certs, window)
    if early.empty:
        return findings_frame([])
    ordered = certs.sort_values("not_before", kind="stable").reset_index(drop=True)
    nb = _naive_utc(ordered["not_before"]).to_numpy()
    rw = pd.Timedelta(reissue_window)
    key_cache: dict[int, set[str]] = {}
    found = []
    for _, a in early.iterrows():
        lo = np.searchsorted(nb, (a["revoked_at"] - rw).tz_convert(None).to_datetime64(), side="left")
        hi = np.searchsorted(nb, (a["revoked_at"] + rw).tz_convert(None).to_datetime64(), side="right")
        a_keys = _subscriber_keys(a)
        a_names = list(a["san_dns"] or [])
        best = None
        for i in range(lo, hi):
            b = ordered.iloc[i]
            if b["sha256"] == a["sha256"]:
                continue
            if i not in key_cache:
                key_cache[i] = _subscriber_keys(b)
            shared = a_keys & key_cache[i]
            relation = None
            if _typo_link(a_names, list(b["san_dns"] or [])):
                relation = "typo"
            elif any(k.startswith("o:") for k in shared):
                relation = "organisation"
            elif shared:
                relation = "domain"
            if relation is None:
                continue
            gap = abs(b["not_before"] - a["revoked_at"])
            rank = (_RELATION_RANK[relation], gap)
            if best is None or rank < best[0]:
                best = (rank, b, relation)
        if best is None:
            continue
        _, b, relation = best
        kind, change = classify_change(a, b)
        offset = b["not_before"] - a["revoked_at"]
        order = (f"reissued {human_duration(offset)} after the revocation" if offset >= pd.Timedelta(0)
                 else f"the replacement was issued {human_duration(-offset)} before the revocation")
        found.append(Finding(
            a["sha256"], "revoke_reissue",
            f"Revoked {human_duration(a['revoked_at'] - a['not_before'])} after notBefore; {order} as "
            f"{b['sha256'][:16]}… ({', '.join(list(b['san_dns'] or [])[:3]) or b['subject_cn']}): {change}.",
            related_sha256=b["sha256"],
            detail=as_json({"change": kind, "relation": relation,
                            "latency_seconds": (a["revoked_at"] - a["not_before"]).total_seconds(),
                            "reissue_offset_seconds": offset.total_seconds(),
                            "reissue_not_before": iso(b["not_before"])}),
        ))
    return findings_frame(found)
