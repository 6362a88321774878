"""Make attacker-controlled text safe to put in a CSV or XLSX cell.

Certificate fields (O, CN, SANs, DNs) are chosen by whoever asked for the certificate, so every
string cell goes through :func:`safe_text` before any writer sees it:

* A value that a spreadsheet would run as a formula (it starts with ``=``, ``+``, ``-``, ``@``,
  tab or CR, or their full-width forms, which some East Asian Excel builds also evaluate) gets a
  leading single quote, as OWASP's CSV-injection advice says. A value that already starts with a
  quote gets one more, so the escape can be undone exactly with :func:`unescape_formula` (a later
  run reads registrations.csv back as recorded answers).
* Control characters that XML 1.0 forbids (everything below U+0020 except tab, LF and CR, plus
  DEL, lone surrogates, U+FFFE and U+FFFF) become U+FFFD, so the change stays visible and the
  XLSX stays valid. Tab, LF and CR are kept: they are legal, and evidence sentences may use LF.
* :func:`truncate` caps a cell at Excel's 32,767 characters with a visible marker saying how
  much was cut (a SAN list can hold thousands of names). The XLSX writer applies it; the CSVs
  keep whole values because they are the machine-readable record.
"""

from __future__ import annotations

import re

#: Excel's limit on the characters of one cell.
EXCEL_CELL_LIMIT = 32_767

#: First characters that make Excel, LibreOffice or Sheets treat a cell as a formula.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")

_QUOTE = "'"
_ESCAPE_FIRST = FORMULA_TRIGGERS + (_QUOTE,)
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
_REPLACEMENT = "\ufffd"


def clean_control_chars(text: str) -> str:
    """Replace characters XML 1.0 forbids (and DEL) with U+FFFD; tab, LF and CR stay."""
    return _ILLEGAL.sub(_REPLACEMENT, text)


def escape_formula(text: str) -> str:
    """Prefix a quote to text a spreadsheet would evaluate (or that already starts with one)."""
    return _QUOTE + text if text.startswith(_ESCAPE_FIRST) else text


def unescape_formula(text: str) -> str:
    """Undo :func:`escape_formula`: drop the one leading quote it added."""
    return text[1:] if text.startswith(_QUOTE) else text


def safe_text(text: str) -> str:
    """Text safe for any cell: illegal control characters replaced, formulas neutralised."""
    return escape_formula(clean_control_chars(text))


def truncate(text: str, limit: int = EXCEL_CELL_LIMIT) -> str:
    """Cut text to at most limit characters, ending with a marker that says how many were cut."""
    if len(text) <= limit:
        return text
    # The marker's own length depends on the count it prints; one pass with the widest count suffices.
    marker = f" …[truncated {len(text):,} characters; see the CSV for the full value]"
    keep = max(limit - len(marker), 0)
    marker = f" …[truncated {len(text) - keep:,} characters; see the CSV for the full value]"
    return text[:keep] + marker
