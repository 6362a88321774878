"""Report writers: render findings as CSV, XLSX and the CCADB incident appendix; never compute them."""

from scanner.report.writer import write_reports

__all__ = ["write_reports"]
