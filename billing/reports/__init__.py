"""The monthly savings report: figures (``builder``) and their renderings (CSV, XLSX, PDF)."""

from typing import Any

from billing.reports.render_csv import render_csv
from billing.reports.render_pdf import render_pdf
from billing.reports.render_xlsx import render_xlsx

FORMATS = ("csv", "xlsx", "pdf")
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pdf": "application/pdf",
}


def render(data: dict[str, Any], file_format: str) -> bytes:
    """The report file in ``file_format`` (one of ``FORMATS``); deterministic for the same data."""
    renderers = {"csv": render_csv, "xlsx": render_xlsx, "pdf": render_pdf}
    if file_format not in renderers:
        raise ValueError(f"unknown format {file_format!r}; expected one of {', '.join(FORMATS)}")
    return renderers[file_format](data)
