"""collapse_precerts merges each twin where its certificate stands: order, facts and untouched rows kept."""

from __future__ import annotations

import hashlib

import pandas as pd

from scanner.parse.certs import parse_der, records_frame
from scanner.parse.link import collapse_precerts
from tests.synth import der, utc


def test_twins_merge_in_place_among_other_rows_and_a_renaming_precertificate_stays_apart(test_ca):
    def issue(serial, names, precert=False):
        return der(test_ca.issue(serial=serial, not_before=utc("2024-03-01T00:00"), cn=min(names), dns=names,
                                 precert=precert))

    lone = issue(1, ["lone.example"])
    pre, final = issue(2, ["b.example", "www.b.example"], True), issue(2, ["www.b.example", "b.example"])
    renaming_pre, renamed = issue(3, ["c.example"], True), issue(3, ["c-other.example"])
    rows = [parse_der(lone, provenance="lone"), parse_der(pre, provenance="pre"),
            parse_der(renaming_pre, provenance="rpre"), parse_der(final, provenance="final"),
            parse_der(renamed, provenance="renamed"), parse_der(lone, provenance="lone again")]
    rows[1]["crtsh_id"] = 42  # a fact only the precertificate's entry carried
    out = collapse_precerts(records_frame(rows))
    assert out["provenance"].tolist() == ["lone", "rpre", "final + precert pre", "renamed"]
    merged = out.iloc[2]
    assert merged["precert_sha256"] == hashlib.sha256(pre).hexdigest()
    assert merged["sha256"] == merged["cert_sha256"] == hashlib.sha256(final).hexdigest()
    assert merged["crtsh_id"] == 42 and pd.isna(out.iloc[0]["crtsh_id"])
    assert out.index.tolist() == [0, 1, 2, 3]
    assert list(out.dtypes.astype(str)) == list(records_frame(rows).dtypes.astype(str))
