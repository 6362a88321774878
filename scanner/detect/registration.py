"""Detectors over registration answers: unregistered domains, domains registered after issuance."""

from __future__ import annotations

import pandas as pd

from scanner.core.records import Finding
from scanner.core.times import human_duration, iso
from scanner.detect.findings import as_json, findings_frame
from scanner.parse.domains import PUBLIC


def _joined(certs: pd.DataFrame, names: pd.DataFrame, registrations: pd.DataFrame) -> pd.DataFrame:
    public = names[names["kind"] == PUBLIC].drop_duplicates(["sha256", "name"])
    joined = public.merge(registrations, left_on="registrable", right_on="domain", how="inner")
    columns = ["sha256", "not_before", "not_after"] if "not_after" in certs.columns else ["sha256", "not_before"]
    return joined.merge(certs[columns], on="sha256", how="left")


def _unexpired_when_checked(checked_at: object, not_after: object) -> bool | None:
    """Whether the certificate had not yet expired when the registry answered (None: not known)."""
    if checked_at is None or not_after is None or pd.isna(checked_at) or pd.isna(not_after):
        return None
    return bool(pd.Timestamp(checked_at) <= pd.Timestamp(not_after))


def _when_checked(checked_at: object, not_after: object, valid: bool | None) -> str:
    """The sentence that says when the registry was asked, relative to the certificate's validity."""
    if valid is None:
        return f"checked {iso(checked_at) or 'at an unrecorded time'}"
    if valid:
        return f"checked {iso(checked_at)}, while the certificate was still unexpired (notAfter {iso(not_after)})"
    gone = pd.Timestamp(checked_at) - pd.Timestamp(not_after)
    return (f"checked {iso(checked_at)}, {human_duration(gone)} after the certificate expired "
            f"(notAfter {iso(not_after)}): the name may have been registered then and lapsed since, "
            f"so this says little about the day it was issued")


def detect_unregistered(certs: pd.DataFrame, names: pd.DataFrame, registrations: pd.DataFrame) -> pd.DataFrame:
    """A finding per SAN whose registrable domain a registry said is not registered (never for unknown).

    The answer is about the day it was checked: the detail says whether the certificate was still
    unexpired then (unexpired_when_checked), and the score weighs the finding less when it was not.
    """
    if registrations.empty:  # nothing to join (--registration off): skip the name table's copies
        return findings_frame([])
    j = _joined(certs, names, registrations)
    j = j[j["status"] == "unregistered"]
    found = []
    for r in j.itertuples(index=False):
        not_after = getattr(r, "not_after", None)
        valid = _unexpired_when_checked(r.checked_at, not_after)
        found.append(Finding(
            r.sha256, "unregistered_domain",
            f"{r.name}: registrable domain {r.registrable} is not registered "
            f"({r.method} {r.server or ''}: {r.detail or 'not found'}, {_when_checked(r.checked_at, not_after, valid)}).",
            name=r.name,
            detail=as_json({"domain": r.registrable, "method": r.method, "server": r.server,
                            "evidence": r.detail, "checked_at": iso(r.checked_at), "not_after": iso(not_after),
                            "unexpired_when_checked": valid}),
        ))
    return findings_frame(found)


def detect_registered_after_issuance(
    certs: pd.DataFrame, names: pd.DataFrame, registrations: pd.DataFrame
) -> pd.DataFrame:
    """A finding per SAN whose domain's current registration began after the certificate's notBefore.

    RDAP's registration event (and WHOIS's creation date) dates the current registration only: a
    name registered before the certificate, lapsed and registered again looks the same, so the
    evidence says what is known and no more.
    """
    if registrations.empty:
        return findings_frame([])
    j = _joined(certs, names, registrations)
    j = j[(j["status"] == "registered") & j["registered_at"].notna()]
    j = j[j["registered_at"] > j["not_before"]].drop_duplicates(["sha256", "registrable"])
    found = [
        Finding(
            r.sha256, "registered_after_issuance",
            f"{r.name}: the current registration of {r.registrable} began {iso(r.registered_at)}, after this "
            f"certificate's notBefore {iso(r.not_before)} ({r.method}); either the name was not registered "
            f"when the CA validated it, or a registration of that time has lapsed since (the registry shows "
            f"only the current one).",
            name=r.name,
            detail=as_json({"domain": r.registrable, "registered_at": iso(r.registered_at),
                            "not_before": iso(r.not_before), "method": r.method}),
        )
        for r in j.itertuples(index=False)
    ]
    return findings_frame(found)
