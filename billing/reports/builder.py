"""The figures of one tenant's monthly savings report, from rollups and sessions. Schema: tenant.

Reads only (the caller stores what it returns). Every amount stays at full precision here and
is written as a string; the renderers round to the cent with ROUND_HALF_UP.

Three balancing policies are compared per site: unmanaged (the counterfactual), static cap and
cost-aware. The policy the site ran that month is its metered load; the other one is simulated
from the month's sessions (``_simulate_policy``), so a site is never billed twice from the meter.
"""

import calendar
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from balancing.meter import site_limit_kw
from balancing.models import Site
from billing import whatif
from billing.counterfactual import acceptance_rate, scaled_to, unmanaged_intervals
from billing.intervals import DEFAULT_INTERVAL_MINUTES, ZERO, interval_floor
from billing.models import InstallationCostModel, SiteMonthDemand
from billing.reports.rows import POLICY_COLUMNS, RAN, SIMULATED, money, value_at
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
from billing.simulation_checkpoints import checkpoint_save, checkpoint_state, replay_settings
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
from billing.whatif import PlannedSession, managed_profile, unmanaged_profile

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
    "Policies compared: unmanaged (above), static cap (the balancing engine sharing the site's demand cap "
    "among the cars) and cost-aware (the same engine under the cap the cost-aware policy sets from the tariff "
    "and the month's billing demand, cars with a known need and departure moved to cheaper hours). The policy "
    "the site ran that month is its metered load; the other is " + SIMULATED + " (each car's arrival, "
    "departure, energy and acceptance rate as above, in 15-minute steps, at the site's voltage and phases, "
    "under its demand cap, or its grid connection where it has none), scaled like the unmanaged load to the "
    "metered kWh. A site without a demand cap has nothing to cap: its static cap column is the unmanaged load "
    "unless the site ran the static cap. Energy a simulated policy would not have delivered is priced out of "
    "its savings at the unmanaged average energy price; its ratchet compares with the metered demand of the "
    "months before.",
    "Building load behind the same meter is not included: the bill estimate covers EV charging.",
]
SIMULATION_STEP_MINUTES = DEFAULT_INTERVAL_MINUTES  # the interval the bill is computed on


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


@dataclass
class MonthProfiles:
    """A site's local month [start, end): interval kWh (UTC start -> kWh) and what made them."""

    start: datetime
    end: datetime
    actual: dict[datetime, Decimal]  # metered
    unmanaged: dict[datetime, Decimal]  # counterfactual, holding the metered kWh
    sources: Counter[str]
    sessions: list[SessionFacts]
    resets: int
    scale: Decimal | None  # metered kWh per kWh the sessions put in the month; None: they put none

    def in_month(self, intervals: dict[datetime, Decimal]) -> dict[datetime, Decimal]:
        """A profile of the sessions cut to the month and scaled like the unmanaged load (the
        metered load itself where the sessions hold no energy in the month)."""
        if self.scale is None:
            return dict(self.actual)
        inside = {at: kwh for at, kwh in intervals.items() if self.start <= at < self.end}
        return inside if self.scale == 1 else {at: kwh * self.scale for at, kwh in inside.items()}


def month_profiles(site: Site, year: int, month: int) -> MonthProfiles:
    """Actual and unmanaged interval kWh of the site's local month, rate sources, sessions, resets."""
    tz = site_timezone(site)
    start, end = month_bounds(year, month, tz)
    actual, resets = site_intervals_and_resets(site=site, start=start, end=end)
    sessions = site_sessions(site=site, start=start, end=end)
    raw, sources = unmanaged_intervals([facts.load for facts in sessions], minutes=DEFAULT_INTERVAL_MINUTES)
    inside = {k: v for k, v in raw.items() if start <= k < end}
    session_kwh, metered = sum(inside.values(), ZERO), sum(actual.values(), ZERO)
    scale = metered / session_kwh if session_kwh > 0 else None
    unmanaged = scaled_to(inside, metered) if scale is not None else dict(actual)
    return MonthProfiles(start, end, actual, unmanaged, sources, sessions, resets, scale)


def planned_sessions(sessions: list[SessionFacts], *, until: datetime) -> list[PlannedSession]:
    """The sessions as the what-if replays them: each car at its acceptance rate (kW, as the
    unmanaged load takes it) with the energy it got (kWh), from plug-in to unplug.

    A session still open at ``until`` (the month's end) leaves then; no car leaves before it
    could have had its energy at its own rate, so without a cap every car gets all it got.
    Sessions without energy or rate are left out, as the unmanaged load leaves them out.
    """
    planned = []
    for row, facts in enumerate(sessions):
        load = facts.load
        rate_kw = acceptance_rate(load).rate_kw if load.energy_kwh > 0 else ZERO
        if rate_kw <= 0:
            continue
        at_full_rate = load.started_at + timedelta(hours=float(load.energy_kwh / rate_kw))
        planned.append(
            PlannedSession(
                row=row,
                station_id=str(facts.station_id if facts.station_id is not None else load.session_id),
                arrival=load.started_at,
                departure=max(load.stopped_at or until, at_full_rate),
                energy_kwh=float(load.energy_kwh),
                max_kw=float(rate_kw),
            )
        )
    return planned


def _overlapping(sessions: list[PlannedSession], step_minutes: int) -> list[list[PlannedSession]]:
    """The sessions in groups that share no simulation step (by arrival)."""
    groups: list[list[PlannedSession]] = []
    until = None
    for session in sorted(sessions, key=lambda s: (s.arrival, s.row)):
        if until is None or interval_floor(session.arrival, step_minutes) > interval_floor(until, step_minutes):
            groups.append([])
            until = session.departure
        groups[-1].append(session)
        until = max(until, session.departure)
    return groups


def _cap_binds(sessions: list[PlannedSession], limit_kw: float, step_minutes: int) -> bool:
    """Whether the cars, each at its own rate (kW) from arrival until it has its energy, would
    together ask more than ``limit_kw`` in some step (a car counts in every step it charges in,
    as the engine books it)."""
    step = timedelta(minutes=step_minutes)
    asked_kw: dict[datetime, float] = {}
    for session in sessions:
        charged = min(session.departure, session.arrival + timedelta(hours=session.energy_kwh / session.max_kw))
        at = interval_floor(session.arrival, step_minutes)
        while at < charged:
            asked_kw[at] = asked_kw.get(at, 0.0) + session.max_kw
            at += step
    return max(asked_kw.values(), default=0.0) > limit_kw


def static_cap_profile(
    sessions: list[PlannedSession], *, limit_kw: float, voltage_v: float, phases: int, step_minutes: int
) -> dict[datetime, Decimal]:
    """Interval kWh of the sessions with the balancing engine sharing ``limit_kw`` (kW) among them.

    The engine runs only for the groups of sessions whose cars, all at their own rate, would
    ever draw more than the limit together: the others draw as they would unmanaged, which is
    what the engine would give them, at a fraction of the cost (a month of a busy site is
    thousands of solves).
    """
    out: dict[datetime, Decimal] = {}
    for group in _overlapping(sessions, step_minutes):
        if not _cap_binds(group, limit_kw, step_minutes):
            profile = unmanaged_profile(group, step_minutes)[0]
        else:
            profile = managed_profile(
                group, limit_kw=limit_kw, voltage_v=voltage_v, phases=phases, step_minutes=step_minutes
            )[0]
        for at, kwh in profile.items():
            out[at] = out.get(at, ZERO) + kwh
    return out


def _limits_kw(site: Site) -> tuple[float, float]:
    """The site's demand cap (its grid connection where it has none) and grid connection, kW."""
    grid_kw = float(site_limit_kw(site))
    return (grid_kw if site.demand_cap_kw is None else min(float(site.demand_cap_kw), grid_kw)), grid_kw


def cost_aware_run(
    sessions: list[PlannedSession],
    site: Site,
    spec: TariffSpec,
    tz: ZoneInfo,
    *,
    month: date,
    checkpoint_at: datetime | None = None,
) -> whatif.CostAwareRun:
    """``sessions`` replayed under the cost-aware policy at this site, from the site's stored
    checkpoint of ``month`` where its inputs are unchanged (``billing.simulation_checkpoints``),
    else from the month's start. ``checkpoint_at``: stop there and store the state as the
    site's checkpoint of the month instead."""
    cap_kw, grid_kw = _limits_kw(site)
    settings: dict[str, Any] = {
        "cap_kw": cap_kw,
        "grid_kw": grid_kw,
        "margin_kw": float(site.peak_margin_kw),
        "voltage_v": float(site.voltage_v),
        "phases": site.phases,
        "step_minutes": SIMULATION_STEP_MINUTES,
    }
    digest = replay_settings(spec, tz=str(tz), **settings)
    resume = checkpoint_state(site, month=month, policy="cost_aware", sessions=sessions, settings=digest)
    if resume is not None and checkpoint_at is not None and datetime.fromisoformat(resume["at"]) > checkpoint_at:
        resume = None  # an earlier state is asked for than the one stored
    run = whatif.cost_aware_profile(sessions, spec=spec, tz=tz, stop_at=checkpoint_at, resume=resume, **settings)
    if checkpoint_at is not None and run.state is not None:
        checkpoint_save(site, month=month, policy="cost_aware", state=run.state, sessions=sessions, settings=digest)
    return run


def _simulate_policy(
    policy: str, sessions: list[PlannedSession], site: Site, spec: TariffSpec, tz: ZoneInfo, month: date
) -> dict[datetime, Decimal] | None:
    """Interval kWh (UTC start of each 15 minutes) of ``sessions`` under ``policy`` (``static_cap``
    or ``cost_aware``) at this site: its demand cap in kW (its grid connection where it has none),
    voltage and phases, and for cost-aware its tariff. None: the policy cannot be simulated here."""
    if not sessions:
        return {}
    if policy == "static_cap":
        return static_cap_profile(
            sessions,
            limit_kw=_limits_kw(site)[0],
            voltage_v=float(site.voltage_v),
            phases=site.phases,
            step_minutes=SIMULATION_STEP_MINUTES,
        )
    return cost_aware_run(sessions, site, spec, tz, month=month).intervals


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
            profiles = month_profiles(site, first.year, first.month)
            if not profiles.actual and not profiles.unmanaged:
                continue
            actual_kw, unmanaged_kw = _peak(profiles.actual, site, spec), _peak(profiles.unmanaged, site, spec)
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
    profiles: dict[str, dict[datetime, Decimal]],
    computed: list[MonthDemand],
) -> dict[str, MonthBill]:
    """The month's bill of each profile (``actual``, ``unmanaged`` and any simulated policy);
    ``ArithmeticError`` if one cannot be shown to the cent.

    A simulated policy's ratchet compares with the metered demand of the months before: its own
    earlier demand was never metered nor kept.
    """
    ref_actual, ref_unmanaged = _ratchet_references(site, spec, year, month, computed)
    kwargs: dict[str, Any] = {
        "tz": site_timezone(site),
        "year": year,
        "month": month,
        "interval_minutes": DEFAULT_INTERVAL_MINUTES,
    }
    bills = {
        key: bill_month(
            spec, series, ratchet_reference_kw=ref_unmanaged if key == "unmanaged" else ref_actual, **kwargs
        )
        for key, series in profiles.items()
    }
    for bill in bills.values():
        shown = [bill.energy_cost, bill.flat_demand_charge, bill.demand_charge, bill.fixed_charge, bill.total]
        for amount in [*shown, *bill.tou_demand_charge.values(), *bill.energy_cost_by_period.values()]:
            money(amount)
        money(bills["unmanaged"].total - bill.total)
    return bills


def _savings(unmanaged: MonthBill, policy: MonthBill, short_kwh: Decimal = ZERO) -> dict[str, str]:
    """What ``policy`` saves on the unmanaged bill ($); ``short_kwh``, energy it would not have
    delivered, is taken off at the unmanaged average price (no saving from energy not delivered)."""
    price = unmanaged.energy_cost / unmanaged.energy_kwh if unmanaged.energy_kwh > 0 else ZERO
    short_value = short_kwh * price
    return {
        "demand_charge": _s(unmanaged.demand_charge - policy.demand_charge),
        "energy_cost": _s(unmanaged.energy_cost - policy.energy_cost - short_value),
        "fixed_charge": _s(unmanaged.fixed_charge - policy.fixed_charge),
        "total": _s(unmanaged.total - policy.total - short_value),
    }


def _policy_profiles(
    site: Site, spec: TariffSpec, profiles: MonthProfiles, ran: str
) -> dict[str, tuple[str, dict[datetime, Decimal] | None]]:
    """Each policy column's basis and, where simulated, its interval kWh in the month.

    Bases: ``metered`` (the policy the site ran), ``simulated``, ``no_cap`` (the static cap of a
    site without a demand cap: the unmanaged load) and ``unavailable`` (not simulated here).
    """
    tz = site_timezone(site)
    planned: list[PlannedSession] | None = None
    columns: dict[str, tuple[str, dict[datetime, Decimal] | None]] = {}
    for column in POLICY_COLUMNS:
        if column == RAN[ran]:
            columns[column] = ("metered", None)
        elif column == "static_cap" and site.demand_cap_kw is None:
            columns[column] = ("no_cap", None)
        else:
            if planned is None:
                planned = planned_sessions(profiles.sessions, until=profiles.end)
            month = profiles.start.astimezone(tz).date()
            simulated = _simulate_policy(column, planned, site, spec, tz, month)
            columns[column] = (
                ("unavailable", None) if simulated is None else ("simulated", profiles.in_month(simulated))
            )
    return columns


def site_policy(site: Site) -> str:
    """The balancing policy the site runs, ``static`` or ``cost_aware`` (sites without the setting
    ran the static cap, the only policy there was)."""
    policy = site.balancing_policy
    return policy if policy in RAN else "static"


def _policy_note(column: str, basis: str, site: Site) -> str:
    cap_kw = site.demand_cap_kw
    cap = "no demand cap (the grid limit)" if cap_kw is None else f"its {_s(cap_kw.normalize())} kW demand cap"
    if basis == "metered":
        return "metered: the policy the site ran"
    if basis == "no_cap":
        return "no demand cap: the static cap column is the unmanaged load"
    if basis == "unavailable":
        return "not simulated: the cost-aware simulation is not available in this version"
    with_tariff = " with the site's tariff" if column == "cost_aware" else ""
    return f"{SIMULATED}{with_tariff}, under {cap}"


def _policy_blocks(
    site: Site,
    columns: dict[str, tuple[str, dict[datetime, Decimal] | None]],
    bills: dict[str, MonthBill],
    savings: dict[str, str],
) -> dict[str, dict[str, Any]]:
    """The ``static_cap`` and ``cost_aware`` sections: bill components, kWh short of the
    unmanaged load and the savings on it, with the basis they rest on."""
    blocks: dict[str, dict[str, Any]] = {}
    unmanaged = bills["unmanaged"]
    for column, (basis, _) in columns.items():
        block: dict[str, Any] = {"basis": basis, "note": _policy_note(column, basis, site)}
        if basis == "metered":
            block |= {**_components(bills["actual"]), "energy_short_kwh": "0", "savings": dict(savings)}
        elif basis == "no_cap":
            block |= {**_components(unmanaged), "energy_short_kwh": "0", "savings": _savings(unmanaged, unmanaged)}
        elif basis == "simulated":
            bill = bills[column]
            short_kwh = max(unmanaged.energy_kwh - bill.energy_kwh, ZERO)
            block |= {
                **_components(bill),
                "energy_short_kwh": _s(short_kwh),
                "savings": _savings(unmanaged, bill, short_kwh),
            }
        blocks[column] = block
    return blocks


def _site_section(
    site: Site, year: int, month: int, totals: dict[str, dict[datetime, Decimal]], computed: list[MonthDemand]
) -> dict[str, Any]:
    tz = site_timezone(site)
    start, end = month_bounds(year, month, tz)
    tariff = tariff_in_force(site=site, on=date(year, month, 1))
    profiles = month_profiles(site, year, month)
    actual, unmanaged, sessions = profiles.actual, profiles.unmanaged, profiles.sessions
    ran = site_policy(site)
    problem = None
    try:
        spec = tariff_spec(tariff) if tariff is not None else NO_TARIFF
    except TariffError as exc:
        spec, problem = NO_TARIFF, f"not billed: {exc}"
    columns = _policy_profiles(site, spec, profiles, ran)
    series = {"actual": actual, "unmanaged": unmanaged}
    series |= {column: simulated for column, (_, simulated) in columns.items() if simulated is not None}
    mark = len(computed)
    try:
        bills = _bills(site, spec, year, month, series, computed)
    except (TariffError, ArithmeticError) as exc:
        problem = f"not billed: {exc}" if isinstance(exc, TariffError) else "not billed: amounts too large to show"
        spec = NO_TARIFF
        del computed[mark:]
        bills = _bills(site, spec, year, month, series, computed)
    if problem:
        # A version stored before today's checks: the site is billed without it, and says so.
        logger.warning("site %s, %04d-%02d: tariff %s %s", site.slug, year, month, tariff and tariff.pk, problem)
    bill_actual, bill_unmanaged = bills["actual"], bills["unmanaged"]
    computed.append(MonthDemand(site.pk, date(year, month, 1), bill_actual.peak_kw, bill_unmanaged.peak_kw))
    for key, profile in (("actual", actual), ("unmanaged", unmanaged)):
        for at, kwh in profile.items():
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
    savings = {
        "demand_charge": _s(bill_unmanaged.demand_charge - bill_actual.demand_charge),
        "energy_cost": _s(bill_unmanaged.energy_cost - bill_actual.energy_cost),
        "fixed_charge": _s(bill_unmanaged.fixed_charge - bill_actual.fixed_charge),
        "total": _s(bill_unmanaged.total - bill_actual.total),
    }
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
        "register_resets": profiles.resets,
        "rate_sources": dict(sorted(profiles.sources.items())),
        "chargers": chargers,
        "policy": ran,
        "actual": _components(bill_actual),
        "unmanaged": _components(bill_unmanaged),
        "savings": savings,
        **_policy_blocks(site, columns, bills, savings),
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
    ("unmanaged", "energy_kwh"),
    *(
        (column, *figure)
        for column in POLICY_COLUMNS
        for figure in (
            ("peak_kw",),
            ("flat_billing_kw",),
            ("demand_charge",),
            ("energy_cost",),
            ("fixed_charge",),
            ("energy_kwh",),
            ("bill_total",),
            ("energy_short_kwh",),
            ("savings", "demand_charge"),
            ("savings", "energy_cost"),
            ("savings", "fixed_charge"),
            ("savings", "total"),
        )
    ),
)


def report_total(sites: list[dict[str, Any]]) -> dict[str, Any]:
    """The TOTAL section of these site sections (every figure of ``SUMMED`` added up).

    A figure some site lacks (a policy not simulated there, a report stored before the policies
    were compared) has no total: a sum over some of the sites would read as one over all of them.
    Each policy column's ``basis`` counts the sites by what its figures rest on.
    """
    total: dict[str, Any] = {
        "sessions": sum(s["sessions"] for s in sites),
        "chargers": sum(s["chargers"] for s in sites),
    }
    for path in SUMMED:
        values = [value_at(s, path) for s in sites]
        if any(value is None for value in values):
            continue
        node = total
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _s(sum((Decimal(value) for value in values), ZERO))
    for column in POLICY_COLUMNS:
        bases = Counter(s[column]["basis"] for s in sites if column in s)
        if bases:
            total.setdefault(column, {})["basis"] = dict(sorted(bases.items()))
    ran = Counter(s["policy"] for s in sites if "policy" in s)
    if ran:
        total["policy"] = dict(sorted(ran.items()))
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


# Per-site figures the summary adds up over the year: name -> paths into a site section, the
# first one found counting. A report stored before the policies were compared metered the static
# cap (the only policy there was), so its actual bill stands for the static cap.
YEAR_TO_DATE: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("savings_total", (("savings", "total"),)),
    ("savings_demand_charge", (("savings", "demand_charge"),)),
    ("savings_energy_cost", (("savings", "energy_cost"),)),
    ("energy_delivered_kwh", (("energy_delivered_kwh",),)),
    ("bill_unmanaged", (("unmanaged", "bill_total"),)),
    ("bill_static_cap", (("static_cap", "bill_total"), ("actual", "bill_total"))),
    ("savings_static_cap", (("static_cap", "savings", "total"), ("savings", "total"))),
    ("bill_cost_aware", (("cost_aware", "bill_total"),)),
    ("savings_cost_aware", (("cost_aware", "savings", "total"),)),
)


# Figures every report's year to date has (a report narrowed to no site shows them as 0).
YEAR_TO_DATE_ALWAYS = ("savings_total", "savings_demand_charge", "savings_energy_cost", "energy_delivered_kwh")


def _year_to_date_figure(section: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> Decimal | None:
    for path in paths:
        value = value_at(section, path)
        if value is not None:
            return Decimal(value)
    return None


def _year_to_date(sections: list[dict[str, Any]], year: int, month: int) -> dict[str, Any]:
    """This year's figures up to this month, per site and in total.

    The earlier months come from the latest stored version of each (its ``data``, as finance
    received it); a month without a stored report is left out and not counted in ``months``.
    Each site section gets its own ``year_to_date`` so a report narrowed to some sites adds up
    only theirs (``billing.reports.scope``). A figure missing in some of the site's months (the
    cost-aware policy before it was compared) adds up the months that have it, and
    ``year_to_date_partial`` names them.
    """
    earlier = report_latest_data(months=[date(year, m, 1) for m in range(1, month)])
    this_month = f"{year:04d}-{month:02d}"
    months = [*(f"{first:%Y-%m}" for first in sorted(earlier)), this_month]
    for section in sections:
        found: list[tuple[str, dict[str, Any]]] = [(this_month, section)]
        for first in sorted(earlier):
            before = _matching_section(earlier[first], section)
            if before is not None:
                found.insert(-1, (f"{first:%Y-%m}", before))
        sums: dict[str, Decimal] = {}
        covered: dict[str, list[str]] = {}
        for label, source in found:
            for name, paths in YEAR_TO_DATE:
                value = _year_to_date_figure(source, paths)
                if value is not None:
                    sums[name] = sums.get(name, ZERO) + value
                    covered.setdefault(name, []).append(label)
        section["year_to_date"] = {name: _s(value) for name, value in sums.items()}
        partial = {name: labels for name, labels in covered.items() if len(labels) < len(found)}
        if partial:
            section["year_to_date_partial"] = partial
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
    """The year-to-date block of a report: the months it covers and its figures over ``sections``.

    A figure no section has is left out; ``partial`` names the months a figure covers where some
    section has it for only some of its months (the union over the sections).
    """
    total = {}
    for name, _ in YEAR_TO_DATE:
        values = [s["year_to_date"][name] for s in sections if name in s.get("year_to_date", {})]
        if values or name in YEAR_TO_DATE_ALWAYS:
            total[name] = _s(sum((Decimal(value) for value in values), ZERO))
    block: dict[str, Any] = {"year": year, "months": months, "total": total}
    partial: dict[str, set[str]] = {}
    for section in sections:
        for name, labels in section.get("year_to_date_partial", {}).items():
            partial.setdefault(name, set()).update(labels)
    if partial:
        block["partial"] = {name: sorted(labels) for name, labels in sorted(partial.items())}
    return block
