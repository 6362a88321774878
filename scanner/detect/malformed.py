"""Certificates only a lenient DER reader could read: malformed, and often the misissuance itself."""

from __future__ import annotations

import pandas as pd

from scanner.core.records import WARNED_NOTE, Finding
from scanner.detect.findings import as_json, findings_frame


def detect_malformed(certs: pd.DataFrame) -> pd.DataFrame:
    """One malformed_certificate finding per certificate cryptography refused, with its reason."""
    if "parse_note" not in certs.columns:  # a table from before the column existed: nothing was read leniently
        return findings_frame([])
    notes = certs["parse_note"].fillna("")
    odd = certs[notes != ""]
    return findings_frame(_finding(sha, note) for sha, note in zip(odd["sha256"], odd["parse_note"]))


def _finding(sha: str, note: str) -> Finding:
    if note.startswith(WARNED_NOTE):
        warning = note[len(WARNED_NOTE):]
        return Finding(sha, "malformed_certificate",
                       f"cryptography reads this certificate only with a warning ({warning}): its encoding "
                       "breaks RFC 5280 or DER, and a later cryptography release will refuse it.",
                       detail=as_json({"parser": "cryptography", "warning": warning}))
    return Finding(sha, "malformed_certificate",
                   f"cryptography refuses to parse this certificate ({note}); its fields were read leniently "
                   "(asn1crypto) and checked like any other.",
                   detail=as_json({"parser": "cryptography", "reason": note}))
