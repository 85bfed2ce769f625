"""The figures of one tenant's monthly savings report, from rollups and sessions. Schema: tenant.

Reads only (the caller stores what it returns). Every amount stays at full precision here and
is written as a string; the renderers round to the cent with ROUND_HALF_UP.
"""

import calendar
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from balancing.meter import site_limit_kw
from balancing.models import Site
from billing.counterfactual import scaled_to, unmanaged_intervals
from billing.intervals import DEFAULT_INTERVAL_MINUTES, ZERO
from billing.models import InstallationCostModel, SiteMonthDemand
from billing.reports.rows import money
from billing.selectors import (
    SessionFacts,
    installation_cost,
    report_latest_data,
    site_intervals_and_resets,
    site_list,
    site_sessions,
    site_timezone,
    station_count,
    tariff_in_force,
    tariff_spec,
)
from billing.tariffs import (
    MonthBill,
    TariffError,
    TariffSpec,
    Tier,
    bill_month,
    month_bounds,
    previous_months,
    window_demands_kw,
)

logger = logging.getLogger(__name__)

RATCHET_LOOKBACK_MONTHS = 11
LOAD_DURATION_POINTS = 400  # the curve is drawn from this many evenly spaced ranks
NO_TARIFF = TariffSpec(
    name="(no tariff)",
    utility="",
    label="",
    energy_periods=((Tier(None, ZERO),),),
    energy_weekday=((0,) * 24,) * 12,
    energy_weekend=((0,) * 24,) * 12,
)

METHODOLOGY = [
    "Actual load: energy register readings of every charger, rolled up into 15-minute intervals "
    "(gaps spread evenly, late and out-of-order readings recomputed, duplicates counted once, "
    "register resets and meter swaps detected).",
    "Billing demand: the highest average kW over the tariff's demand window (15 minutes unless the "
    "tariff says otherwise) in the month, aligned to the site's local clock; per flat (facility) "
    "demand and per time-of-use demand period. Ratchets compare with the 11 months before.",
    "Energy cost: kWh of each interval priced by the time-of-use period of its local hour, including "
    "the 23- and 25-hour days of daylight saving changes; fixed charges as the tariff states.",
    "Unmanaged load (counterfactual): every car draws its own acceptance rate from plug-in until it "
    "has the energy it actually received. The rate is what the car declared (OCPP 2.0.1 charging "
    "needs), else the highest draw seen while its limit was above its draw, else the charger's "
    "rating; raised to the session's average power where that was higher.",
    "The unmanaged load holds the same kWh as the metered load: savings come from demand and "
    "timing only, never from energy that was not delivered. Energy not delivered because of a cap "
    "(cars that declared a need, were held at our limit and left short) is shown separately.",
    "Avoided capital cost: the site's installation cost model (defaults: the brochure's quote of "
    "$2,290 with load balancing vs $12,192 without, for four chargers), scaled by its chargers. "
    "It is a one-time figure, not a monthly saving.",
    "Building load behind the same meter is not included: the bill estimate covers EV charging.",
]


def _s(value: Decimal) -> str:
    return format(value, "f")


def _kw(value: Decimal) -> str:
    """A chart's kW to the watt, rounded half up as the summary's kW are (``reports.rows``)."""
    return _s(value.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))


@dataclass
class MonthDemand:
    site_id: int
    month: date
    actual_kw: Decimal
    unmanaged_kw: Decimal


def _components(bill: MonthBill) -> dict[str, Any]:
    return {
        "energy_kwh": _s(bill.energy_kwh),
        "peak_kw": _s(bill.peak_kw),
        "peak_at": bill.peak_at.isoformat() if bill.peak_at else None,
        "flat_demand_kw": _s(bill.flat_demand_kw),
        "ratchet_kw": _s(bill.ratchet_kw),
        "flat_billing_kw": _s(bill.flat_billing_kw),
        "tou_demand_kw": {str(p): _s(kw) for p, kw in sorted(bill.tou_demand_kw.items())},
        "flat_demand_charge": _s(bill.flat_demand_charge),
        "tou_demand_charge": {str(p): _s(c) for p, c in sorted(bill.tou_demand_charge.items())},
        "demand_charge": _s(bill.demand_charge),
        "energy_cost": _s(bill.energy_cost),
        "energy_cost_by_period": {str(p): _s(c) for p, c in sorted(bill.energy_cost_by_period.items())},
        "fixed_charge": _s(bill.fixed_charge),
        "bill_total": _s(bill.total),
    }


def _month_profiles(
    site: Site, year: int, month: int
) -> tuple[dict[datetime, Decimal], dict[datetime, Decimal], Counter[str], list[SessionFacts], int]:
    """Actual and unmanaged interval kWh of the site's local month, rate sources, sessions, resets."""
    tz = site_timezone(site)
    start, end = month_bounds(year, month, tz)
    actual, resets = site_intervals_and_resets(site=site, start=start, end=end)
    sessions = site_sessions(site=site, start=start, end=end)
    raw, sources = unmanaged_intervals([facts.load for facts in sessions], minutes=DEFAULT_INTERVAL_MINUTES)
    inside = {k: v for k, v in raw.items() if start <= k < end}
    metered = sum(actual.values(), ZERO)
    unmanaged = scaled_to(inside, metered) if sum(inside.values(), ZERO) > 0 else dict(actual)
    return actual, unmanaged, sources, sessions, resets


def _peak(intervals: dict[datetime, Decimal], site: Site, spec: TariffSpec) -> Decimal:
    demands = window_demands_kw(
        intervals,
        tz=site_timezone(site),
        window_minutes=spec.demand_window_minutes,
        interval_minutes=DEFAULT_INTERVAL_MINUTES,
    )
    return max(demands.values(), default=ZERO)


def _ratchet_references(
    site: Site, spec: TariffSpec, year: int, month: int, computed: list[MonthDemand]
) -> tuple[Decimal, Decimal]:
    """Highest actual and unmanaged demand of the 11 months before (stored, or computed now)."""
    if not any(spec.ratchet_fractions):
        return ZERO, ZERO
    months = previous_months(year, month, RATCHET_LOOKBACK_MONTHS)
    stored = {row.month: row for row in SiteMonthDemand.objects.filter(site=site, month__in=months)}
    best_actual = best_unmanaged = ZERO
    for first in months:
        row = stored.get(first)
        if row is not None:
            actual_kw, unmanaged_kw = row.actual_kw, row.unmanaged_kw
        else:
            actual, unmanaged, _, _, _ = _month_profiles(site, first.year, first.month)
            if not actual and not unmanaged:
                continue
            actual_kw, unmanaged_kw = _peak(actual, site, spec), _peak(unmanaged, site, spec)
            computed.append(MonthDemand(site.pk, first, actual_kw, unmanaged_kw))
        best_actual, best_unmanaged = max(best_actual, actual_kw), max(best_unmanaged, unmanaged_kw)
    return best_actual, best_unmanaged


def _avoided_capital(model: InstallationCostModel, chargers: int) -> tuple[Decimal, Decimal, Decimal]:
    with_lb = sum((getattr(model, f"{c}_with_lb") for c in model.COMPONENTS), ZERO)
    without_lb = sum((getattr(model, f"{c}_without_lb") for c in model.COMPONENTS), ZERO)
    scale = Decimal(chargers) / Decimal(model.reference_chargers)
    return with_lb * scale, without_lb * scale, (without_lb - with_lb) * scale


def _bills(
    site: Site,
    spec: TariffSpec,
    year: int,
    month: int,
    actual: dict[datetime, Decimal],
    unmanaged: dict[datetime, Decimal],
    computed: list[MonthDemand],
) -> tuple[MonthBill, MonthBill]:
    """The month's actual and unmanaged bills; ``ArithmeticError`` if one cannot be shown to the cent."""
    ref_actual, ref_unmanaged = _ratchet_references(site, spec, year, month, computed)
    kwargs: dict[str, Any] = {
        "tz": site_timezone(site),
        "year": year,
        "month": month,
        "interval_minutes": DEFAULT_INTERVAL_MINUTES,
    }
    bills = (
        bill_month(spec, actual, ratchet_reference_kw=ref_actual, **kwargs),
        bill_month(spec, unmanaged, ratchet_reference_kw=ref_unmanaged, **kwargs),
    )
    for bill in bills:
        shown = [bill.energy_cost, bill.flat_demand_charge, bill.demand_charge, bill.fixed_charge, bill.total]
        for amount in [*shown, *bill.tou_demand_charge.values(), *bill.energy_cost_by_period.values()]:
            money(amount)
    money(bills[1].total - bills[0].total)
    return bills


def _site_section(
    site: Site, year: int, month: int, totals: dict[str, dict[datetime, Decimal]], computed: list[MonthDemand]
) -> dict[str, Any]:
    tz = site_timezone(site)
    start, end = month_bounds(year, month, tz)
    tariff = tariff_in_force(site=site, on=date(year, month, 1))
    actual, unmanaged, sources, sessions, resets = _month_profiles(site, year, month)
    problem = None
    mark = len(computed)
    try:
        spec = tariff_spec(tariff) if tariff is not None else NO_TARIFF
        bill_actual, bill_unmanaged = _bills(site, spec, year, month, actual, unmanaged, computed)
    except (TariffError, ArithmeticError) as exc:
        # A version stored before today's checks: the site is billed without it, and says so.
        problem = f"not billed: {exc}" if isinstance(exc, TariffError) else "not billed: amounts too large to show"
        logger.warning("site %s, %04d-%02d: tariff %s %s", site.slug, year, month, tariff and tariff.pk, problem)
        spec = NO_TARIFF
        del computed[mark:]
        bill_actual, bill_unmanaged = _bills(site, spec, year, month, actual, unmanaged, computed)
    computed.append(MonthDemand(site.pk, date(year, month, 1), bill_actual.peak_kw, bill_unmanaged.peak_kw))
    for key, series in (("actual", actual), ("unmanaged", unmanaged)):
        for at, kwh in series.items():
            totals[key][at] = totals[key].get(at, ZERO) + kwh

    in_month = [f for f in sessions if start <= f.load.started_at < end]
    not_delivered = ZERO
    for facts in sessions:
        stopped, needed = facts.load.stopped_at, facts.energy_needed_kwh
        if stopped is None or not start <= stopped < end or needed is None or not facts.was_capped:
            continue
        if facts.load.energy_kwh < needed:
            not_delivered += needed - facts.load.energy_kwh
    chargers = station_count(site=site)
    cost_with, cost_without, avoided = _avoided_capital(installation_cost(site=site), chargers)
    daily = [
        [day.isoformat(), _s(kw), _s(bill_unmanaged.daily_peak_kw.get(day, ZERO))]
        for day, kw in sorted(bill_actual.daily_peak_kw.items())
    ]
    daily_kwh: dict[str, Decimal] = {}
    for at, kwh in actual.items():
        if start <= at < end:
            day = at.astimezone(tz).date().isoformat()
            daily_kwh[day] = daily_kwh.get(day, ZERO) + kwh
    return {
        "site_id": site.pk,
        "slug": site.slug,
        "name": site.name,
        "timezone": site.timezone,
        "tariff": None
        if tariff is None
        else {
            "id": tariff.pk,
            "version": tariff.version,
            "name": tariff.name,
            "utility": tariff.utility,
            "valid_from": tariff.valid_from.isoformat(),
            "record_sha256": tariff.record_sha256,
            "demand_window_minutes": spec.demand_window_minutes,
            **({"problem": problem} if problem else {}),
        },
        "sessions": len(in_month),
        "energy_delivered_kwh": _s(bill_actual.energy_kwh),
        "energy_not_delivered_kwh": _s(not_delivered),
        "register_resets": resets,
        "rate_sources": dict(sorted(sources.items())),
        "chargers": chargers,
        "actual": _components(bill_actual),
        "unmanaged": _components(bill_unmanaged),
        "savings": {
            "demand_charge": _s(bill_unmanaged.demand_charge - bill_actual.demand_charge),
            "energy_cost": _s(bill_unmanaged.energy_cost - bill_actual.energy_cost),
            "fixed_charge": _s(bill_unmanaged.fixed_charge - bill_actual.fixed_charge),
            "total": _s(bill_unmanaged.total - bill_actual.total),
        },
        "installation_with_lb": _s(cost_with),
        "installation_without_lb": _s(cost_without),
        "avoided_capital_cost": _s(avoided),
        "daily_peaks_kw": daily,
        "daily_energy_kwh": [[day, _kw(kwh)] for day, kwh in sorted(daily_kwh.items())],
        "demand_cap_kw": None if site.demand_cap_kw is None else _s(site.demand_cap_kw),
        "grid_limit_kw": _kw(site_limit_kw(site)),
    }


SUMMED = (
    ("energy_delivered_kwh",),
    ("energy_not_delivered_kwh",),
    ("actual", "peak_kw"),
    ("unmanaged", "peak_kw"),
    ("actual", "flat_billing_kw"),
    ("unmanaged", "flat_billing_kw"),
    ("actual", "demand_charge"),
    ("unmanaged", "demand_charge"),
    ("actual", "energy_cost"),
    ("unmanaged", "energy_cost"),
    ("actual", "fixed_charge"),
    ("unmanaged", "fixed_charge"),
    ("actual", "bill_total"),
    ("unmanaged", "bill_total"),
    ("savings", "demand_charge"),
    ("savings", "energy_cost"),
    ("savings", "fixed_charge"),
    ("savings", "total"),
    ("avoided_capital_cost",),
)


def report_total(sites: list[dict[str, Any]]) -> dict[str, Any]:
    """The TOTAL section of these site sections (every figure of ``SUMMED`` added up)."""
    total: dict[str, Any] = {
        "sessions": sum(s["sessions"] for s in sites),
        "chargers": sum(s["chargers"] for s in sites),
    }
    for path in SUMMED:
        value = sum((Decimal(_get(s, path)) for s in sites), ZERO)
        node = total
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _s(value)
    return total


def _get(section: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = section
    for part in path:
        node = node[part]
    return node


def _curves(totals: dict[str, dict[datetime, Decimal]], tz_name: str, year: int, month: int) -> dict[str, Any]:
    """Tenant-wide charts: daily peak (kW, all sites together) and the load duration curve.

    Every day of the month is on the daily chart and every interval on the duration curve
    (intervals without load count as 0 kW), so managed and unmanaged are drawn to the same scale.
    """
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(tz_name)
    start, end = month_bounds(year, month, tz)
    slots = int((end - start).total_seconds() // (DEFAULT_INTERVAL_MINUTES * 60))
    hours = Decimal(DEFAULT_INTERVAL_MINUTES) / 60
    days = calendar.monthrange(year, month)[1]
    daily = {date(year, month, d).isoformat(): {"actual": ZERO, "unmanaged": ZERO} for d in range(1, days + 1)}
    curves: dict[str, list[str]] = {}
    for key, series in totals.items():
        kws = []
        for at, kwh in series.items():
            kw = kwh / hours
            kws.append(kw)
            day = at.astimezone(tz).date().isoformat()
            if day in daily:
                daily[day][key] = max(daily[day][key], kw)
        ordered = sorted(kws, reverse=True) + [ZERO] * max(slots - len(kws), 0)
        if len(ordered) > LOAD_DURATION_POINTS:
            step = (len(ordered) - 1) / (LOAD_DURATION_POINTS - 1)
            ordered = [ordered[round(i * step)] for i in range(LOAD_DURATION_POINTS)]
        curves[key] = [_kw(kw) for kw in ordered]
    return {
        "timezone": tz_name,
        "intervals": slots,
        "daily_peak_kw": [[day, _kw(v["actual"]), _kw(v["unmanaged"])] for day, v in sorted(daily.items())],
        "load_duration_kw": curves,
    }


def report_data_build(
    *, tenant_slug: str, tenant_name: str, year: int, month: int, generated_at: datetime
) -> tuple[dict[str, Any], list[MonthDemand]]:
    """Every figure of the report, and the month demands computed on the way (to be stored)."""
    computed: list[MonthDemand] = []
    totals: dict[str, dict[datetime, Decimal]] = {"actual": {}, "unmanaged": {}}
    sites = site_list()
    sections = [_site_section(site, year, month, totals, computed) for site in sites]
    data = {
        "tenant": {"slug": tenant_slug, "name": tenant_name},
        "month": f"{year:04d}-{month:02d}",
        "generated_at": generated_at.isoformat(),
        "currency": "USD",
        "sites": sections,
        "total": report_total(sections),
        "charts": _curves(totals, sites[0].timezone if sites else "UTC", year, month),
        "methodology": METHODOLOGY,
    }
    data["year_to_date"] = _year_to_date(sections, year, month)
    return data, computed


# Per-site figures the summary adds up over the year (paths into a site section).
YEAR_TO_DATE = (
    ("savings_total", ("savings", "total")),
    ("savings_demand_charge", ("savings", "demand_charge")),
    ("savings_energy_cost", ("savings", "energy_cost")),
    ("energy_delivered_kwh", ("energy_delivered_kwh",)),
)


def _year_to_date(sections: list[dict[str, Any]], year: int, month: int) -> dict[str, Any]:
    """This year's figures up to this month, per site and in total.

    The earlier months come from the latest stored version of each (its ``data``, as finance
    received it); a month without a stored report is left out and not counted in ``months``.
    Each site section gets its own ``year_to_date`` so a report narrowed to some sites adds up
    only theirs (``billing.reports.scope``).
    """
    earlier = report_latest_data(months=[date(year, m, 1) for m in range(1, month)])
    months = [*(f"{first:%Y-%m}" for first in sorted(earlier)), f"{year:04d}-{month:02d}"]
    for section in sections:
        sums = {name: Decimal(_get(section, path)) for name, path in YEAR_TO_DATE}
        for first in sorted(earlier):
            before = _matching_section(earlier[first], section)
            if before is not None:
                for name, path in YEAR_TO_DATE:
                    sums[name] += Decimal(_get(before, path))
        section["year_to_date"] = {name: _s(value) for name, value in sums.items()}
    return year_to_date_total(sections, year=year, months=months)


def _matching_section(data: dict[str, Any], section: dict[str, Any]) -> dict[str, Any] | None:
    """The same site's section in an earlier report: by id where both have one, else by slug."""
    for candidate in data.get("sites", []):
        if "site_id" in candidate:
            if candidate["site_id"] == section["site_id"]:
                return candidate
        elif candidate.get("slug") == section["slug"]:
            return candidate
    return None


def year_to_date_total(sections: list[dict[str, Any]], *, year: int, months: list[str]) -> dict[str, Any]:
    """The year-to-date block of a report: the months it covers and its figures over ``sections``."""
    total = {
        name: _s(sum((Decimal(s["year_to_date"][name]) for s in sections if "year_to_date" in s), ZERO))
        for name, _ in YEAR_TO_DATE
    }
    return {"year": year, "months": months, "total": total}
