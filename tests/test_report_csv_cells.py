"""CSV text columns made safe in Arrow write exactly what format_cell writes cell by cell."""

from __future__ import annotations

import random

import pandas as pd

from scanner.report.csv_report import column_cells, format_cell

# formula triggers (ASCII and full-width), the quote, control characters XML forbids, DEL, non-characters, CR/LF
ALPHABET = [*"ab=+-@'\t\r\n\x00\x01\x0b\x0c\x1f\x7f;,\" x", "\uff1d", "\uff0b", "\uff0d", "\uff20", "\ufffe",
            "\uffff", "é", "中"]


def test_a_text_column_is_written_as_format_cell_writes_each_of_its_cells():
    rng = random.Random(15)
    values = ["".join(rng.choice(ALPHABET) for _ in range(rng.randrange(6))) for _ in range(20_000)]
    values += [None, "", "'", "=1", "'=1", "＝SUM(A1)", "\x00=1", "-5"]
    column = pd.Series(values, dtype="string")
    assert column_cells(column) == [format_cell(v) for v in column.tolist()]
    assert column_cells(pd.Series(["=x", None], dtype="string")) == ["'=x", ""]
