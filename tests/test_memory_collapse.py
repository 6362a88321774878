"""The table as the scan collects it: chunks collapsed as they are let go, URL lists shared, no needless copies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from scanner.core.records import CERT_COLUMNS, coerce
from scanner.parse.certs import parse_der, records_frame
from scanner.parse.link import collapse_chunks, collapse_precerts, share_repeated_lists
from tests.synth import der, utc

CRL, OCSP = "http://crl.example/ca.crl", "http://ocsp.example"


def _rows(test_ca) -> list[dict]:
    """Twins split across chunks (one whose precertificate alone carries a crt.sh id), a renaming twin, a
    lone certificate read twice, and a precertificate seen first."""
    def issue(serial, names, precert=False):
        return der(test_ca.issue(serial=serial, not_before=utc("2024-03-01T00:00"), cn=min(names), dns=names,
                                 precert=precert, crl_url=CRL, ocsp_url=OCSP))

    lone = issue(12, ["lone.example"])

    rows = [parse_der(issue(11, ["a.example"], True), provenance="pre a"),
            parse_der(lone, provenance="lone"),
            parse_der(issue(13, ["c.example"], True), provenance="renaming pre"),
            parse_der(issue(11, ["a.example"]), provenance="a"),
            parse_der(issue(13, ["c-other.example"]), provenance="renamed"),
            parse_der(issue(14, ["d.example", "www.d.example"]), provenance="d"),
            parse_der(lone, provenance="lone again"),
            parse_der(issue(14, ["www.d.example", "d.example"], True), provenance="pre d")]
    rows[0]["crtsh_id"] = 7
    rows[0]["first_seen"] = "2024-03-01T00:05:00Z"
    rows[3]["first_seen"] = "2024-03-02T00:00:00Z"
    return rows


def _shared(a: pd.Series, b: pd.Series) -> bool:
    """True when two columns hold the very same values in memory (not a copy)."""
    if isinstance(a.dtype, pd.StringDtype):
        def addresses(s: pd.Series) -> set[int]:
            arrow = pa.array(s.array)  # the column's own Arrow buffers (the __arrow_array__ protocol)
            chunks = arrow.chunks if isinstance(arrow, pa.ChunkedArray) else [arrow]
            return {buf.address for chunk in chunks for buf in chunk.buffers() if buf is not None}
        return addresses(a) == addresses(b)
    if isinstance(a.dtype, pd.DatetimeTZDtype):
        return np.shares_memory(a.array.asi8, b.array.asi8)
    return np.shares_memory(a.to_numpy(), b.to_numpy())


def test_collapsing_the_chunks_gives_what_collapsing_their_concatenation_gives_and_empties_the_list(test_ca):
    rows = _rows(test_ca)
    chunks = [records_frame(rows[:3]), records_frame(rows[3:5]), records_frame(rows[5:])]
    expected = collapse_precerts(pd.concat(chunks, ignore_index=True))
    got = collapse_chunks(chunks)
    pd.testing.assert_frame_equal(got, expected)
    assert chunks == []
    assert got["provenance"].tolist() == ["lone", "renaming pre", "a + precert pre a", "renamed",
                                          "d + precert pre d"]
    merged = got.set_index("provenance").loc["a + precert pre a"]
    assert merged["crtsh_id"] == 7 and merged["first_seen"] == pd.Timestamp("2024-03-01T00:05:00Z")
    # run() collapses again: on a collapsed table that changes nothing
    pd.testing.assert_frame_equal(collapse_precerts(got), got)


def test_collapsing_chunks_without_twins_only_drops_the_second_reading(test_ca):
    rows = _rows(test_ca)
    lone, again = rows[1], rows[6]
    got = collapse_chunks([records_frame([lone]), records_frame([again])])
    assert got["provenance"].tolist() == ["lone"]
    assert list(got.dtypes.astype(str)) == list(records_frame([lone]).dtypes.astype(str))
    assert collapse_chunks([records_frame([])]).empty


def test_equal_url_lists_become_one_object_across_chunks_and_the_values_stay(test_ca):
    rows = _rows(test_ca)
    memo: dict = {}
    first = share_repeated_lists(records_frame(rows[:4]), memo)
    second = share_repeated_lists(records_frame(rows[4:]), memo)
    for column, url in (("crl_distribution_points", CRL), ("ocsp_urls", OCSP)):
        cells = first[column].tolist() + second[column].tolist()
        assert all(cell == [url] for cell in cells)
        assert len({id(cell) for cell in cells}) == 1
    assert all(cell == () for cell in second["ca_issuers"])  # empty cells stay as they were


def test_coerce_shares_columns_already_of_the_schemas_dtype_and_still_casts_the_others(test_ca):
    frame = records_frame(_rows(test_ca))
    same = coerce(frame, CERT_COLUMNS)
    assert all(_shared(same[c], frame[c]) for c in ("sha256", "san_dns", "not_before", "is_precert"))
    same.loc[0, "provenance"] = "changed"  # copy-on-write: the frame it came from keeps its value
    assert frame.loc[0, "provenance"] == "pre a"
    raw = frame.astype({"crtsh_id": "object", "is_precert": "object", "serial": "object"})
    cast = coerce(raw, CERT_COLUMNS)
    assert list(cast.dtypes.astype(str)) == list(frame.dtypes.astype(str))
    pd.testing.assert_frame_equal(cast, frame)
