"""Certificates issued by the throwaway CA as the records table the detectors read."""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from scanner.parse.certs import parse_der, records_frame
from scanner.parse.link import collapse_precerts
from tests.synth import TestCA, der, utc

#: (serial, notBefore, TestCA.issue keywords, revoked_at or None); times as datetimes or ISO text (UTC).
Spec = tuple[int, "datetime | str", dict, "datetime | str | None"]


def _utc(value: datetime | str) -> datetime:
    return utc(value) if isinstance(value, str) else value


def issued(test_ca: TestCA, specs: list[Spec]) -> pd.DataFrame:
    """The certificates of specs, parsed and linked like a scan's, with their revocation times."""
    rows = []
    for serial, nb, kw, revoked in specs:
        row = parse_der(der(test_ca.issue(serial=serial, not_before=_utc(nb), **kw)), provenance=f"s{serial}")
        if revoked is not None:
            row["revoked_at"] = _utc(revoked)
        rows.append(row)
    return collapse_precerts(records_frame(rows))
