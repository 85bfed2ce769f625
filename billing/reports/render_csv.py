"""CSV rendering: the summary table, one row per site and a TOTAL row."""

import csv
import io
from typing import Any

from billing.reports.rows import COLUMNS, table


def render_csv(data: dict[str, Any]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([name for name, _, _ in COLUMNS])
    for row in table(data):
        writer.writerow(["" if value is None else value for value in row])
    return buffer.getvalue().encode("utf-8")
