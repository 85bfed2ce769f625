"""Spreadsheet cells: texts a spreadsheet would run as formulas are neutralised, numbers are not."""

import io
from decimal import Decimal

import pytest
from openpyxl import Workbook, load_workbook

from evplatform.spreadsheets import csv_row, xlsx_append

DANGEROUS = ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"]


@pytest.mark.parametrize("text", DANGEROUS)
def test_a_csv_text_that_starts_a_formula_gets_a_leading_quote(text: str) -> None:
    assert csv_row([text]) == ["'" + text]


def test_csv_numbers_and_plain_texts_stay_as_they_are() -> None:
    assert csv_row([Decimal("-12.50"), -3, 1.5, "mall", "a=b", None]) == [Decimal("-12.50"), -3, 1.5, "mall", "a=b", ""]


def test_xlsx_texts_are_strings_never_formulas_and_negative_numbers_stay_numeric() -> None:
    wb = Workbook()
    sheet = wb.active
    xlsx_append(sheet, [*DANGEROUS, -12.5, "plain", "bell\x07"])
    buffer = io.BytesIO()
    wb.save(buffer)

    row = load_workbook(io.BytesIO(buffer.getvalue())).active[1]

    # XML reads a stored carriage return back as a line feed
    assert [c.value for c in row[: len(DANGEROUS)]] == [t.replace("\r", "\n") for t in DANGEROUS]
    assert all(c.data_type == "s" and c.quotePrefix for c in row[: len(DANGEROUS)])
    assert (row[6].value, row[6].data_type) == (-12.5, "n")
    assert (row[7].value, row[7].data_type, row[7].quotePrefix) == ("plain", "s", False)
    assert row[8].value == "bell"  # a control character XLSX cannot hold is dropped, not fatal
