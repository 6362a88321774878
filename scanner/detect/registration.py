"""Detectors over registration answers: unregistered domains, domains registered after issuance."""

from __future__ import annotations

import pandas as pd

from ..enrich.domains import PUBLIC
from ..records import Finding
from .findings import as_json, findings_frame, iso


def _joined(certs: pd.DataFrame, names: pd.DataFrame, registrations: pd.DataFrame) -> pd.DataFrame:
    public = names[names["kind"] == PUBLIC].drop_duplicates(["sha256", "name"])
    joined = public.merge(registrations, left_on="registrable", right_on="domain", how="inner")
    return joined.merge(certs[["sha256", "not_before"]], on="sha256", how="left")


def detect_unregistered(certs: pd.DataFrame, names: pd.DataFrame, registrations: pd.DataFrame) -> pd.DataFrame:
    """A finding per SAN whose registrable domain a registry said is not registered (never for unknown)."""
    j = _joined(certs, names, registrations)
    j = j[j["status"] == "unregistered"]
    found = [
        Finding(
            r.sha256, "unregistered_domain",
            f"{r.name}: registrable domain {r.registrable} is not registered "
            f"({r.method} {r.server or ''}: {r.detail or 'not found'}, checked {iso(r.checked_at)}).",
            name=r.name,
            detail=as_json({"domain": r.registrable, "method": r.method, "server": r.server,
                            "evidence": r.detail, "checked_at": iso(r.checked_at)}),
        )
        for r in j.itertuples(index=False)
    ]
    return findings_frame(found)


def detect_registered_after_issuance(
    certs: pd.DataFrame, names: pd.DataFrame, registrations: pd.DataFrame
) -> pd.DataFrame:
    """A finding per SAN whose domain's registration date is after the certificate's notBefore."""
    j = _joined(certs, names, registrations)
    j = j[(j["status"] == "registered") & j["registered_at"].notna()]
    j = j[j["registered_at"] > j["not_before"]].drop_duplicates(["sha256", "registrable"])
    found = [
        Finding(
            r.sha256, "registered_after_issuance",
            f"{r.name}: {r.registrable} was registered {iso(r.registered_at)}, after the certificate's "
            f"notBefore {iso(r.not_before)}: the name did not exist when the CA validated it.",
            name=r.name,
            detail=as_json({"domain": r.registrable, "registered_at": iso(r.registered_at),
                            "not_before": iso(r.not_before), "method": r.method}),
        )
        for r in j.itertuples(index=False)
    ]
    return findings_frame(found)
