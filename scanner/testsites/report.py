"""Write the test-website results as test-websites.csv and test-websites.xlsx (safe cells, UTC times)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from scanner.report.csv_report import write_frame
from scanner.report.xlsx_report import write_sheets_workbook

SHEET = "Test websites"


def write_test_websites(frame: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    """Write frame (testsites.checks.TEST_SITE_COLUMNS) to out_dir/test-websites.csv and .xlsx; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_frame(out_dir / "test-websites.csv", frame)
    return csv_path, write_sheets_workbook(out_dir / "test-websites.xlsx", [(SHEET, frame)], links={})
