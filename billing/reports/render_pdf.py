"""PDF rendering (reportlab): summary table, charts (daily peak, load duration), methodology.

``invariant=1`` keeps the bytes the same for the same data (no creation time or random id).
Names people chose (organisation, tariff) are escaped: a paragraph reads its text as markup.
"""

import io
from decimal import Decimal
from html import escape
from typing import Any

from reportlab.graphics.charts.lineplots import LinePlot  # type: ignore[import-untyped]
from reportlab.graphics.shapes import Drawing, Line, String  # type: ignore[import-untyped]
from reportlab.lib import colors  # type: ignore[import-untyped]
from reportlab.lib.pagesizes import landscape, letter  # type: ignore[import-untyped]
from reportlab.lib.styles import getSampleStyleSheet  # type: ignore[import-untyped]
from reportlab.lib.units import inch  # type: ignore[import-untyped]
from reportlab.platypus import (  # type: ignore[import-untyped]
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from billing.reports.rows import cell, money

PDF_COLUMNS = (
    ("Site", ("slug",), "text"),
    ("Sessions", ("sessions",), "int"),
    ("kWh delivered", ("energy_delivered_kwh",), "kwh"),
    ("kWh not delivered (cap)", ("energy_not_delivered_kwh",), "kwh"),
    ("Peak kW managed", ("actual", "peak_kw"), "kw"),
    ("Peak kW unmanaged", ("unmanaged", "peak_kw"), "kw"),
    ("Demand $ managed", ("actual", "demand_charge"), "money"),
    ("Demand $ unmanaged", ("unmanaged", "demand_charge"), "money"),
    ("Energy $ managed", ("actual", "energy_cost"), "money"),
    ("Energy $ unmanaged", ("unmanaged", "energy_cost"), "money"),
    ("Fixed $", ("actual", "fixed_charge"), "money"),
    ("Bill $ managed", ("actual", "bill_total"), "money"),
    ("Savings $", ("savings", "total"), "money"),
    ("Avoided capex $", ("avoided_capital_cost",), "money"),
)
MANAGED_COLOUR = colors.HexColor("#1f77b4")
UNMANAGED_COLOUR = colors.HexColor("#d62728")


def _shown(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "money":
        return f"{value:,.2f}"
    if kind in ("kw", "kwh"):
        return f"{Decimal(value):,.1f}"
    return str(value)


def _chart(title: str, series: list[list[tuple[float, float]]], x_label: str) -> Drawing:
    drawing = Drawing(9.5 * inch, 3.2 * inch)
    drawing.add(String(10, 3.2 * inch - 14, title, fontName="Helvetica-Bold", fontSize=11))
    plot = LinePlot()
    plot.x, plot.y = 50, 40
    plot.width, plot.height = 9.5 * inch - 80, 3.2 * inch - 80
    plot.data = [s or [(0.0, 0.0)] for s in series]
    plot.lines[0].strokeColor = MANAGED_COLOUR
    plot.lines[1].strokeColor = UNMANAGED_COLOUR
    plot.lines[0].strokeWidth = plot.lines[1].strokeWidth = 1.5
    plot.yValueAxis.valueMin = 0
    plot.xValueAxis.labelTextFormat = "%d"
    plot.xValueAxis.valueMin = 1
    drawing.add(plot)
    drawing.add(String(plot.x + plot.width / 2 - 40, 8, x_label, fontSize=8))
    x = plot.x + plot.width - 260
    for colour, label in ((MANAGED_COLOUR, "managed (actual)"), (UNMANAGED_COLOUR, "unmanaged (counterfactual)")):
        drawing.add(Line(x, 3.2 * inch - 11, x + 18, 3.2 * inch - 11, strokeColor=colour, strokeWidth=2))
        drawing.add(String(x + 22, 3.2 * inch - 14, label, fontSize=8))
        x += 120
    return drawing


def _periods(values: dict[str, str], money: bool) -> str:
    if not values:
        return "-"
    return ", ".join(
        f"p{p} {Decimal(v):,.2f}" if money else f"p{p} {Decimal(v):,.1f}" for p, v in sorted(values.items())
    )


def _demand_table(data: dict[str, Any], header_style: Any) -> Table:
    """Each demand component per site: billing kW and charge, managed vs unmanaged."""
    names = (
        "Site",
        "Flat billing kW managed",
        "Flat billing kW unmanaged",
        "Flat demand $ managed",
        "Flat demand $ unmanaged",
        "TOU demand kW managed",
        "TOU demand kW unmanaged",
        "TOU demand $ managed",
        "TOU demand $ unmanaged",
    )
    rows: list[list[Any]] = [[Paragraph(f"<b>{name}</b>", header_style) for name in names]]
    for site in data["sites"]:
        actual, unmanaged = site["actual"], site["unmanaged"]
        rows.append(
            [
                site["slug"],
                f"{Decimal(actual['flat_billing_kw']):,.1f}",
                f"{Decimal(unmanaged['flat_billing_kw']):,.1f}",
                f"{money(actual['flat_demand_charge']):,.2f}",
                f"{money(unmanaged['flat_demand_charge']):,.2f}",
                _periods(actual["tou_demand_kw"], money=False),
                _periods(unmanaged["tou_demand_kw"], money=False),
                _periods({p: str(money(v)) for p, v in actual["tou_demand_charge"].items()}, money=True),
                _periods({p: str(money(v)) for p, v in unmanaged["tou_demand_charge"].items()}, money=True),
            ]
        )
    return _table(rows)


def _table(rows: list[list[Any]], *extra_style: tuple[Any, ...]) -> Table:
    """A report table: small figures right-aligned, grid, shaded header row (repeated per page)."""
    table = Table(rows, repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONTSIZE", (0, 1), (-1, -1), 7),
                ("ALIGN", (1, 1), (-1, -1), "RIGHT"),
                ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
                *extra_style,
            ]
        )
    )
    return table


def render_pdf(data: dict[str, Any]) -> bytes:
    styles = getSampleStyleSheet()
    buffer = io.BytesIO()
    doc = SimpleDocTemplate(
        buffer,
        pagesize=landscape(letter),
        leftMargin=0.4 * inch,
        rightMargin=0.4 * inch,
        topMargin=0.5 * inch,
        bottomMargin=0.5 * inch,
        title=f"Savings report {data['month']}",
        author="EV load balancing platform",
        invariant=1,
    )
    story: list[Any] = [
        Paragraph(f"Load balancing savings, {data['month']}: {escape(data['tenant']['name'])}", styles["Title"]),
        Paragraph(
            f"Generated {data['generated_at']}. Amounts in {data['currency']}, rounded to the cent. "
            f"Savings = unmanaged bill - actual bill; avoided capital cost is one-time.",
            styles["Normal"],
        ),
        Spacer(1, 8),
    ]
    header_style = styles["BodyText"].clone("header", fontSize=7, leading=8)
    header = [Paragraph(f"<b>{name}</b>", header_style) for name, _, _ in PDF_COLUMNS]
    rows: list[list[Any]] = [header]
    for section in [*data["sites"], data["total"]]:
        row = [_shown(cell(section, path, kind), kind) for _, path, kind in PDF_COLUMNS]
        rows.append(row)
    rows[-1][0] = "TOTAL"
    table = _table(rows, ("FONTNAME", (0, -1), (-1, -1), "Helvetica-Bold"))
    story += [table, Spacer(1, 10), _demand_table(data, header_style), Spacer(1, 10)]
    for site in data["sites"]:
        tariff = site["tariff"]
        line = (
            f"<b>{site['slug']}</b>: tariff {escape(tariff['name'])} v{tariff['version']} "
            f"(from {tariff['valid_from']}, {tariff['demand_window_minutes']}-min demand window)"
            if tariff
            else f"<b>{site['slug']}</b>: no tariff in force (costs shown as 0)"
        )
        if tariff and tariff.get("problem"):
            line += f", {escape(tariff['problem'])} (costs shown as 0)"
        sources = ", ".join(f"{k} {n}" for k, n in site["rate_sources"].items()) or "no sessions"
        story.append(
            Paragraph(
                f"{line}; acceptance rates: {sources}; register resets: {site['register_resets']}", styles["Normal"]
            )
        )
    story.append(PageBreak())
    charts = data["charts"]
    daily = charts["daily_peak_kw"]
    story.append(
        _chart(
            f"Daily peak, all sites together (kW, days in {charts['timezone']})",
            [
                [(float(i + 1), float(managed)) for i, (_, managed, _) in enumerate(daily)],
                [(float(i + 1), float(unmanaged)) for i, (_, _, unmanaged) in enumerate(daily)],
            ],
            "day of month",
        )
    )
    curves = charts["load_duration_kw"]
    story.append(
        _chart(
            "Load duration curve of the month, all sites together (kW)",
            [
                [(float(i + 1), float(kw)) for i, kw in enumerate(curves.get("actual", []))],
                [(float(i + 1), float(kw)) for i, kw in enumerate(curves.get("unmanaged", []))],
            ],
            "rank of interval (highest first)",
        )
    )
    story += [Spacer(1, 8), Paragraph("Methodology", styles["Heading2"])]
    story += [Paragraph(line, styles["BodyText"]) for line in data["methodology"]]
    doc.build(story)
    return buffer.getvalue()
