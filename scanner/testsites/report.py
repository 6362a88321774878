"""Write the test-website results as test-websites.csv and test-websites.xlsx (safe cells, UTC times)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import xlsxwriter

from scanner.core.atomic import atomic_path
from scanner.report.csv_report import write_frame
from scanner.report.xlsx_report import _Formats, write_table

SHEET = "Test websites"


def write_test_websites(frame: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    """Write frame (testsites.TEST_SITE_COLUMNS) to out_dir/test-websites.csv and .xlsx; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_frame(out_dir / "test-websites.csv", frame)
    xlsx_path = out_dir / "test-websites.xlsx"
    with atomic_path(xlsx_path) as tmp:
        # No string guessing: a served subject or an evidence line must never become a formula or link.
        book = xlsxwriter.Workbook(str(tmp), {"strings_to_formulas": False, "strings_to_urls": False,
                                              "strings_to_numbers": False})
        write_table(book.add_worksheet(SHEET), _Formats(book), frame, links={})
        book.close()
    return csv_path, xlsx_path
