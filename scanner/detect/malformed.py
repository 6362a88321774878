"""Certificates only a lenient DER reader could read: malformed, and often the misissuance itself."""

from __future__ import annotations

import pandas as pd

from scanner.core.records import Finding
from scanner.detect.findings import as_json, findings_frame


def detect_malformed(certs: pd.DataFrame) -> pd.DataFrame:
    """One malformed_certificate finding per certificate cryptography refused, with its reason."""
    if "parse_note" not in certs.columns:  # a table from before the column existed: nothing was read leniently
        return findings_frame([])
    notes = certs["parse_note"].fillna("")
    odd = certs[notes != ""]
    return findings_frame(
        Finding(sha, "malformed_certificate",
                f"cryptography refuses to parse this certificate ({note}); its fields were read leniently "
                "(asn1crypto) and checked like any other.",
                detail=as_json({"parser": "cryptography", "reason": note}))
        for sha, note in zip(odd["sha256"], odd["parse_note"])
    )
