"""A stored report narrowed to the sites one reader reaches. Pure: data in, data out.

A finance user granted a site group (or one site) gets the organisation's report with only
those sites, every total added up again over them: the same figures, rows and year to date
that the stored report holds for each of those sites, and nothing of the others. The stored,
immutable files are never changed; a narrowed report is rendered on request from the stored
``data`` with the same renderers.

The organisation-wide charts cannot be cut by site: the daily peak of several sites together
depends on when each peaked, and the load duration curve on every interval of all of them. A
narrowed report draws its daily chart from each site's own daily peaks added up (exact for one
site, an upper bound for several, and said so on the chart) and has no load duration curve.
"""

import calendar
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from billing.reports.builder import report_total, year_to_date_total

ZERO = Decimal(0)
SUMMED_PEAKS_NOTE = "sum of each site's own daily peak (an upper bound when they peaked at different times)"


def section_in(section: dict[str, Any], site_ids: set[int], site_slugs: set[str]) -> bool:
    """Whether a site section is one of these sites: by id (reports stored with one), else by slug."""
    if "site_id" in section:
        return section["site_id"] in site_ids
    return section.get("slug") in site_slugs


def report_covers_all(data: dict[str, Any], *, site_ids: Iterable[int], site_slugs: Iterable[str]) -> bool:
    """Every site of the report is among these: the stored files hold nothing out of reach."""
    ids, slugs = set(site_ids), set(site_slugs)
    return all(section_in(section, ids, slugs) for section in data["sites"])


def _daily_sum(sites: list[dict[str, Any]], month: str) -> list[list[str]]:
    year, number = (int(part) for part in month.split("-"))
    days = calendar.monthrange(year, number)[1]
    totals = {f"{month}-{d:02d}": [ZERO, ZERO] for d in range(1, days + 1)}
    for site in sites:
        for day, actual, unmanaged in site.get("daily_peaks_kw", []):
            if day in totals:
                totals[day][0] += Decimal(actual)
                totals[day][1] += Decimal(unmanaged)
    return [[day, format(a, "f"), format(u, "f")] for day, (a, u) in sorted(totals.items())]


def report_data_narrow(data: dict[str, Any], *, site_ids: Iterable[int], site_slugs: Iterable[str]) -> dict[str, Any]:
    """``data`` with only the sites given (by id, or by slug for reports stored before ids were
    kept), its totals, daily chart and year to date recomputed over them; ``scope`` names them."""
    ids, slugs = set(site_ids), set(site_slugs)
    kept = [section for section in data["sites"] if section_in(section, ids, slugs)]
    charts = dict(data["charts"])
    charts["daily_peak_kw"] = _daily_sum(kept, data["month"])
    charts["daily_peak_basis"] = "site's own daily peak" if len(kept) == 1 else SUMMED_PEAKS_NOTE
    charts["load_duration_kw"] = {}
    narrowed = {
        **data,
        "sites": kept,
        "total": report_total(kept),
        "charts": charts,
        "scope": {"sites": [section["slug"] for section in kept]},
    }
    if "year_to_date" in data:
        block = data["year_to_date"]
        narrowed["year_to_date"] = year_to_date_total(kept, year=block["year"], months=block["months"])
    return narrowed
