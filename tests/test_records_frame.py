"""frame_from_rows: the table every stage shares gets the schema's dtypes and the values a reader means."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

from scanner.core.records import CERT_COLUMNS, frame_from_rows

SCHEMA = {"name": "string", "when": "datetime64[us, UTC]", "flag": "bool", "n": "Int64", "sans": "object"}
UTC = timezone.utc


def test_plain_values_take_the_schema_dtypes_and_missing_keys_are_empty():
    rows = [
        {"name": "a.example", "when": datetime(2024, 1, 1, tzinfo=UTC), "flag": True, "n": None, "sans": ["a", "b"]},
        {"name": None, "when": None, "flag": False, "n": None, "sans": ()},
        {"name": "c"},  # a row without most columns
    ]
    df = frame_from_rows(rows, SCHEMA)
    assert [str(df[c].dtype) for c in SCHEMA] == list(SCHEMA.values())
    assert df["name"].tolist()[0::2] == ["a.example", "c"] and df["name"].isna().tolist() == [False, True, False]
    assert df["when"].iloc[0] == pd.Timestamp("2024-01-01", tz="UTC") and df["when"].iloc[1:].isna().all()
    assert df["flag"].tolist() == [True, False, False]
    assert df["n"].isna().all()
    assert df["sans"].iloc[0] == ["a", "b"] and df["sans"].iloc[1] == () and df["sans"].iloc[2] is None


def test_times_from_other_zones_naive_times_and_text_all_come_out_in_utc():
    rows = [
        {"when": datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))},  # 00:00 UTC
        {"when": datetime(2024, 1, 1)},  # naive: read as UTC
        {"when": pd.Timestamp("2024-01-01", tz="UTC")},
    ]
    assert frame_from_rows(rows, SCHEMA)["when"].tolist() == [pd.Timestamp("2024-01-01", tz="UTC")] * 3
    text = [{"when": "2024-01-01T00:00:00Z"}, {"when": "not a time"}, {"when": np.datetime64("2024-01-01")}]
    got = frame_from_rows(text, SCHEMA)["when"]
    assert got.iloc[0] == got.iloc[2] == pd.Timestamp("2024-01-01", tz="UTC") and pd.isna(got.iloc[1])


def test_odd_cells_from_a_server_are_text_or_empty_never_a_crash():
    rows = [{"name": 7, "n": 5, "flag": None}, {"name": float("nan"), "n": None, "flag": 1},
            {"name": "\U0001f600 outside the BMP", "n": np.int64(3), "flag": True}]
    df = frame_from_rows(rows, SCHEMA)
    assert df["name"].iloc[0] == "7" and pd.isna(df["name"].iloc[1]) and df["name"].iloc[2].endswith("BMP")
    assert df["n"].tolist()[0::2] == [5, 3] and pd.isna(df["n"].iloc[1])
    assert df["flag"].tolist() == [False, True, True]


def test_a_list_cell_of_equal_length_lists_stays_one_list_per_row():
    rows = [{"sans": ["a", "b"]}, {"sans": ["c", "d"]}]  # numpy would make a 2-D array of these
    got = frame_from_rows(rows, SCHEMA)["sans"]
    assert got.tolist() == [["a", "b"], ["c", "d"]] and got.dtype == object


def test_the_certificate_schema_round_trips_its_own_empty_and_one_row_tables():
    assert list(frame_from_rows([], CERT_COLUMNS).columns) == list(CERT_COLUMNS)
    one = frame_from_rows([{"sha256": "ab" * 32, "is_precert": False}], CERT_COLUMNS)
    assert one["sha256"].iloc[0] == "ab" * 32 and not one["is_precert"].iloc[0] and one["not_before"].isna().all()
