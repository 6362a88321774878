"""core.times: how every report, log and evidence line writes a time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from scanner.core.times import iso, iso_column


@pytest.mark.parametrize("missing", [None, pd.NaT, np.datetime64("NaT"), float("nan")])
def test_missing_times_are_empty_text(missing):
    assert iso(missing) == ""


@pytest.mark.parametrize("value", [
    datetime(2024, 3, 1, 12, 30, 5, tzinfo=timezone.utc),
    datetime(2024, 3, 1, 14, 30, 5, tzinfo=timezone(timedelta(hours=2))),
    datetime(2024, 3, 1, 12, 30, 5),  # naive: taken as UTC
    pd.Timestamp("2024-03-01T12:30:05.999Z"),
    "2024-03-01T07:30:05-05:00",
])
def test_every_kind_of_time_is_the_same_utc_text(value):
    assert iso(value) == "2024-03-01T12:30:05Z"


def test_early_years_have_four_digits_as_the_column_writes_them():
    # a certificate's notBefore can say year 999 (a real defect); one cell and a whole column must agree
    early = datetime(999, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert iso(early) == "0999-01-02T03:04:05Z"
    assert iso_column(pd.Series([early, None])) == ["0999-01-02T03:04:05Z", ""]
