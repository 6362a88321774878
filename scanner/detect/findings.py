"""Small helpers every detector shares to build its findings frame."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pandas as pd

from scanner.core.records import FINDING_COLUMNS, Finding, frame_from_rows


def findings_frame(findings: Iterable[Finding]) -> pd.DataFrame:
    """The findings table (FINDING_COLUMNS) from Finding objects."""
    return frame_from_rows([f.as_row() for f in findings], FINDING_COLUMNS)


def as_json(detail: dict[str, Any]) -> str:
    """Compact, stable JSON for a finding's machine-readable detail."""
    return json.dumps(detail, sort_keys=True, default=str, separators=(",", ":"))


