"""What-if estimator: replay historical sessions unmanaged and through the real balancing engine.

Pure (no Django). Sessions come from a CSV (``station_id,arrival,departure,energy_kwh`` and
optionally ``max_kw``; ISO 8601 times with offsets). Unmanaged, each car draws ``max_kw``
from arrival until it has ``energy_kwh`` or leaves. Managed, time runs in steps on the clock
grid (``step_minutes``, 15 by default): each step the engine (``balancing.engine.solve``)
shares one node of ``limit_kw`` among the cars present; a car never draws more than its
``max_kw``, nor after it has its energy, nor after it has left.

Electrical assumptions (state them when quoting the figures): every charger is connected at
``voltage_v`` line-to-neutral on ``phases`` phases (default 240 V single-phase, the usual US
Level 2 charger; use 230 V three-phase for European sites), so a car's current is
``max_kw * 1000 / (voltage_v * phases)`` A, with the IEC 61851 / J1772 minimum of 6 A. The
node has no per-phase current limit: only the kW limit.

A car present only part of a step is booked for the whole step (its share of the limit is
reserved) but draws only for the time it is there: the managed peak never exceeds the limit.

Capacity (NEC 625.42): without an energy management system every charger counts at its
rating as a continuous load (125 %); with one, the EMS setting is the load to size for, and
the number of chargers is bounded by giving each at least its minimum current.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import json
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

from balancing.engine import solve
from billing.costaware import (
    HORIZON,
    CarNeed,
    DemandState,
    SlotFacts,
    demand_states,
    plan_charging,
    tariff_slots,
)
from billing.intervals import interval_floor, spread_energy
from billing.tariffs import TariffSpec, bill_month, window_start

REQUIRED_COLUMNS = ("station_id", "arrival", "departure", "energy_kwh")
MIN_CURRENT_A = 6.0
CONTINUOUS_LOAD_FACTOR = Decimal("1.25")
DEFAULT_VOLTAGE_V = 240.0
DEFAULT_PHASES = 1
DEFAULT_MAX_KW = 7.2
DEFAULT_STEP_MINUTES = 15
CENT = Decimal("0.01")
ZERO = Decimal(0)
REPLAY_STEP_A = 0.1  # the replayed chargers' current step
# The replay's own behaviour: raised when a change to it (or to the policy it replays) makes a
# stopped replay's state no longer what the code would have reached, so that it is not resumed.
REPLAY_VERSION = 2


class WhatIfInputError(ValueError):
    """Bad input; the message names the row (file line) and the column, or the option."""


@dataclass(frozen=True)
class PlannedSession:
    row: int
    station_id: str
    arrival: datetime
    departure: datetime
    energy_kwh: float
    max_kw: float


def _time(value: str, row: int, column: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise WhatIfInputError(f"row {row}: {column}: {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise WhatIfInputError(f"row {row}: {column}: {value!r} has no UTC offset (write e.g. +02:00 or Z)")
    return parsed


def _positive(value: str, row: int, column: str, *, allow_zero: bool) -> float:
    try:
        number = float(value)
    except ValueError:
        raise WhatIfInputError(f"row {row}: {column}: {value!r} is not a number") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise WhatIfInputError(f"row {row}: {column}: {value!r} must be {'>= 0' if allow_zero else '> 0'}")
    return number


def sessions_from_csv(text: str, *, default_max_kw: float = DEFAULT_MAX_KW) -> list[PlannedSession]:
    """Parse the sessions CSV; a ``WhatIfInputError`` names the first bad row and column."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise WhatIfInputError(f"row 1: header: missing column(s) {', '.join(missing)}")
    sessions = []
    for row_number, row in enumerate(reader, start=2):
        if not any((value or "").strip() for value in row.values() if isinstance(value, str)):
            continue
        for column in REQUIRED_COLUMNS:
            if not (row.get(column) or "").strip():
                raise WhatIfInputError(f"row {row_number}: {column}: empty")
        arrival = _time(row["arrival"], row_number, "arrival")
        departure = _time(row["departure"], row_number, "departure")
        if departure <= arrival:
            raise WhatIfInputError(f"row {row_number}: departure: not after arrival")
        energy = _positive(row["energy_kwh"], row_number, "energy_kwh", allow_zero=True)
        raw_max = (row.get("max_kw") or "").strip()
        max_kw = _positive(raw_max, row_number, "max_kw", allow_zero=False) if raw_max else default_max_kw
        sessions.append(PlannedSession(row_number, row["station_id"].strip(), arrival, departure, energy, max_kw))
    if not sessions:
        raise WhatIfInputError("row 2: no sessions in the file")
    return sessions


def _dec(value: float) -> Decimal:
    return Decimal(repr(value))


def _money(value: Decimal) -> float:
    return float(value.quantize(CENT, rounding=ROUND_HALF_UP))


def _kw(value: Decimal | float) -> float:
    return float(Decimal(str(value)).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))


def unmanaged_profile(sessions: list[PlannedSession], step_minutes: int) -> tuple[dict[datetime, Decimal], float]:
    """Interval kWh with every car at ``max_kw`` from arrival; and the energy delivered."""
    out: dict[datetime, Decimal] = {}
    delivered = 0.0
    for s in sessions:
        hours = min(s.energy_kwh / s.max_kw, (s.departure - s.arrival).total_seconds() / 3600)
        energy = s.max_kw * hours
        delivered += energy
        spread_energy(out, s.arrival, s.arrival + timedelta(hours=hours), _dec(energy), step_minutes)
    return out, delivered


@dataclass
class _Car:
    session: PlannedSession
    evse_id: str
    max_a: float
    remaining_kwh: float
    delivered_kwh: float = 0.0

    @property
    def min_a(self) -> float:
        """The charger's lowest current for this car (below it the car can only wait)."""
        return min(MIN_CURRENT_A, self.max_a)


def _replay(
    sessions: list[PlannedSession],
    *,
    step_minutes: int,
    kw_per_a: float,
    resume: tuple[datetime, list[tuple[int, float, float]]] | None = None,
) -> Iterator[tuple[datetime, list[tuple[_Car, float]]]]:
    """The replay's clock: each step's start and the cars present in it, with the hours each is.

    Steps run on the clock grid from the first arrival, skipping the empty stretches; a car is
    present from its arrival until it leaves or has its energy (the caller books what it draws).
    ``resume``: start at this step instead, with these cars (row, remaining kWh, delivered kWh)
    still plugged in, as a replay stopped there had them; sessions arriving before it are done.
    """
    step = timedelta(minutes=step_minutes)
    ordered = sorted(sessions, key=lambda s: (s.arrival, s.row))
    cars: list[_Car] = []
    next_index = 0
    t = interval_floor(ordered[0].arrival, step_minutes)
    if resume is not None:
        t, carried = resume
        by_row = {s.row: s for s in ordered}
        for row, remaining, delivered in carried:
            s = by_row[row]
            cars.append(_Car(s, f"{s.station_id}#{s.row}", s.max_kw / kw_per_a, remaining, delivered))
        next_index = bisect.bisect_left([s.arrival for s in ordered], t)
    while next_index < len(ordered) or cars:
        if not cars and next_index < len(ordered) and ordered[next_index].arrival >= t + step:
            t = interval_floor(ordered[next_index].arrival, step_minutes)
        t_end = t + step
        while next_index < len(ordered) and ordered[next_index].arrival < t_end:
            s = ordered[next_index]
            cars.append(_Car(s, f"{s.station_id}#{s.row}", s.max_kw / kw_per_a, s.energy_kwh))
            next_index += 1
        present = []
        for car in cars:
            begin, end = max(t, car.session.arrival), min(t_end, car.session.departure)
            if end > begin and car.remaining_kwh > 1e-9:
                present.append((car, (end - begin).total_seconds() / 3600))
        yield t, present
        cars = [c for c in cars if c.session.departure > t_end and c.remaining_kwh > 1e-9]
        t = t_end


def _evse(car: _Car, phase_names: list[str], wants_a: float) -> dict[str, Any]:
    """The engine's EVSE for a replayed car: ``REPLAY_STEP_A`` steps, asking ``wants_a`` (never below its minimum)."""
    return {
        "id": car.evse_id,
        "node": "site",
        "phases": phase_names,
        "min_a": car.min_a,
        "max_a": car.max_a,
        "step_a": REPLAY_STEP_A,
        "active": True,
        "ev_max_a": round(max(car.min_a, wants_a), 3),
    }


def _book(present: list[tuple[_Car, float]], allocation: dict[str, float], kw_per_a: float) -> float:
    """Energy each present car draws at its allocated current for the time it is there; the sum."""
    step_kwh = 0.0
    for car, hours in present:
        energy = min(allocation.get(car.evse_id, 0.0) * kw_per_a * hours, car.remaining_kwh)
        car.remaining_kwh -= energy
        car.delivered_kwh += energy
        step_kwh += energy
    return step_kwh


def managed_profile(
    sessions: list[PlannedSession], *, limit_kw: float, voltage_v: float, phases: int, step_minutes: int
) -> tuple[dict[datetime, Decimal], float, int]:
    """Interval kWh with the engine sharing ``limit_kw`` each step; energy delivered; solves."""
    kw_per_a = voltage_v * phases / 1000
    phase_names = ["L1"] if phases == 1 else ["L1", "L2", "L3"]
    out: dict[datetime, Decimal] = {}
    cache: dict[tuple[Any, ...], dict[str, float]] = {}
    solves = 0
    delivered_total = 0.0
    for t, present in _replay(sessions, step_minutes=step_minutes, kw_per_a=kw_per_a):
        if not present:
            continue
        evses = []
        rotate = sum(car.min_a for car, _ in present) * kw_per_a > limit_kw
        for car, hours in present:
            evse = _evse(car, phase_names, min(car.max_a, car.remaining_kwh / hours / kw_per_a))
            if rotate:
                evse["session_kwh"] = round(car.delivered_kwh, 6)
            evses.append(evse)
        key = tuple((e["id"], e["max_a"], e["ev_max_a"], e.get("session_kwh")) for e in evses)
        allocation = cache.get(key)
        if allocation is None:
            problem = {
                "voltage_v": voltage_v,
                "phases": phases,
                "now": t.isoformat(),
                "period_s": step_minutes * 60,
                "nodes": [{"id": "site", "parent": None, "limit_kw": limit_kw}],
                "evses": evses,
            }
            allocation = solve(problem)["allocations_a"]
            solves += 1
            if len(cache) > 50_000:
                cache.clear()
            cache[key] = allocation
        step_kwh = _book(present, allocation, kw_per_a)
        if step_kwh > 0:
            out[t] = out.get(t, ZERO) + _dec(step_kwh)
            delivered_total += step_kwh
    return out, delivered_total, solves


@dataclass
class CostAwareRun:
    """The cost-aware policy replayed: its interval energy, what each session got, solve times."""

    intervals: dict[datetime, Decimal]  # UTC interval start -> kWh, on the step grid
    delivered_kwh: float
    delivered_by_row: dict[int, float]  # PlannedSession.row -> kWh delivered
    solves: int
    solve_ms: list[float]  # per step: plan_charging + engine solve, wall ms
    state: dict[str, Any] | None = None  # where a replay asked to stop stopped (``ReplayState``)


# A stopped replay, as JSON (floats kept exact: JSON writes their shortest round-trip form):
#   at: ISO step start where it stopped (nothing of that step or after is booked);
#   cars: [[row, remaining kWh, delivered kWh], ...] plugged in then, in the replay's order;
#   month: the month-to-date demands (``_MonthToDate.dump``); history: flat peaks of the
#   simulated months before; intervals: {ISO step start: kWh string}; delivered_by_row;
#   delivered_kwh: their sum.
ReplayState = dict[str, Any]


class _MonthToDate:
    """The billing demands a month has set so far, kept as energy is booked (never re-billed).

    Demand of a window = its energy so far / its length: the same running maximum ``bill_month``
    would find on the month-to-date intervals, flat (all hours) and per time-of-use period.
    """

    def __init__(self, spec: TariffSpec, tz: ZoneInfo, year: int, month: int, ratchet_reference_kw: float) -> None:
        self.spec, self.tz, self.year, self.month = spec, tz, year, month
        self.window_h = spec.demand_window_minutes / 60
        self.window_kwh: dict[datetime, float] = {}
        self.peak_kw = 0.0
        self.peak_at: datetime | None = None
        self.tou_kw: dict[int, float] = {}
        self.tou_at: dict[int, datetime] = {}
        self.booked = False
        self.ratchet_reference_kw = ratchet_reference_kw
        self._states: dict[str, DemandState] | None = None

    def book(self, start: datetime, kwh: float) -> None:
        """Add ``kwh`` drawn in the interval starting at ``start`` (UTC) to its demand window."""
        self.booked = True
        local = start.astimezone(self.tz)
        window = window_start(start, local, self.spec.demand_window_minutes)
        energy = self.window_kwh.get(window, 0.0) + kwh
        self.window_kwh[window] = energy
        kw = energy / self.window_h
        if kw > self.peak_kw:
            self.peak_kw, self.peak_at, self._states = kw, window, None
        period = self.spec.demand_period(window.astimezone(self.tz))
        if period is not None and kw > self.tou_kw.get(period, -1.0):
            self.tou_kw[period], self.tou_at[period], self._states = kw, window, None

    def drawn(self, at: datetime) -> tuple[float, float]:
        """(hours, kWh) of the demand window ``at`` falls in, drawn before ``at``."""
        window = window_start(at, at.astimezone(self.tz), self.spec.demand_window_minutes)
        return (at - window).total_seconds() / 3600, self.window_kwh.get(window, 0.0)

    def dump(self) -> dict[str, Any]:
        return {
            "year": self.year,
            "month": self.month,
            "ratchet_reference_kw": self.ratchet_reference_kw,
            "booked": self.booked,
            "windows": [[at.isoformat(), kwh] for at, kwh in self.window_kwh.items()],
            "peak": [self.peak_kw, self.peak_at.isoformat() if self.peak_at is not None else None],
            "tou": [[p, kw, self.tou_at[p].isoformat()] for p, kw in self.tou_kw.items()],
        }

    @classmethod
    def load(cls, spec: TariffSpec, tz: ZoneInfo, data: dict[str, Any]) -> _MonthToDate:
        month = cls(spec, tz, int(data["year"]), int(data["month"]), float(data["ratchet_reference_kw"]))
        month.booked = bool(data["booked"])
        month.window_kwh = {datetime.fromisoformat(at): float(kwh) for at, kwh in data["windows"]}
        month.peak_kw = float(data["peak"][0])
        month.peak_at = datetime.fromisoformat(data["peak"][1]) if data["peak"][1] else None
        month.tou_kw = {int(p): float(kw) for p, kw, _at in data["tou"]}
        month.tou_at = {int(p): datetime.fromisoformat(at) for p, _kw, at in data["tou"]}
        return month

    def states(self) -> dict[str, DemandState]:
        """``billing.costaware.demand_states`` of the month so far (rebuilt only after a change)."""
        if self._states is None:
            self._states = demand_states(
                self.spec,
                month=self.month,
                peak=(self.peak_kw, self.peak_at),
                tou={period: (kw, self.tou_at[period]) for period, kw in self.tou_kw.items()},
                ratchet_reference_kw=self.ratchet_reference_kw,
            )
        return self._states


def cost_aware_profile(
    sessions: list[PlannedSession],
    *,
    spec: TariffSpec,
    tz: ZoneInfo,
    cap_kw: float,
    grid_kw: float | None,
    voltage_v: float,
    phases: int,
    step_minutes: int,
    margin_kw: float = 0.0,
    stop_at: datetime | None = None,
    resume: ReplayState | None = None,
) -> CostAwareRun:
    """Replay ``sessions`` under the cost-aware policy (``billing.costaware``) feeding the engine.

    ``stop_at``: stop before the first step starting at or after it and return the replay's
    state there (``CostAwareRun.state``); ``resume``: go on from such a state, with the same
    sessions before its step (the caller checks: ``replay_inputs_key``) and any after it. A
    replay stopped and resumed books exactly what one run through would.

    Each step: the month-to-date billing demands (kept incrementally; the flat one at least the
    ratchet of the simulated months before), the tariff's slots for ``HORIZON``, and each car's
    remaining energy and departure (known, as the session's) go to ``plan_charging``; the engine
    then shares one node of the plan's cap (``grid_kw`` when there is no cap) among the cars,
    each at most its planned power. The plan plans a car at 0 or at least its minimum current;
    a car planned below its minimum waits this step, as in a live run. The plan is told what
    the present demand window has already drawn (``window_drawn``).
    Energy is booked like ``managed_profile``: a car present part of a step draws only then.
    """
    if not sessions:
        return CostAwareRun({}, 0.0, {}, 0, [])
    kw_per_a = voltage_v * phases / 1000
    phase_names = ["L1"] if phases == 1 else ["L1", "L2", "L3"]
    out: dict[datetime, Decimal] = {}
    delivered_by_row = {s.row: 0.0 for s in sessions}
    solve_ms: list[float] = []
    delivered_total = 0.0
    history: list[float] = []  # flat peaks of the simulated months before, oldest first
    month: _MonthToDate | None = None
    slot_memo: dict[datetime, SlotFacts] = {}
    carried: tuple[datetime, list[tuple[int, float, float]]] | None = None
    if resume is not None:
        out = {datetime.fromisoformat(at): Decimal(kwh) for at, kwh in resume["intervals"].items()}
        delivered_by_row |= {int(row): float(kwh) for row, kwh in resume["delivered_by_row"].items()}
        delivered_total = float(resume["delivered_kwh"])
        history = [float(kw) for kw in resume["history"]]
        month = _MonthToDate.load(spec, tz, resume["month"]) if resume["month"] is not None else None
        carried = (
            datetime.fromisoformat(resume["at"]),
            [(int(row), float(left), float(got)) for row, left, got in resume["cars"]],
        )
    state: ReplayState | None = None
    for t, present in _replay(sessions, step_minutes=step_minutes, kw_per_a=kw_per_a, resume=carried):
        if stop_at is not None and t >= stop_at:
            plugged = [(c.session.row, c.remaining_kwh, c.delivered_kwh) for c, _ in present if c.session.arrival < t]
            state = _state(t, plugged, month, history, out, delivered_by_row, delivered_total)
            break
        local = t.astimezone(tz)
        if month is None or (local.year, local.month) != (month.year, month.month):
            if month is not None and month.booked:
                history.append(max(month.peak_kw, 0.0))
            month = _MonthToDate(spec, tz, local.year, local.month, max(history[-11:], default=0.0))
        if present:
            started = time.perf_counter()
            plan = plan_charging(
                now=t,
                slots=tariff_slots(
                    spec, tz, t, min(t + HORIZON, max(c.session.departure for c, _ in present)), memo=slot_memo
                ),
                cars=[
                    CarNeed(
                        c.evse_id,
                        c.remaining_kwh,
                        c.session.departure,
                        c.session.max_kw,
                        c.min_a * kw_per_a,
                    )
                    for c, _ in present
                ],
                demands=month.states(),
                cap_kw=cap_kw,
                grid_kw=grid_kw,
                margin_kw=margin_kw,
                window_drawn=month.drawn(t),
            )
            evses = []
            for car, hours in present:
                planned_a = plan.kw_now.get(car.evse_id, 0.0) / kw_per_a
                needed_a = car.remaining_kwh / hours / kw_per_a
                wants_a = min(car.max_a, planned_a, needed_a)
                if planned_a >= needed_a - 1e-3:  # planned to finish: the step above, not a few Wh short
                    wants_a = min(car.max_a, math.ceil(needed_a / REPLAY_STEP_A - 1e-9) * REPLAY_STEP_A)
                evse = _evse(car, phase_names, wants_a)
                evse["active"] = planned_a >= evse["min_a"] - 1e-3
                evse["energy_needed_kwh"] = round(car.remaining_kwh, 6)
                evse["departure"] = car.session.departure.isoformat()
                evse["session_kwh"] = round(car.delivered_kwh, 6)
                evses.append(evse)
            node: dict[str, Any] = {"id": "site", "parent": None}
            limit = plan.cap.kw if plan.cap.kw is not None else grid_kw
            if limit is not None:
                node["limit_kw"] = limit
            problem = {
                "voltage_v": voltage_v,
                "phases": phases,
                "now": t.isoformat(),
                "period_s": step_minutes * 60,
                "nodes": [node],
                "evses": evses,
            }
            allocation = solve(problem)["allocations_a"]
            solve_ms.append((time.perf_counter() - started) * 1000)
            before = {car.session.row: car.delivered_kwh for car, _ in present}
            step_kwh = _book(present, allocation, kw_per_a)
            for car, _ in present:
                delivered_by_row[car.session.row] += car.delivered_kwh - before[car.session.row]
            if step_kwh > 0:
                out[t] = out.get(t, ZERO) + _dec(step_kwh)
                delivered_total += step_kwh
                month.book(t, step_kwh)
    if stop_at is not None and state is None:  # every car was done before stop_at
        at = interval_floor(stop_at, step_minutes)
        state = _state(at, [], month, history, out, delivered_by_row, delivered_total)
    return CostAwareRun(out, delivered_total, delivered_by_row, len(solve_ms), solve_ms, state)


def _state(
    at: datetime,
    cars: list[tuple[int, float, float]],
    month: _MonthToDate | None,
    history: list[float],
    out: dict[datetime, Decimal],
    delivered_by_row: dict[int, float],
    delivered_kwh: float,
) -> ReplayState:
    """A replay stopped before the step starting ``at``, as JSON (``ReplayState``)."""
    return {
        "at": at.isoformat(),
        "cars": [list(car) for car in cars],
        "month": month.dump() if month is not None else None,
        "history": history,
        "intervals": {start.isoformat(): str(kwh) for start, kwh in out.items()},
        "delivered_by_row": {str(row): kwh for row, kwh in delivered_by_row.items() if kwh},
        "delivered_kwh": delivered_kwh,
    }


def replay_inputs_key(sessions: list[PlannedSession], *, before: datetime, settings: dict[str, Any]) -> str:
    """A digest of what a replay up to ``before`` depends on: the sessions arriving before it
    (every fact the replay reads) and ``settings`` (the site's limits, tariff, electrical data).
    A stored replay state is resumed only where this key is unchanged."""
    facts = sorted(
        (s.row, s.station_id, s.arrival.isoformat(), s.departure.isoformat(), repr(s.energy_kwh), repr(s.max_kw))
        for s in sessions
        if s.arrival < before
    )
    payload = json.dumps({"sessions": facts, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def _months(intervals: list[dict[datetime, Decimal]], tz: ZoneInfo) -> list[tuple[int, int]]:
    months = {(at.astimezone(tz).year, at.astimezone(tz).month) for series in intervals for at in series}
    return sorted(months)


def capacity(*, panel_kw: Decimal, charger_kw: Decimal, voltage_v: float, phases: int) -> dict[str, Any]:
    """Chargers a panel takes without and with load management (NEC 625.42)."""
    ems_setting_kw = panel_kw / CONTINUOUS_LOAD_FACTOR
    min_kw = _dec(MIN_CURRENT_A * voltage_v * phases / 1000)
    return {
        "panel_kw": _kw(panel_kw),
        "charger_kw": _kw(charger_kw),
        "without_load_balancing": int(panel_kw // (charger_kw * CONTINUOUS_LOAD_FACTOR)),
        "ems_setting_kw": _kw(ems_setting_kw),
        "with_load_balancing": int(ems_setting_kw // min_kw),
        "with_load_balancing_all_at_full_rate": int(ems_setting_kw // charger_kw),
        "minimum_kw_per_charger": _kw(min_kw),
        "rule": "NEC 625.42: without an EMS each charger counts at its rating as a continuous load (x1.25); "
        "with an EMS the EMS setting is the load (x1.25 for continuous), and each charger needs at least "
        f"{MIN_CURRENT_A:g} A to charge when all charge together.",
    }


def what_if(
    sessions: list[PlannedSession],
    *,
    limit_kw: float,
    spec: TariffSpec,
    tz: ZoneInfo,
    voltage_v: float = DEFAULT_VOLTAGE_V,
    phases: int = DEFAULT_PHASES,
    step_minutes: int = DEFAULT_STEP_MINUTES,
    panel_kw: float | None = None,
    charger_kw: float | None = None,
) -> dict[str, Any]:
    """The unmanaged vs managed comparison, per month and in total, with the capacity answer."""
    if limit_kw <= 0:
        raise WhatIfInputError("--limit-kw: must be > 0")
    if step_minutes <= 0 or 60 % step_minutes:
        raise WhatIfInputError("--step-minutes: must divide an hour (5, 10, 15, 30, 60)")
    if spec.demand_window_minutes % step_minutes:
        raise WhatIfInputError(
            f"--step-minutes: the tariff's {spec.demand_window_minutes}-min demand window is not a multiple of it"
        )
    unmanaged, delivered_unmanaged = unmanaged_profile(sessions, step_minutes)
    managed, delivered_managed, solves = managed_profile(
        sessions, limit_kw=limit_kw, voltage_v=voltage_v, phases=phases, step_minutes=step_minutes
    )
    cost_aware = cost_aware_profile(
        sessions,
        spec=spec,
        tz=tz,
        cap_kw=limit_kw,
        grid_kw=None,
        voltage_v=voltage_v,
        phases=phases,
        step_minutes=step_minutes,
    )
    series = {"u": unmanaged, "m": managed, "c": cost_aware.intervals}
    months = []
    totals = {f"{part}{policy}": ZERO for part in "de" for policy in series} | {"fixed": ZERO}
    peaks = dict.fromkeys(series, ZERO)
    history: dict[str, list[Decimal]] = {policy: [] for policy in series}
    for year, month in _months(list(series.values()), tz):
        bills = {}
        for policy, intervals in series.items():
            bills[policy] = bill = bill_month(
                spec,
                intervals,
                tz=tz,
                year=year,
                month=month,
                interval_minutes=step_minutes,
                ratchet_reference_kw=max(history[policy][-11:], default=ZERO),
            )
            history[policy].append(bill.peak_kw)
            peaks[policy] = max(peaks[policy], bill.peak_kw)
            totals[f"d{policy}"] += bill.demand_charge
            totals[f"e{policy}"] += bill.energy_cost
        bill_u, bill_m, bill_c = bills["u"], bills["m"], bills["c"]
        totals["fixed"] += bill_m.fixed_charge
        months.append(
            {
                "month": f"{year:04d}-{month:02d}",
                "unmanaged_peak_kw": _kw(bill_u.peak_kw),
                "managed_peak_kw": _kw(bill_m.peak_kw),
                "cost_aware_peak_kw": _kw(bill_c.peak_kw),
                "billing_demand_unmanaged_kw": _billing_demands(bill_u),
                "billing_demand_managed_kw": _billing_demands(bill_m),
                "cost_aware_billing_demand_kw": _billing_demands(bill_c),
                "energy_unmanaged_kwh": _kw(bill_u.energy_kwh),
                "energy_managed_kwh": _kw(bill_m.energy_kwh),
                "cost_aware_energy_kwh": _kw(bill_c.energy_kwh),
                "demand_charge_unmanaged": _money(bill_u.demand_charge),
                "demand_charge_managed": _money(bill_m.demand_charge),
                "cost_aware_demand_charge": _money(bill_c.demand_charge),
                "energy_cost_unmanaged": _money(bill_u.energy_cost),
                "energy_cost_managed": _money(bill_m.energy_cost),
                "cost_aware_energy_cost": _money(bill_c.energy_cost),
                "fixed_charges": _money(bill_m.fixed_charge),
                "savings_total": _money(_savings(bill_u.demand_charge, bill_m.demand_charge, bill_u, bill_m)),
                "cost_aware_savings_total": _money(
                    _savings(bill_u.demand_charge, bill_c.demand_charge, bill_u, bill_c)
                ),
            }
        )
    requested = sum(s.energy_kwh for s in sessions)
    delivered = {"u": delivered_unmanaged, "m": delivered_managed, "c": cost_aware.delivered_kwh}
    average_price = totals["eu"] / _dec(delivered_unmanaged) if delivered_unmanaged > 0 else ZERO

    def savings_of(policy: str) -> Decimal:
        """Demand and energy cost saved against unmanaged, less the energy not delivered at its price."""
        shortfall_value = _dec(max(delivered_unmanaged - delivered[policy], 0.0)) * average_price
        return (totals["du"] - totals[f"d{policy}"]) + (totals["eu"] - totals[f"e{policy}"]) - shortfall_value

    shortfall_kwh = max(delivered_unmanaged - delivered_managed, 0.0)
    savings = savings_of("m")
    policies = []
    for policy, name in (("u", "unmanaged"), ("m", "static_cap"), ("c", "cost_aware")):
        policies.append(
            {
                "policy": name,
                "peak_kw": _kw(peaks[policy]),
                "energy_kwh": _kw(delivered[policy]),
                "energy_cost": _money(totals[f"e{policy}"]),
                "demand_charge": _money(totals[f"d{policy}"]),
                "bill": _money(totals[f"e{policy}"] + totals[f"d{policy}"] + totals["fixed"]),
                "savings": _money(savings_of(policy)) if policy != "u" else 0.0,
            }
        )
    peak_u, peak_m = peaks["u"], peaks["m"]
    chosen_charger_kw = charger_kw or Counter(s.max_kw for s in sessions).most_common(1)[0][0]
    return {
        "unmanaged_peak_kw": _kw(peak_u),
        "managed_peak_kw": _kw(peak_m),
        "energy_requested_kwh": _kw(requested),
        "energy_delivered_kwh": _kw(delivered_managed),
        "energy_delivered_unmanaged_kwh": _kw(delivered_unmanaged),
        "energy_not_delivered_because_of_limit_kwh": _kw(shortfall_kwh),
        "demand_charge_unmanaged": _money(totals["du"]),
        "demand_charge_managed": _money(totals["dm"]),
        "energy_cost_unmanaged": _money(totals["eu"]),
        "energy_cost_managed": _money(totals["em"]),
        "fixed_charges": _money(totals["fixed"]),
        "savings_total": _money(savings),
        "cost_aware_peak_kw": _kw(peaks["c"]),
        "cost_aware_energy_delivered_kwh": _kw(cost_aware.delivered_kwh),
        "cost_aware_demand_charge": _money(totals["dc"]),
        "cost_aware_energy_cost": _money(totals["ec"]),
        "cost_aware_savings_total": _money(savings_of("c")),
        "policies": policies,
        "months": months,
        "capacity": capacity(
            panel_kw=_dec(panel_kw) if panel_kw else _dec(limit_kw) * CONTINUOUS_LOAD_FACTOR,
            charger_kw=_dec(chosen_charger_kw),
            voltage_v=voltage_v,
            phases=phases,
        ),
        "assumptions": {
            "tariff": spec.name,
            "timezone": str(tz),
            "limit_kw": limit_kw,
            "voltage_v": voltage_v,
            "phases": phases,
            "step_minutes": step_minutes,
            "demand_window_minutes": spec.demand_window_minutes,
            "sessions": len(sessions),
            "engine_solves": solves,
            "cost_aware_engine_solves": cost_aware.solves,
            "savings_note": "savings_total = demand charge savings + energy cost savings, less the energy not "
            "delivered because of the limit priced at the unmanaged average price (no kWh savings are claimed).",
        },
    }


def _billing_demands(bill: Any) -> dict[str, float]:
    out = {"flat": _kw(bill.flat_billing_kw)}
    out.update({f"tou_period_{p}": _kw(kw) for p, kw in sorted(bill.tou_demand_kw.items())})
    return out


def _savings(demand_u: Decimal, demand_m: Decimal, bill_u: Any, bill_m: Any) -> Decimal:
    shortfall = max(bill_u.energy_kwh - bill_m.energy_kwh, ZERO)
    price = bill_u.energy_cost / bill_u.energy_kwh if bill_u.energy_kwh > 0 else ZERO
    return (demand_u - demand_m) + (bill_u.energy_cost - bill_m.energy_cost) - shortfall * price
