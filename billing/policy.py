"""Cost-aware balancing, live: the tariff and this month's billing demand feed ``billing.costaware``.

Schema: tenant. Registered as the ``cost_aware`` hook of ``balancing.policy`` (see
``billing.apps``); ``balancing.problem.build_problem`` calls ``cost_aware_decide`` for such
sites after the static limits and the EVSEs are built. It never gets slower as history grows:

- the tariff in force (one indexed lookup; the parsed record is kept per process by version);
- this month's billing demand per demand charge from ``SiteMonthPeak``, one row per site and
  month, folded forward incrementally (``month_peaks``): a run reads the windows that ended
  since the last fold (and the hour before them, for intervals the rollup wrote late), never the
  month. A window's demand is the facility meter's (``SiteMeterReading`` with
  ``includes_chargers``: the mean of its power readings in the window) where it has readings,
  else the site's interval total (``IntervalEnergy`` with no station), as the bill counts it;
- the flat charge's ratchet: the highest ``SiteMonthDemand.actual_kw`` of the 11 months before
  (stored at each month's report), as the savings report bills it.
- what the present demand window has drawn so far (``window_drawn``: the meter's readings or
  the interval totals since the window began, at most 15 minutes of rows), so that the window's
  average, which is what the bill counts, stays at the plan's level.

Without a tariff (or with one that no longer parses) nothing changes: the run's record says
"no tariff: static cap".
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db import IntegrityError, transaction
from django.db.models import Avg, Count, DateTimeField, F, Func, Max, Sum, Value

from balancing.models import Site, SiteMeterReading
from balancing.policy import PolicyDecision, PolicyInput
from billing.costaware import HORIZON, CarNeed, DemandState, Plan, demand_states, plan_charging, tariff_slots
from billing.intervals import DEFAULT_INTERVAL_MINUTES
from billing.models import IntervalEnergy, SiteMonthDemand, SiteMonthPeak, Tariff
from billing.selectors import tariff_in_force, tariff_spec
from billing.tariffs import TariffError, TariffSpec, month_bounds, previous_months, window_demands_kw
from evplatform.services import active_schema

logger = logging.getLogger(__name__)

RATCHET_LOOKBACK_MONTHS = 11
# Intervals the rollup writes after their window was folded still count: each fold re-reads this far back.
LATE_LOOKBACK = timedelta(hours=1)
SPEC_CACHE_SIZE = 256
ZERO = Decimal(0)

_specs: dict[tuple[str, int, str], TariffSpec] = {}


def _spec(tariff: Tariff) -> TariffSpec:
    """The parsed tariff, kept per process by schema, version and checksum (``TariffError`` if unfit)."""
    key = (active_schema(), tariff.pk, tariff.record_sha256)
    spec = _specs.get(key)
    if spec is None:
        spec = tariff_spec(tariff)
        if len(_specs) >= SPEC_CACHE_SIZE:
            _specs.clear()
        _specs[key] = spec
    return spec


def window_floor(now: datetime, tz: ZoneInfo, minutes: int) -> datetime:
    """Start of the demand window (aligned to the local clock) that holds ``now``."""
    local = now.astimezone(tz)
    into = (local.hour * 60 + local.minute) % minutes
    return now - timedelta(minutes=into, seconds=local.second, microseconds=local.microsecond)


def _meter_windows(site: Site, start: datetime, end: datetime, minutes: int) -> dict[datetime, Decimal]:
    """Mean power (kW) of the facility meter's readings per demand window in [start, end).

    Binned in the database (``date_bin`` from ``start``, the local month's first instant), so a
    fold reads one row per window however often the meter reports.
    """
    binned = Func(
        Value(timedelta(minutes=minutes)),
        F("measured_at"),
        Value(start),
        function="date_bin",
        output_field=DateTimeField(),
    )
    rows = (
        SiteMeterReading.objects.filter(
            site=site,
            includes_chargers=True,
            measured_at__gte=start,
            measured_at__lt=end,
            power_kw__isnull=False,
        )
        .annotate(window=binned)
        .values("window")
        .annotate(kw=Avg("power_kw"))
        .values_list("window", "kw")
    )
    return {window.astimezone(UTC): Decimal(kw) for window, kw in rows}


def _interval_windows(
    site: Site, start: datetime, end: datetime, tz: ZoneInfo, minutes: int
) -> dict[datetime, Decimal]:
    """Average kW of each demand window from the site's interval totals in [start, end)."""
    rows = IntervalEnergy.objects.filter(site=site, station__isnull=True, start__gte=start, start__lt=end).values_list(
        "start", "energy_kwh"
    )
    intervals = {at: kwh for at, kwh in rows}
    return window_demands_kw(intervals, tz=tz, window_minutes=minutes, interval_minutes=DEFAULT_INTERVAL_MINUTES)


def window_drawn(*, site: Site, spec: TariffSpec, tz: ZoneInfo, now: datetime, other_kw: float) -> tuple[float, float]:
    """(hours, kWh) the chargers drew in the present demand window before ``now``, as far as known.

    From the facility meter where it reported in the window (the mean of its readings over the
    hours gone), else from the site's interval totals the rollup has written for the window. Less
    ``other_kw`` (the building, as the plan assumes it) over those hours. (0, 0) when nothing is
    known yet. The plan only takes off what was drawn above its level: an interval the rollup has
    not brought up to date makes it take off too little, never plan above the level.
    """
    start = window_floor(now, tz, spec.demand_window_minutes)
    gone_h = (now - start).total_seconds() / 3600
    if gone_h <= 0:
        return 0.0, 0.0
    meter_kw = SiteMeterReading.objects.filter(
        site=site, includes_chargers=True, measured_at__gte=start, measured_at__lt=now, power_kw__isnull=False
    ).aggregate(kw=Avg("power_kw"))["kw"]
    if meter_kw is not None:
        site_kwh = float(meter_kw) * gone_h
    else:
        rolled = IntervalEnergy.objects.filter(
            site=site, station__isnull=True, start__gte=start, start__lt=now
        ).aggregate(kwh=Sum("energy_kwh"), n=Count("id"))
        if not rolled["n"]:
            return 0.0, 0.0
        gone_h = min(gone_h, rolled["n"] * DEFAULT_INTERVAL_MINUTES / 60)
        site_kwh = float(rolled["kwh"])
    return gone_h, max(0.0, site_kwh - other_kw * gone_h)


def _fold(peaks: dict[str, Any], windows: Mapping[datetime, Decimal], spec: TariffSpec, tz: ZoneInfo) -> bool:
    """Fold window demands into ``peaks`` (see ``SiteMonthPeak``); whether anything rose."""
    changed = False
    for start in sorted(windows):
        kw = float(windows[start])
        keys = ["peak"]
        tou = spec.demand_period(start.astimezone(tz))
        if tou is not None:
            keys.append(f"tou:{tou}")
        for key in keys:
            held = peaks.get(key)
            if held is None or kw > held["kw"]:
                peaks[key] = {"kw": round(kw, 4), "at": start.isoformat()}
                changed = True
    return changed


@dataclass(frozen=True)
class MonthPeaks:
    """This month's window peaks so far (kW and when), per ``SiteMonthPeak.peaks`` key."""

    month: date
    peaks: dict[str, Any]
    folded_until: datetime
    read_windows: int  # windows this call read (0: the stored row was enough)


def month_peaks(*, site: Site, tariff: Tariff, spec: TariffSpec, tz: ZoneInfo, now: datetime) -> MonthPeaks:
    """This month's peaks up to the last complete demand window, folded forward from the stored row.

    Reads nothing but the row while no window has ended since the last fold; after one, the
    windows since (and ``LATE_LOOKBACK`` before), at most the month so far on a first fold.
    """
    minutes = spec.demand_window_minutes
    local = now.astimezone(tz)
    month_start, _ = month_bounds(local.year, local.month, tz)
    first = date(local.year, local.month, 1)
    basis = f"tariff {tariff.pk} {tariff.record_sha256[:16]}, {minutes} min"
    until = window_floor(now, tz, minutes)
    row = SiteMonthPeak.objects.filter(site=site, month=first).first()
    if row is not None and row.basis == basis and row.folded_until >= until:
        return MonthPeaks(first, row.peaks, row.folded_until, 0)
    fresh = row is None or row.basis != basis
    since = month_start if fresh or row is None else max(month_start, row.folded_until - LATE_LOOKBACK)
    peaks: dict[str, Any] = {} if fresh or row is None else dict(row.peaks)
    windows = _interval_windows(site, since, until, tz, minutes)
    windows.update(_meter_windows(site, since, until, minutes))
    _fold(peaks, windows, spec, tz)
    if row is None:
        try:
            with transaction.atomic():
                SiteMonthPeak.objects.create(site=site, month=first, basis=basis, folded_until=until, peaks=peaks)
        except IntegrityError:  # another run folded it at the same moment: the next run reads theirs
            pass
    else:
        row.basis, row.folded_until, row.peaks = basis, until, peaks
        row.save(update_fields=["basis", "folded_until", "peaks", "updated_at"])
    return MonthPeaks(first, peaks, until, len(windows))


def ratchet_reference_kw(*, site: Site, spec: TariffSpec, month: date) -> Decimal:
    """Highest stored actual demand of the 11 months before ``month`` (0 without a ratchet)."""
    if not any(spec.ratchet_fractions):
        return ZERO
    months = previous_months(month.year, month.month, RATCHET_LOOKBACK_MONTHS)
    best = SiteMonthDemand.objects.filter(site=site, month__in=months).aggregate(kw=Max("actual_kw"))["kw"]
    return best or ZERO


def month_demand_states(
    spec: TariffSpec, peaks: MonthPeaks, *, ratchet_reference_kw: Decimal
) -> dict[str, DemandState]:
    """``costaware.demand_states`` of the month's peaks so far (``SiteMonthPeak.peaks``)."""

    def peak(held: dict[str, Any]) -> tuple[float, datetime]:
        return float(held["kw"]), datetime.fromisoformat(held["at"])

    flat = peaks.peaks.get("peak")
    return demand_states(
        spec,
        month=peaks.month.month,
        peak=(0.0, None) if flat is None else peak(flat),
        tou={int(key.removeprefix("tou:")): peak(held) for key, held in peaks.peaks.items() if key.startswith("tou:")},
        ratchet_reference_kw=float(ratchet_reference_kw),
    )


def _cars(evses: list[dict[str, Any]], voltage_v: float) -> list[CarNeed]:
    """The cars the plan schedules: a need and a departure, charging, not fixed, not asleep or stuck.

    A sleeping car (``priority``) and one that did not resume after a pause keep charging as the
    engine decides; a charger the engine must book at a fixed current is not ours to plan.
    """
    cars = []
    for evse in evses:
        if (
            evse.get("energy_needed_kwh") is None
            or not evse.get("departure")
            or "fixed_a" in evse
            or not evse.get("active")
            or "priority" in evse
            or evse.get("resumes_after_pause") is False
            or not evse.get("phases")
        ):
            continue
        max_a = min(float(evse["max_a"]), float(evse.get("ev_max_a", evse["max_a"])))
        kw_per_a = len(evse["phases"]) * voltage_v / 1000.0
        cars.append(
            CarNeed(
                str(evse["id"]),
                float(evse["energy_needed_kwh"]),
                datetime.fromisoformat(evse["departure"]),
                max_a * kw_per_a,
                float(evse.get("min_a", 0.0)) * kw_per_a,
            )
        )
    return cars


def _static(site: Site, note: str) -> PolicyDecision:
    cap = None if site.demand_cap_kw is None else float(site.demand_cap_kw)
    return PolicyDecision(
        record={
            "policy": Site.Policy.COST_AWARE.value,
            "effective_cap_kw": cap,
            "source": "demand_cap",
            "reason": note,
            "lifted": False,
        }
    )


def _record(plan: Plan, *, tariff: Tariff, demands: Mapping[str, Any]) -> dict[str, Any]:
    """The run's ``limits["policy"]``: nothing in it moves by itself, so a quiet site's runs still repeat."""
    return {
        "policy": Site.Policy.COST_AWARE.value,
        "tariff": f"{tariff.name} (version {tariff.version})",
        "effective_cap_kw": None if plan.cap.kw is None else round(plan.cap.kw, 3),
        "cap_kw": plan.cap.cap_kw,
        "source": plan.cap.source,
        "reason": plan.cap.reason,
        "lifted": plan.cap.lifted,
        "demands": {
            key: {
                "label": state.label,
                "kw": round(state.peak_kw, 3),
                "at": None if state.peak_at is None else state.peak_at.isoformat(),
                "from_ratchet": state.from_ratchet,
            }
            for key, state in sorted(demands.items())
        },
        "cars": {car_id: {"planned_kw": round(kw, 3)} for car_id, kw in sorted(plan.kw_now.items())},
        "raised_to_kw": dict(sorted(plan.raised_to_kw.items())),
        "unmet_kwh": round(plan.unmet_kwh, 3),
        "notes": list(plan.notes),
    }


def cost_aware_decide(inp: PolicyInput) -> PolicyDecision:
    """The cap in force and the planned cars' power for one balancing run of a cost-aware site."""
    site, now = inp.site, inp.now
    tz = ZoneInfo(site.timezone)
    tariff = tariff_in_force(site=site, on=now.astimezone(tz).date())
    if tariff is None:
        return _static(site, "no tariff: static cap")
    try:
        spec = _spec(tariff)
        peaks = month_peaks(site=site, tariff=tariff, spec=spec, tz=tz, now=now)
    except TariffError as exc:
        return _static(site, f"tariff version {tariff.version} cannot be used ({exc}): static cap")
    ratchet = ratchet_reference_kw(site=site, spec=spec, month=peaks.month)
    demands = month_demand_states(spec, peaks, ratchet_reference_kw=ratchet)
    voltage = float(site.voltage_v)
    cap_kw = None if site.demand_cap_kw is None else float(site.demand_cap_kw)
    grid_kw = float(site.limit_a) * site.phases * voltage / 1000.0
    margin_kw = float(site.peak_margin_kw)
    slots = tariff_slots(spec, tz, now, now + HORIZON)
    plan = plan_charging(
        now=now,
        slots=slots,
        cars=_cars(inp.evses, voltage),
        demands=demands,
        cap_kw=cap_kw,
        grid_kw=grid_kw,
        other_kw=inp.limits.building_kw,
        margin_kw=margin_kw,
        window_drawn=window_drawn(site=site, spec=spec, tz=tz, now=now, other_kw=inp.limits.building_kw),
    )
    decision = PolicyDecision(car_kw=dict(plan.kw_now), record=_record(plan, tariff=tariff, demands=demands))
    if plan.cap.lifted and plan.cap.kw is not None:
        decision.cap_kw, decision.cap_source, decision.cap_reason = plan.cap.kw, plan.cap.source, plan.cap.reason
    return decision
