"""Cost-aware balancing policy: turn the tariff and this month's billing state into limits.

Pure (no Django, no I/O). The balancing engine stays a fair-share solver over limits; this
module decides the limits and preferences that make its answer cheap on the bill:

- **Effective cap.** Once a demand window has set a billing demand this month, charging up to
  that level again adds nothing to the demand charge. So the cap in force is the larger of the
  site's configured cap and the lowest billing demand already set among the demand charges whose
  window covers now (less a safety margin), never above the grid connection. A billing demand
  below the cap never lifts it: the larger of the two is the cap.
  ``effective_cap`` gives that number and the sentence that says why.
- **Plan.** Cars that told us their energy need and departure are scheduled over the coming
  hours (``plan_charging``): first the lowest site level that still finishes every car (raising
  a demand window above what it already set only when the cars cannot finish otherwise, the
  cheapest window first), then, under those levels, the energy goes to the cheapest hours
  (time-of-use). Only the present slot's decision is used: each balancing run plans again
  (receding horizon), so a car that arrives, leaves early or draws less corrects the plan at the
  next run. Cars without a need and departure are not planned: they share what the cap leaves,
  as before.

Units: kW and kWh; times are timezone-aware instants. A *slot* is one demand window of the
tariff (15 min by default) on the local clock; the first slot starts now and ends at the next
window boundary.

The plan treats the cars together (the site level per slot) and checks each group of cars that
leave by the same time against the capacity before their departure with their own maximum
rates; the present slot's energy then goes first to what each car cannot get later, then least
laxity first. The first tier of each energy period is its price (tiers that count a month's
kWh are not modelled in the plan; the bill still prices them).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from billing.tariffs import TariffSpec

HORIZON = timedelta(hours=36)  # cars staying longer are planned as if they left then
LEVEL_TOLERANCE_KW = 0.01
EPS = 1e-9


@dataclass(frozen=True)
class DemandState:
    """One demand charge of the tariff and the billing demand it has already set this month."""

    key: str  # "flat" (the facility demand, all hours) or "tou:<period>"
    label: str
    price_per_kw: float  # $/kW of billing demand (the first tier)
    peak_kw: float  # billing demand already set this billing period (flat: ratchet included)
    peak_at: datetime | None = None
    from_ratchet: bool = False


@dataclass(frozen=True)
class Slot:
    """One demand window of the horizon: its energy price and the demand charges covering it."""

    start: datetime
    end: datetime
    price_kwh: float
    demand_keys: tuple[str, ...]

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600


@dataclass(frozen=True)
class CarNeed:
    """A car that told its need: ``energy_kwh`` still to deliver before ``departure``."""

    id: str
    energy_kwh: float
    departure: datetime
    max_kw: float
    min_kw: float = 0.0  # the charger's lowest power: below it the car can only wait


@dataclass(frozen=True)
class CapDecision:
    """The cap in force now (whole site, building included) and why."""

    kw: float | None  # None: no kW cap (only the grid's current limit)
    cap_kw: float | None  # the site's configured cap
    lifted: bool  # a billing demand above the cap set it
    source: str  # "demand_cap" or "month_peak:<key>"
    reason: str


@dataclass
class Plan:
    """What the policy asks of the present slot, and the levels it planned to get there."""

    kw_now: dict[str, float]  # per planned car: power for now (0: waits for cheaper hours)
    cap: CapDecision
    levels_kw: list[float] = field(default_factory=list)  # chargers' planned level per slot
    slots: list[Slot] = field(default_factory=list)
    raised_to_kw: dict[str, float] = field(default_factory=dict)  # demand key -> new billing demand
    unmet_kwh: float = 0.0  # energy the cars cannot get before they leave, even at every cap
    notes: list[str] = field(default_factory=list)


def _fmt(kw: float) -> str:
    return f"{kw:.1f}".removesuffix(".0")


def _first_price(tiers: Sequence[object]) -> float:
    return float(tiers[0].price) if tiers else 0.0  # type: ignore[attr-defined]


Peak = tuple[float, datetime | None]  # kW of a demand window and when it began (None: not known)


def demand_states(
    spec: TariffSpec,
    *,
    month: int,
    peak: Peak,
    tou: Mapping[int, Peak],
    ratchet_reference_kw: float = 0.0,
) -> dict[str, DemandState]:
    """The tariff's demand charges with the billing demand each has already set this month.

    ``peak``: the month's highest demand window so far (all hours); ``tou``: per time-of-use
    demand period, its highest window so far; ``ratchet_reference_kw``: the highest flat demand
    of the 11 months before, of which the tariff's ratchet share is the flat charge's floor.
    """
    out: dict[str, DemandState] = {}
    if spec.flat_demand_periods:
        price = _first_price(spec.flat_demand_periods[spec.flat_demand_months[month - 1]])
        if price > 0:
            ratchet_kw = float(spec.ratchet_fractions[month - 1]) * ratchet_reference_kw
            by_ratchet = ratchet_kw > peak[0]
            out["flat"] = DemandState(
                "flat",
                "facility demand",
                price,
                ratchet_kw if by_ratchet else peak[0],
                None if by_ratchet else peak[1],
                from_ratchet=by_ratchet,
            )
    for period, tiers in enumerate(spec.demand_periods):
        price = _first_price(tiers)
        if price <= 0:
            continue
        key = f"tou:{period}"
        kw, at = tou.get(period, (0.0, None))
        out[key] = DemandState(key, f"time-of-use demand, period {period}", price, kw, at)
    return out


SlotFacts = tuple[float, tuple[str, ...]]


def tariff_slots(
    spec: TariffSpec,
    tz: ZoneInfo,
    start: datetime,
    end: datetime,
    *,
    memo: dict[datetime, SlotFacts] | None = None,
) -> list[Slot]:
    """The slots from ``start`` to ``end``: the first ends at the next demand window boundary.

    ``memo``: a dict the caller keeps for one tariff and zone (a replay asks for the same windows
    step after step); each window's price and demand keys are looked up once.
    """
    minutes = spec.demand_window_minutes
    window = timedelta(minutes=minutes)
    slots: list[Slot] = []
    local = start.astimezone(tz)
    into = (local.hour * 60 + local.minute) % minutes * 60 + local.second + local.microsecond / 1e6
    window_start = start - timedelta(seconds=into)
    moment = start
    while moment < end:
        facts = memo.get(window_start) if memo is not None else None
        if facts is None:
            facts = _slot_facts(spec, window_start.astimezone(tz))
            if memo is not None:
                memo[window_start] = facts
        slot_end = min(window_start + window, end)
        slots.append(Slot(moment, slot_end, facts[0], facts[1]))
        moment = window_start = window_start + window
    return slots


def _slot_facts(spec: TariffSpec, local: datetime) -> SlotFacts:
    """Energy price and demand keys of the window starting at ``local``."""
    keys: list[str] = []
    if spec.flat_demand_periods:
        flat_period = spec.flat_demand_months[local.month - 1]
        if _first_price(spec.flat_demand_periods[flat_period]) > 0:
            keys.append("flat")
    tou = spec.demand_period(local)
    if tou is not None and _first_price(spec.demand_periods[tou]) > 0:
        keys.append(f"tou:{tou}")
    return _first_price(spec.energy_periods[spec.energy_period(local)]), tuple(keys)


def _free_kw(keys: Sequence[str], demands: Mapping[str, DemandState]) -> float:
    """Site level that raises none of these demand charges (inf when none covers the time)."""
    return min((demands[k].peak_kw for k in keys if k in demands), default=math.inf)


def effective_cap(
    *,
    cap_kw: float | None,
    grid_kw: float | None,
    keys_now: Sequence[str],
    demands: Mapping[str, DemandState],
    margin_kw: float,
) -> CapDecision:
    """The cap in force now: max(cap, billing demand already set in the windows of now - margin).

    Never above ``grid_kw`` (the connection's limit in kW, when known). With no cap configured
    there is nothing to lift: only the grid limits.
    """
    if cap_kw is None:
        return CapDecision(None, None, False, "grid", "no demand cap set")
    covering = [demands[k] for k in keys_now if k in demands]
    lowest = min(covering, key=lambda d: (d.peak_kw, d.key), default=None)
    kw = cap_kw
    source = "demand_cap"
    reason = f"the site's demand cap {_fmt(cap_kw)} kW"
    lifted = False
    if lowest is not None:
        free = lowest.peak_kw - margin_kw
        what = "ratchet" if lowest.from_ratchet else "peak"
        when = f", set {lowest.peak_at:%Y-%m-%d %H:%M} UTC" if lowest.peak_at is not None and what == "peak" else ""
        if free > cap_kw:
            kw, lifted, source = free, True, f"month_peak:{lowest.key}"
            reason = (
                f"this month's {lowest.label} {what} {_fmt(lowest.peak_kw)} kW{when}, less a "
                f"{_fmt(margin_kw)} kW margin, is above the {_fmt(cap_kw)} kW cap: charging up to it adds no "
                "demand charge"
            )
        else:
            reason += f" (this month's {lowest.label} {what} is {_fmt(lowest.peak_kw)} kW, not above it)"
    if grid_kw is not None and kw > grid_kw:
        kw = grid_kw
        reason += f"; held to the grid connection's {_fmt(grid_kw)} kW"
    return CapDecision(kw, cap_kw, lifted, source, reason)


def _car_energy_caps(cars: Sequence[CarNeed], slots: Sequence[Slot]) -> list[list[float]]:
    """kWh each car can take in each slot at its maximum rate while it is there."""
    hours = [slot.hours for slot in slots]
    starts = [slot.start for slot in slots]
    out = []
    for car in cars:
        # Whole slots before the one the car leaves in, then the part of that one, then nothing.
        last = bisect.bisect_left(starts, car.departure)  # slots starting before the departure
        row = [car.max_kw * h for h in hours[:last]] + [0.0] * (len(slots) - last)
        if last and slots[last - 1].end > car.departure:
            row[last - 1] = car.max_kw * (car.departure - slots[last - 1].start).total_seconds() / 3600
        out.append(row)
    return out


def _shortfall(caps: Sequence[float], prefix_rates: Sequence[Sequence[float]], prefix_need: Sequence[float]) -> float:
    """Largest energy a group of cars leaving by the same time cannot get before it leaves."""
    worst = 0.0
    for rates, need in zip(prefix_rates, prefix_need, strict=True):
        got = 0.0
        for cap, rate in zip(caps, rates, strict=True):
            got += cap if cap < rate else rate
        if need - got > worst:
            worst = need - got
    return worst


def _slot_caps(levels: Sequence[float], hours: Sequence[float], drawn: tuple[float, float] = (0.0, 0.0)) -> list[float]:
    """kWh each slot may take at its level; the present one less what its window drew above it.

    ``drawn``: (hours of the present demand window already gone, kWh the chargers drew in them).
    Energy drawn above the level earlier in the window is taken off the present slot; energy not
    drawn earlier is not added to it (the chargers never go above the level to catch up).
    """
    caps = [(level if level > 0.0 else 0.0) * h for level, h in zip(levels, hours, strict=True)]
    if caps and drawn[0] > 0.0:
        level = levels[0] if levels[0] > 0.0 else 0.0
        caps[0] = max(0.0, min(caps[0], level * (hours[0] + drawn[0]) - drawn[1]))
    return caps


def plan_charging(
    *,
    now: datetime,
    slots: Sequence[Slot],
    cars: Sequence[CarNeed],
    demands: Mapping[str, DemandState],
    cap_kw: float | None,
    grid_kw: float | None,
    other_kw: float = 0.0,
    margin_kw: float = 0.0,
    window_drawn: tuple[float, float] = (0.0, 0.0),
) -> Plan:
    """Plan the cars with needs over ``slots`` (the first starting at ``now``).

    ``other_kw``: load on the same meter that the plan does not control (the building, the cars
    without a need), assumed to stay as it is now. ``window_drawn``: (hours of the present demand
    window already gone, kWh the chargers drew in them); what they drew above the level earlier
    in the window is taken off the present slot, so the window's average (what the bill counts)
    stays at the level. (0, 0) when not known: the present slot alone is held to the level.
    Returns each car's power for the present slot, 0 or at least the car's ``min_kw``; the caller
    caps the car there (a car at 0 waits).
    """
    keys_now = slots[0].demand_keys if slots else ()
    cap = effective_cap(cap_kw=cap_kw, grid_kw=grid_kw, keys_now=keys_now, demands=demands, margin_kw=margin_kw)
    wanting = (c for c in cars if c.energy_kwh > EPS and c.departure > now and c.max_kw > 0)
    planned = sorted(wanting, key=lambda c: (c.departure, c.id))
    plan = Plan({c.id: 0.0 for c in cars}, cap, slots=list(slots))
    if not planned or not slots:
        return plan
    horizon_end = slots[-1].end
    planned = [replace(c, departure=horizon_end) if c.departure > horizon_end else c for c in planned]
    used = [s for s in slots if s.start < planned[-1].departure]
    used_hours = [s.hours for s in used]
    rates = _car_energy_caps(planned, used)
    # Feasible energy per car: what its stay allows at its maximum rate.
    needs = [min(car.energy_kwh, sum(row)) for car, row in zip(planned, rates, strict=True)]
    # Groups by departure: cars 0..j, their summed per-slot rates and needs.
    prefix_rates: list[list[float]] = []
    prefix_need: list[float] = []
    acc = [0.0] * len(used)
    need_acc = 0.0
    for j, row in enumerate(rates):
        acc = [a + r for a, r in zip(acc, row, strict=True)]
        need_acc += needs[j]
        if j + 1 == len(planned) or planned[j + 1].departure != planned[j].departure:
            prefix_rates.append(acc)
            prefix_need.append(need_acc)

    # Levels (chargers' kW per slot): free first, hard at most.
    hard: list[float] = []
    base: list[float] = []
    for slot in used:
        free = _free_kw(slot.demand_keys, demands) - margin_kw
        if cap_kw is None:
            site_hard = grid_kw if grid_kw is not None else math.inf
        else:
            site_hard = max(cap_kw, free)
            if grid_kw is not None:
                site_hard = min(site_hard, grid_kw)
        h = site_hard - other_kw
        hard.append(max(0.0, h if math.isfinite(h) else sum(c.max_kw for c in planned)))
        base.append(min(hard[-1], max(0.0, free - other_kw)))
    levels = list(base)
    short = _shortfall(_slot_caps(levels, used_hours, window_drawn), prefix_rates, prefix_need)
    if short > EPS:
        # Raise the demand windows the cheapest first, each only as far as the cars need.
        classes: dict[tuple[str, ...], float] = {}
        for slot in used:
            classes[slot.demand_keys] = sum(demands[k].price_per_kw for k in slot.demand_keys if k in demands)
        for keys, _price in sorted(classes.items(), key=lambda kv: (kv[1], kv[0])):
            members = [i for i, s in enumerate(used) if s.demand_keys == keys]
            top = max(hard[i] for i in members) + other_kw
            low = min(base[i] for i in members) + other_kw

            def trial(level: float, members: list[int] = members, start: list[float] = levels) -> list[float]:
                out = list(start)
                for i in members:
                    out[i] = min(hard[i], max(base[i], level - other_kw))
                return out

            if _shortfall(_slot_caps(trial(top), used_hours, window_drawn), prefix_rates, prefix_need) > EPS:
                levels = trial(top)
                continue
            lo, hi = low, top
            while hi - lo > LEVEL_TOLERANCE_KW:
                mid = (lo + hi) / 2
                if _shortfall(_slot_caps(trial(mid), used_hours, window_drawn), prefix_rates, prefix_need) > EPS:
                    lo = mid
                else:
                    hi = mid
            levels = trial(hi)
            for key in keys:
                if key in demands and hi > demands[key].peak_kw:
                    plan.raised_to_kw[key] = max(plan.raised_to_kw.get(key, 0.0), round(hi, 3))
            break
        short = _shortfall(_slot_caps(levels, used_hours, window_drawn), prefix_rates, prefix_need)
    plan.levels_kw = levels
    plan.unmet_kwh = max(0.0, short) + sum(c.energy_kwh for c in planned) - sum(needs)
    caps = _slot_caps(levels, used_hours, window_drawn)
    slot_rate = [sum(row[t] for row in rates) for t in range(len(used))]
    caps = [min(c, r) for c, r in zip(caps, slot_rate, strict=True)]
    if short > EPS:
        plan.notes.append(f"{_fmt(short)} kWh cannot be delivered before departure under the caps")
        energy_now = caps[0]
    else:
        energy_now = _cheapest_first_slot(used, caps, planned, needs)
    _share_now(
        plan,
        planned,
        needs,
        rates,
        energy_now,
        used_hours[0],
        raising=bool(plan.raised_to_kw),
        allowance_kwh=margin_kw * used_hours[0],
    )
    return plan


def _cheapest_first_slot(
    slots: Sequence[Slot], caps: Sequence[float], cars: Sequence[CarNeed], needs: Sequence[float]
) -> float:
    """Energy for the present slot when every car's need goes to the cheapest slots it can use.

    Slots are filled cheapest (then earliest) first, each as far as its capacity and the cars
    still there allow: energy placed after a departure never exceeds what the cars leaving later
    need, so every group still finishes. Ties go to the earlier slot.
    """
    total = sum(needs)
    starts = [slot.start for slot in slots]
    # (slot index where a departure group ends, energy that may be placed from there on)
    bounds: list[list[float]] = []
    cumulative = 0.0
    for j, car in enumerate(cars):
        cumulative += needs[j]
        if j + 1 == len(cars) or cars[j + 1].departure != car.departure:
            first_after = bisect.bisect_left(starts, car.departure)
            bounds.append([float(first_after), total - cumulative])
    placed = [0.0] * len(slots)
    left = total
    order = sorted(range(len(slots)), key=lambda t: (round(slots[t].price_kwh, 9), t))
    for t in order:
        if left <= EPS:
            break
        room = min(caps[t], left)
        for bound in bounds:
            if t >= bound[0] and bound[1] < room:
                room = bound[1]
        if room <= EPS:
            continue
        placed[t] = room
        left -= room
        for bound in bounds:
            if t >= bound[0]:
                bound[1] -= room
    return placed[0]


def _share_now(
    plan: Plan,
    cars: Sequence[CarNeed],
    needs: Sequence[float],
    rates: Sequence[Sequence[float]],
    energy_now: float,
    hours_now: float,
    *,
    raising: bool = False,
    allowance_kwh: float = 0.0,
) -> None:
    """Split the present slot's energy: first what a car cannot get later, then least laxity.

    A charger cannot go below its minimum power: a car either waits or charges at ``min_kw`` or
    more. A car that must charge now gets at least its minimum (the others give way); one that
    need not is started only while the slot's energy still covers its minimum, so what the cars
    draw stays within the plan's level (a car lifted to its minimum would set a new month peak).
    The first car left waiting for want of its minimum is started at it all the same when that
    goes above the slot's energy by at most ``allowance_kwh`` (the site's peak margin over the
    slot: the plan keeps that far below the month's demand, so no new peak is set), or when the
    plan raises the month's demand anyway (``raising``) and no other car charges in the slot: the
    raise then becomes one the chargers can follow (a lone car whose level is below its minimum
    would otherwise wait, and the level be raised again at the next run).
    """
    if hours_now <= 0:
        return
    # Each car over the part of the slot it is still there: one leaving before the slot ends must
    # take its energy before it leaves, not spread over the whole slot.
    there = [min(hours_now, rates[i][0] / car.max_kw) if car.max_kw > 0 else hours_now for i, car in enumerate(cars)]
    started = [min(min(car.min_kw, car.max_kw) * there[i], needs[i], rates[i][0]) for i, car in enumerate(cars)]
    given = [0.0] * len(cars)
    for i, row in enumerate(rates):
        must = min(row[0], max(0.0, needs[i] - sum(row[1:])))
        if must > EPS:
            given[i] = max(must, started[i])
    left = energy_now - sum(given)
    laxity = []
    for i, car in enumerate(cars):
        rest = needs[i] - given[i]
        stay_h = (car.departure - plan.slots[0].start).total_seconds() / 3600
        laxity.append((stay_h - rest / car.max_kw, car.departure, car.id, i))
    for _lax, _dep, _id, i in sorted(laxity):
        if left <= EPS:
            break
        room = min(rates[i][0], needs[i]) - given[i]
        if room <= EPS:
            continue
        if given[i] <= EPS and left < started[i] - EPS:
            alone = raising and sum(given) <= EPS  # the raise is for no other car: round it up
            if not (alone or started[i] - left <= allowance_kwh + EPS):
                continue
            left = started[i]  # rounded up to this car's minimum; nothing after it
        extra = min(room, left)
        given[i] += extra
        left -= extra
    for i, car in enumerate(cars):
        if given[i] <= EPS or there[i] <= 0:
            plan.kw_now[car.id] = 0.0
            continue
        kw = max(given[i] / there[i], min(car.min_kw, car.max_kw))
        plan.kw_now[car.id] = round(kw, 4)
