"""PDF rendering (reportlab): a one-page summary for finance first, then the detail: summary
table, demand components, each site's load against its cap, the charts (daily peak, load
duration) and the methodology.

``invariant=1`` keeps the bytes the same for the same data (no creation time or random id).
Names people chose (organisation, tariff) are escaped: a paragraph reads its text as markup.
"""

import calendar
import io
from datetime import date
from decimal import Decimal
from html import escape
from typing import Any

from reportlab.graphics.charts.barcharts import VerticalBarChart  # type: ignore[import-untyped]
from reportlab.graphics.charts.lineplots import LinePlot  # type: ignore[import-untyped]
from reportlab.graphics.shapes import Drawing, Line, String  # type: ignore[import-untyped]
from reportlab.lib import colors  # type: ignore[import-untyped]
from reportlab.lib.pagesizes import landscape, letter  # type: ignore[import-untyped]
from reportlab.lib.styles import getSampleStyleSheet  # type: ignore[import-untyped]
from reportlab.lib.units import inch  # type: ignore[import-untyped]
from reportlab.platypus import (  # type: ignore[import-untyped]
    CondPageBreak,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from billing.reports.rows import BASIS_TEXT, POLICY_COLUMNS, POLICY_LABELS, RAN, SIMULATED, cell, money

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
CAP_COLOUR = colors.HexColor("#2ca02c")
ENERGY_COLOUR = colors.HexColor("#dddddd")
SITE_CHART_HEIGHT = 3.1 * inch


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


POLICY_FIGURES = (
    ("Peak kW", ("peak_kw",), "kw"),
    ("Flat billing kW", ("flat_billing_kw",), "kw"),
    ("Demand $", ("demand_charge",), "money"),
    ("Energy $", ("energy_cost",), "money"),
    ("kWh", ("energy_kwh",), "kwh"),
    ("Bill $", ("bill_total",), "money"),
    ("Savings vs unmanaged $", ("savings", "total"), "money"),
)


def basis_label(section: dict[str, Any], column: str) -> str:
    """What a policy column of a site (or the TOTAL) rests on, in words."""
    if column == "unmanaged":
        return "counterfactual"
    basis = section.get(column, {}).get("basis")
    if basis is None:
        return "-"
    if isinstance(basis, dict):  # the TOTAL: sites by basis
        if len(basis) == 1:
            return BASIS_TEXT.get(next(iter(basis)), "-")
        return ", ".join(f"{BASIS_TEXT.get(k, k)} at {n} site{'s' if n != 1 else ''}" for k, n in sorted(basis.items()))
    return BASIS_TEXT.get(basis, str(basis))


def _policy_table(data: dict[str, Any], header_style: Any) -> Table:
    """Each site's month under the three policies: the one it ran metered, the other simulated."""
    names = ("Site", "Policy", "Figures", *(name for name, _, _ in POLICY_FIGURES))
    rows: list[list[Any]] = [[Paragraph(f"<b>{name}</b>", header_style) for name in names]]
    cell_style = header_style.clone("policy-cell", fontSize=7, leading=8)
    for section, slug in [*((site, site["slug"]) for site in data["sites"]), (data["total"], "TOTAL")]:
        policy = section.get("policy")
        ran = RAN.get(policy) if isinstance(policy, str) else None
        for column in ("unmanaged", *POLICY_COLUMNS):
            label = POLICY_LABELS[column] + (" (ran)" if column == ran else "")
            rows.append(
                [
                    Paragraph(escape(slug), cell_style) if column == "unmanaged" else "",
                    label,
                    Paragraph(escape(basis_label(section, column)), cell_style),
                    *(_shown(cell(section, (column, *path), kind), kind) for _, path, kind in POLICY_FIGURES),
                ]
            )
    widths = [1.3 * inch, 0.95 * inch, 1.95 * inch, *([0.85 * inch] * len(POLICY_FIGURES))]
    table = Table(rows, colWidths=widths, repeatRows=1)
    table.setStyle(
        TableStyle(
            [
                ("FONTSIZE", (0, 1), (-1, -1), 7),
                ("ALIGN", (3, 1), (-1, -1), "RIGHT"),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eeeeee")),
                ("FONTNAME", (0, -3), (-1, -1), "Helvetica-Bold"),
            ]
        )
    )
    return table


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


def month_label(month: str) -> str:
    """``2026-10`` -> ``October 2026``."""
    year, number = (int(part) for part in month.split("-"))
    return f"{calendar.month_name[number]} {year}"


def _dollars(value: Any) -> str:
    return f"${money(value):,.2f}"


def _number(value: Any, unit: str) -> str:
    return f"{Decimal(value):,.1f} {unit}"


def _scope_line(data: dict[str, Any]) -> str:
    scope = data.get("scope")
    if scope is None:
        count = len(data["sites"])
        return f"All {count} site{'s' if count != 1 else ''} of the organisation."
    if not scope["sites"]:
        return "No site of the organisation is in your reach: this report holds none."
    return f"The sites in your reach only: {escape(', '.join(scope['sites']))}. Totals are over these sites."


def _summary(data: dict[str, Any], styles: Any) -> list[Any]:
    """Page one: the month's savings, demand, energy, the avoided upgrade and the year so far."""
    total, sites = data["total"], data["sites"]
    month = month_label(data["month"])
    ytd = data.get("year_to_date")
    actual_kw, unmanaged_kw = Decimal(total["actual"]["peak_kw"]), Decimal(total["unmanaged"]["peak_kw"])
    reduction = unmanaged_kw - actual_kw
    share = f" ({reduction / unmanaged_kw:.0%})" if unmanaged_kw > 0 else ""
    with_lb = sum((Decimal(s.get("installation_with_lb", "0")) for s in sites), Decimal(0))
    without_lb = sum((Decimal(s.get("installation_without_lb", "0")) for s in sites), Decimal(0))
    ytd_label = "Year to date"
    if ytd:
        first, last = month_label(ytd["months"][0]), month_label(ytd["months"][-1])
        ytd_label = f"Year to date ({first} to {last})" if first != last else f"Year to date ({first})"
    ytd_total = ytd["total"] if ytd else {}

    def so_far(name: str, kind: str) -> str:
        if name not in ytd_total:
            return "-"
        return _dollars(ytd_total[name]) if kind == "money" else _number(ytd_total[name], "kWh")

    rows: list[list[Any]] = [
        ["", month, ytd_label],
        ["Savings, total", _dollars(total["savings"]["total"]), so_far("savings_total", "money")],
        ["  demand charges avoided", _dollars(total["savings"]["demand_charge"]),
         so_far("savings_demand_charge", "money")],
        ["  energy cost", _dollars(total["savings"]["energy_cost"]), so_far("savings_energy_cost", "money")],
        ["Energy delivered", _number(total["energy_delivered_kwh"], "kWh"), so_far("energy_delivered_kwh", "kwh")],
        ["Energy not delivered (cap)", _number(total["energy_not_delivered_kwh"], "kWh"), ""],
        ["Peak demand, managed (actual)", _number(actual_kw, "kW"), ""],
        ["Peak demand, unmanaged (counterfactual)", _number(unmanaged_kw, "kW"), ""],
        ["Peak demand avoided", _number(reduction, "kW") + share, ""],
        ["Bill, managed vs unmanaged", f"{_dollars(total['actual']['bill_total'])} vs "
         f"{_dollars(total['unmanaged']['bill_total'])}", ""],
    ]  # fmt: skip
    figures = Table(rows, colWidths=[3.4 * inch, 2.6 * inch, 3.2 * inch])
    policies = _policies_summary(data, styles)
    figures.setStyle(
        TableStyle(
            [
                ("FONTSIZE", (0, 0), (-1, -1), 11),
                ("LEADING", (0, 0), (-1, -1), 14),
                ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                ("FONTNAME", (0, 1), (-1, 1), "Helvetica-Bold"),
                ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.75, colors.black),
                ("LINEBELOW", (0, 3), (-1, 3), 0.25, colors.grey),
                ("LINEBELOW", (0, 5), (-1, 5), 0.25, colors.grey),
                ("BACKGROUND", (0, 1), (-1, 1), colors.HexColor("#eef5ee")),
            ]
        )
    )
    months = f"{len(ytd['months'])} month{'s' if len(ytd['months']) != 1 else ''} with a stored report" if ytd else ""
    notes = [
        "Peaks are added up over the sites (each site's own highest demand in its tariff's window). "
        if len(sites) > 1 else "",
        f"Year to date: this year's months so far, {months}, each as its latest stored version reported it. "
        if ytd else "",
    ]  # fmt: skip
    return [
        Paragraph(f"Savings report {month}: {escape(data['tenant']['name'])}", styles["Title"]),
        Paragraph(_scope_line(data), styles["Normal"]),
        Spacer(1, 10),
        figures,
        Spacer(1, 10),
        *policies,
        Spacer(1, 10),
        Paragraph("<b>Electrical upgrade avoided (one-time capital cost)</b>", styles["Heading3"]),
        Paragraph(
            f"Installing the chargers with load balancing: {_dollars(with_lb)}; without it, the service "
            f"upgrade they would need: {_dollars(without_lb)}. "
            f"Avoided: <b>{_dollars(total['avoided_capital_cost'])}</b> "
            "(each site's installation cost model, scaled by its chargers; the brochure's quote of $2,290 vs "
            "$12,192 for four chargers unless the site has its own).",
            styles["Normal"],
        ),
        Spacer(1, 10),
        Paragraph(
            f"Savings = unmanaged bill - actual bill (amounts in {data['currency']}, rounded to the cent). "
            + "".join(notes)
            + "The pages after this one hold every figure per site, each site's load against its cap, and the method.",
            styles["BodyText"],
        ),
    ]


def _policies_summary(data: dict[str, Any], styles: Any) -> list[Any]:
    """Page one's comparison: the month's bill and savings under each policy, and the year so far."""
    total = data["total"]
    ytd = data.get("year_to_date") or {}
    ytd_total, partial = ytd.get("total", {}), ytd.get("partial", {})

    def dollars(value: Any) -> str:
        return "-" if value is None else _dollars(value)

    def so_far(name: str) -> str:
        if name not in ytd_total:
            return "-"
        months = partial.get(name)
        covers = f" ({len(months)} month{'s' if len(months) != 1 else ''})" if months else ""
        return _dollars(ytd_total[name]) + covers

    rows: list[list[Any]] = [["Policy (figures)", "Bill", "Savings vs unmanaged", "Bill, year to date",
                              "Savings, year to date"]]  # fmt: skip
    for column in ("unmanaged", *POLICY_COLUMNS):
        bill = cell(total, (column, "bill_total"), "money")
        saved = cell(total, (column, "savings", "total"), "money") if column != "unmanaged" else None
        rows.append(
            [
                f"{POLICY_LABELS[column].capitalize()} ({basis_label(total, column)})",
                dollars(bill),
                "-" if column == "unmanaged" else dollars(saved),
                so_far(f"bill_{column}"),
                "-" if column == "unmanaged" else so_far(f"savings_{column}"),
            ]
        )
    table = Table(rows, colWidths=[4.4 * inch, 1.2 * inch, 1.5 * inch, 1.4 * inch, 1.6 * inch])
    table.setStyle(
        TableStyle(
            [
                ("FONTSIZE", (0, 0), (-1, -1), 9),
                ("LEADING", (0, 0), (-1, -1), 11),
                ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.75, colors.black),
            ]
        )
    )
    return [
        Paragraph("<b>Policies compared: unmanaged, static cap, cost-aware</b>", styles["Heading3"]),
        table,
        Paragraph(
            f"Each site's metered load is the policy it ran; the other policy is {SIMULATED}. "
            "A figure some site lacks is not added up (-).",
            styles["BodyText"],
        ),
    ]


def _site_chart(site: dict[str, Any], month: str) -> Drawing:
    """One site's daily peak (managed and unmanaged, kW) against its demand cap, daily kWh as bars."""
    year, number = (int(part) for part in month.split("-"))
    days = calendar.monthrange(year, number)[1]
    peaks = {day: (float(a), float(u)) for day, a, u in site.get("daily_peaks_kw", [])}
    energy = {day: float(kwh) for day, kwh in site.get("daily_energy_kwh", [])}
    keys = [date(year, number, d).isoformat() for d in range(1, days + 1)]
    cap, cap_label = site.get("demand_cap_kw"), "demand cap"
    if cap is None and site.get("grid_limit_kw") is not None:
        cap, cap_label = site["grid_limit_kw"], "grid limit (no demand cap set)"
    cap_kw = float(cap) if cap is not None else None
    top = max([*(max(p) for p in peaks.values()), cap_kw or 0.0, 1.0]) * 1.15

    height = SITE_CHART_HEIGHT
    drawing = Drawing(9.5 * inch, height)
    title = f"{site['slug']}: load against {'its ' + cap_label if cap_kw is not None else 'no cap'} (kW, daily peak)"
    drawing.add(String(10, height - 14, title, fontName="Helvetica-Bold", fontSize=10))
    x, y, width, plot_height = 50, 36, 9.5 * inch - 90, height - 90

    bars = VerticalBarChart()
    bars.x, bars.y, bars.width, bars.height = x, y, width, plot_height
    bars.data = [[energy.get(day, 0.0) for day in keys]]
    bars.bars[0].fillColor = ENERGY_COLOUR
    bars.bars[0].strokeColor = None
    bars.valueAxis.valueMin = 0
    bars.valueAxis.valueMax = max([*energy.values(), 1.0]) * 1.15
    bars.valueAxis.visible = False
    bars.categoryAxis.visible = False
    drawing.add(bars)

    plot = LinePlot()
    plot.x, plot.y, plot.width, plot.height = x, y, width, plot_height
    series = [
        [(float(i + 1), peaks.get(day, (0.0, 0.0))[0]) for i, day in enumerate(keys)],
        [(float(i + 1), peaks.get(day, (0.0, 0.0))[1]) for i, day in enumerate(keys)],
    ]
    if cap_kw is not None:
        series.append([(0.5, cap_kw), (days + 0.5, cap_kw)])
    plot.data = series
    plot.lines[0].strokeColor, plot.lines[1].strokeColor = MANAGED_COLOUR, UNMANAGED_COLOUR
    plot.lines[0].strokeWidth = plot.lines[1].strokeWidth = 1.5
    if cap_kw is not None:
        plot.lines[2].strokeColor, plot.lines[2].strokeWidth = CAP_COLOUR, 1.5
        plot.lines[2].strokeDashArray = (4, 3)
    plot.xValueAxis.valueMin, plot.xValueAxis.valueMax = 0.5, days + 0.5
    plot.xValueAxis.valueSteps = list(range(1, days + 1, 2))
    plot.xValueAxis.labelTextFormat = "%d"
    plot.yValueAxis.valueMin, plot.yValueAxis.valueMax = 0, top
    drawing.add(plot)
    highest = max(energy.values(), default=0.0)
    drawing.add(
        String(
            x,
            8,
            f"day of month; grey bars: energy per day (highest {highest:,.1f} kWh); "
            f"month {Decimal(site['energy_delivered_kwh']):,.1f} kWh",
            fontSize=8,
        )
    )
    legend = [(MANAGED_COLOUR, "managed (actual)"), (UNMANAGED_COLOUR, "unmanaged (counterfactual)")]
    if cap_kw is not None:
        legend.append((CAP_COLOUR, f"{cap_label} {cap_kw:,.1f} kW"))
    lx = x
    for colour, label in legend:
        drawing.add(Line(lx, height - 27, lx + 18, height - 27, strokeColor=colour, strokeWidth=2))
        drawing.add(String(lx + 22, height - 30, label, fontSize=8))
        lx += 150
    return drawing


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
        *_summary(data, styles),
        PageBreak(),
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
    story += [
        CondPageBreak(1.5 * inch),
        Paragraph("Policies compared: unmanaged, static cap and cost-aware", styles["Heading3"]),
        Paragraph(
            f"The policy each site ran (ran) is its metered load; the other is {SIMULATED} under the site's "
            "demand cap (and, for cost-aware, its tariff). Savings are on the unmanaged bill, energy a simulated "
            "policy would not have delivered priced out.",
            styles["Normal"],
        ),
        Spacer(1, 4),
        _policy_table(data, header_style),
        Spacer(1, 10),
    ]
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
        policies = "".join(
            f"; {POLICY_LABELS[column]}: {escape(site[column]['note'])}"
            for column in POLICY_COLUMNS
            if "note" in site.get(column, {})
        )
        story.append(
            Paragraph(
                f"{line}; acceptance rates: {sources}; register resets: {site['register_resets']}{policies}",
                styles["Normal"],
            )
        )
    story.append(PageBreak())
    for site in data["sites"]:
        story += [CondPageBreak(SITE_CHART_HEIGHT + 10), _site_chart(site, data["month"]), Spacer(1, 10)]
    story.append(PageBreak())
    charts = data["charts"]
    daily = charts["daily_peak_kw"]
    basis = charts.get("daily_peak_basis")
    story.append(
        _chart(
            f"Daily peak, {basis or 'all sites together'} (kW, days in {charts['timezone']})",
            [
                [(float(i + 1), float(managed)) for i, (_, managed, _) in enumerate(daily)],
                [(float(i + 1), float(unmanaged)) for i, (_, _, unmanaged) in enumerate(daily)],
            ],
            "day of month",
        )
    )
    curves = charts["load_duration_kw"]
    if curves or "scope" not in data:
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
    else:
        story.append(
            Paragraph("The load duration curve is drawn in the whole organisation's report only.", styles["Normal"])
        )
    story += [Spacer(1, 8), Paragraph("Methodology", styles["Heading2"])]
    story += [Paragraph(line, styles["BodyText"]) for line in data["methodology"]]
    doc.build(story)
    return buffer.getvalue()
