"""CSV rendering: the summary table, one row per site and a TOTAL row (texts made formula-safe)."""

import csv
import io
from typing import Any

from billing.reports.rows import COLUMNS, table
from evplatform.spreadsheets import csv_row


def render_csv(data: dict[str, Any]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(csv_row(name for name, _, _ in COLUMNS))
    for row in table(data):
        writer.writerow(csv_row(row))
    return buffer.getvalue().encode("utf-8")
