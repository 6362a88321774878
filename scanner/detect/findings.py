"""Small helpers every detector shares to build its findings frame."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pandas as pd

from scanner.core.records import FINDING_COLUMNS, Finding, coerce, empty_frame, finding_code


def findings_frame(findings: Iterable[Finding]) -> pd.DataFrame:
    """The findings table (FINDING_COLUMNS) from Finding objects (Finding.as_row of each, built as columns)."""
    rows = [(f.sha256, f.code, f.severity or finding_code(f.code).severity, f.name, f.related_sha256, f.evidence,
             f.detail) for f in findings]
    if not rows:
        return empty_frame(FINDING_COLUMNS)
    return coerce(pd.DataFrame.from_records(rows, columns=_ROW_ORDER), FINDING_COLUMNS)


_ROW_ORDER = ["sha256", "code", "severity", "name", "related_sha256", "evidence", "detail"]


def as_json(detail: dict[str, Any]) -> str:
    """Compact, stable JSON for a finding's machine-readable detail."""
    return json.dumps(detail, sort_keys=True, default=str, separators=(",", ":"))


