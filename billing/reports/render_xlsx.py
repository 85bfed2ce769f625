"""XLSX rendering (openpyxl): Summary, Daily peaks and Load duration sheets with native charts,
and the methodology."""

import io
from decimal import Decimal
from typing import Any

from openpyxl import Workbook  # type: ignore[import-untyped]
from openpyxl.chart import LineChart, Reference  # type: ignore[import-untyped]
from openpyxl.styles import Font  # type: ignore[import-untyped]

from billing.reports.rows import COLUMNS, SIMULATED, table
from evplatform.spreadsheets import xlsx_append

MONEY_FORMAT = '"$"#,##0.00'
DAILY_TITLE = "Daily peak, all sites: managed vs unmanaged (kW)"


def render_xlsx(data: dict[str, Any]) -> bytes:
    wb = Workbook()
    summary = wb.active
    summary.title = "Summary"
    xlsx_append(summary, [f"Savings report {data['month']}: {data['tenant']['name']} ({data['tenant']['slug']})"])
    summary["A1"].font = Font(bold=True, size=14)
    scope = data.get("scope")
    only = f" Sites: {', '.join(scope['sites']) or 'none'}." if scope else ""
    xlsx_append(
        summary, [f"Generated {data['generated_at']}; amounts in {data['currency']}, rounded to the cent.{only}"]
    )
    xlsx_append(
        summary,
        [
            "Policies: each site's metered load is the policy it ran (policy); the other is "
            f"{SIMULATED} (static_cap_basis, cost_aware_basis)."
        ],
    )
    xlsx_append(summary, [name for name, _, _ in COLUMNS])
    for cell in summary[4]:
        cell.font = Font(bold=True)
    for row in table(data):
        xlsx_append(summary, [float(v) if isinstance(v, Decimal) else v for v in row])
    for col, (_, _, kind) in enumerate(COLUMNS, start=1):
        if kind == "money":
            for r in range(5, summary.max_row + 1):
                summary.cell(row=r, column=col).number_format = MONEY_FORMAT
    summary.freeze_panes = "C5"

    charts = data["charts"]
    daily = wb.create_sheet("Daily peaks")
    xlsx_append(daily, ["date", "managed_peak_kw", "unmanaged_peak_kw"])
    for day, managed, unmanaged in charts["daily_peak_kw"]:
        xlsx_append(daily, [day, float(managed), float(unmanaged)])
    if len(charts["daily_peak_kw"]):
        chart = LineChart()
        basis = charts.get("daily_peak_basis")
        chart.title = f"Daily peak ({basis}): managed vs unmanaged (kW)" if basis else DAILY_TITLE
        chart.y_axis.title = "kW"
        chart.add_data(Reference(daily, min_col=2, max_col=3, min_row=1, max_row=daily.max_row), titles_from_data=True)
        chart.set_categories(Reference(daily, min_col=1, min_row=2, max_row=daily.max_row))
        chart.width, chart.height = 24, 10
        daily.add_chart(chart, "E2")

    duration = wb.create_sheet("Load duration")
    xlsx_append(duration, ["rank", "managed_kw", "unmanaged_kw"])
    managed_curve = charts["load_duration_kw"].get("actual", [])
    unmanaged_curve = charts["load_duration_kw"].get("unmanaged", [])
    for i in range(max(len(managed_curve), len(unmanaged_curve))):
        xlsx_append(
            duration,
            [
                i + 1,
                float(managed_curve[i]) if i < len(managed_curve) else None,
                float(unmanaged_curve[i]) if i < len(unmanaged_curve) else None,
            ],
        )
    if scope and not managed_curve:
        xlsx_append(duration, ["The load duration curve is drawn for the whole organisation's report only."])
    if duration.max_row > 1 and managed_curve:
        chart = LineChart()
        chart.title = "Load duration curve of the month, all sites (kW)"
        chart.y_axis.title = "kW"
        chart.x_axis.title = "intervals, highest first"
        chart.add_data(
            Reference(duration, min_col=2, max_col=3, min_row=1, max_row=duration.max_row), titles_from_data=True
        )
        chart.width, chart.height = 24, 10
        duration.add_chart(chart, "E2")

    method = wb.create_sheet("Methodology")
    for line in data["methodology"]:
        xlsx_append(method, [line])
    method.column_dimensions["A"].width = 160

    buffer = io.BytesIO()
    wb.save(buffer)
    return buffer.getvalue()
