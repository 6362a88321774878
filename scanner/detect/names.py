"""Detectors over SAN names alone: IP addresses, internal names, invalid DNS names."""

from __future__ import annotations

import pandas as pd

from scanner.core.records import Finding
from scanner.detect.findings import findings_frame
from scanner.parse.domains import INTERNAL, INVALID, IP

_CODES = {IP: "ip_san", INTERNAL: "internal_name", INVALID: "invalid_dns_name"}


def detect_name_kinds(names: pd.DataFrame) -> pd.DataFrame:
    """One finding per SAN that is an IP address, an internal name, or not a valid DNS name."""
    odd = names[names["kind"].isin(list(_CODES))].drop_duplicates(["sha256", "raw"])
    found = []
    for sha, name, kind, reason in zip(odd["sha256"], odd["raw"], odd["kind"], odd["reason"]):
        what = {IP: "is an IP address", INTERNAL: "has no public suffix (internal name)",
                INVALID: f"is not a valid public DNS name ({reason})"}[kind]
        found.append(Finding(sha, _CODES[kind], f"SAN {name!r} {what}; it cannot be registered or looked up.",
                             name=name))
    return findings_frame(found)
