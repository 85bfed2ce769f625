"""Cells of the CSV and XLSX files the platform writes, safe to open in a spreadsheet.

Names come from people (a site called ``=HYPERLINK("http://evil","x")``, a tariff from an
uploaded rate record): written raw, a spreadsheet would run them as formulas. Every text cell
goes through here (OWASP "CSV injection"): in CSV a text beginning with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return gets a leading ``'``; in XLSX every text is stored as a
string (never a formula) and such a text is marked quote-prefixed, so the spreadsheet shows
it as typed. Numbers stay numbers (a negative amount is a number, not a text).
"""

from collections.abc import Iterable
from typing import Any

from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell  # type: ignore[import-untyped]

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def is_formula_like(text: str) -> bool:
    """Whether a spreadsheet would read ``text`` as a formula (or start one)."""
    return text.startswith(FORMULA_PREFIXES)


def csv_cell(value: Any) -> Any:
    """One CSV value: a formula-like text quoted with a leading ``'``; anything else as it is."""
    if isinstance(value, str) and is_formula_like(value):
        return "'" + value
    return value


def csv_row(values: Iterable[Any]) -> list[Any]:
    """A CSV row: None as an empty cell, every text through ``csv_cell``."""
    return ["" if value is None else csv_cell(value) for value in values]


def xlsx_append(sheet: Any, values: Iterable[Any]) -> None:
    """Append a row to an openpyxl worksheet with every text stored as a string, never a formula.

    openpyxl turns a text beginning with ``=`` into a formula; here each text cell is typed a
    string again, a formula-like one is quote-prefixed, and characters XLSX cannot hold
    (control characters) are dropped instead of failing the whole file.
    """
    row = []
    for value in values:
        if isinstance(value, str):
            cell = Cell(sheet, value=ILLEGAL_CHARACTERS_RE.sub("", value))
            cell.data_type = "s"
            if is_formula_like(cell.value):
                cell.quotePrefix = True
            row.append(cell)
        else:
            row.append(value)
    sheet.append(row)
