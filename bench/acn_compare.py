"""Compare our engine with ACN-Sim's algorithms and the offline optimum on the same sessions.

Run: ``.venv/bin/python bench/acn_compare.py`` (a week, 54 EVSEs; ``--help`` for options).

Caltech's ACN-Sim (acnportal 0.3.3) simulates a charging garage in 5-minute periods and calls
a scheduling algorithm each period. ``EngineAlgorithm`` lets it call ``balancing.engine.solve``
like the Celery task does: it converts ACN-Sim's ``SessionInfo``/``InfrastructureInfo`` to our
problem dict. The garage is a three-phase site with single-phase 230 V EVSEs spread over
L1/L2/L3 on two panels, under a tight transformer cap, with 6 A minimum pilots in 1 A steps
(0 or 6..32 A). Sessions are synthetic workplace arrivals drawn with a fixed seed (ACN-Data
needs the network). Ideal batteries take every amp they are offered until full, so the
offline optimum (an LP with perfect foresight over the whole horizon, scipy HiGHS, ignoring
the 6 A minimum, hence an upper bound) is the true ceiling. Pilots in whole amps cannot use
the fraction of a limit (3 x 28.99 A is 3 x 28 A for them), so a second LP with every limit
rounded down to whole amps gives a tighter ceiling for any algorithm bound to those pilots.

Columns: kWh delivered, % of the requested energy, % of the offline optimum, % of the
whole-amp ceiling, ms per call (the whole
``schedule`` call, conversion included, as ACN-Sim times it) and violations (periods x
constraints over a limit, plus pilots outside 0 or 6..32 A).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from acnportal import acnsim  # type: ignore[import-untyped, unused-ignore]
from acnportal.acnsim.events import EventQueue, PluginEvent  # type: ignore[import-untyped, unused-ignore]
from acnportal.acnsim.models.battery import Battery  # type: ignore[import-untyped, unused-ignore]
from acnportal.acnsim.models.ev import EV  # type: ignore[import-untyped, unused-ignore]
from acnportal.acnsim.models.evse import FiniteRatesEVSE  # type: ignore[import-untyped, unused-ignore]
from acnportal.algorithms import (  # type: ignore[import-untyped, unused-ignore]
    BaseAlgorithm,
    RoundRobin,
    SortedSchedulingAlgo,
    earliest_deadline_first,
    first_come_first_served,
    least_laxity_first,
)
from scipy.optimize import linprog  # type: ignore[import-untyped, unused-ignore]
from scipy.sparse import coo_matrix  # type: ignore[import-untyped, unused-ignore]

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from balancing.engine import solve

VOLTAGE_V = 230.0
MIN_PILOT_A = 6
MAX_PILOT_A = 32
PILOTS_A = [0, *range(MIN_PILOT_A, MAX_PILOT_A + 1)]
START = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # a Monday


@dataclass(frozen=True)
class Layout:
    """The garage: EVSE i is on phase L(i % 3 + 1) and on panel i % panels."""

    n_evses: int
    cap_kw: float
    panel_limit_a: float = 80.0
    panels: int = 2

    @property
    def site_limit_a(self) -> float:
        """The transformer cap as a per-phase current limit (A), balanced over three phases."""
        return self.cap_kw * 1000.0 / (3 * VOLTAGE_V)

    def station(self, i: int) -> str:
        return f"EVSE-{i:02d}"

    def phase(self, i: int) -> int:
        return i % 3

    def panel(self, i: int) -> int:
        return i % self.panels

    def limits(self) -> list[tuple[str, list[int], float]]:
        """Every constraint as (name, station indices, limit in A): site and panels, per phase."""
        out = []
        for p in range(3):
            on_phase = [i for i in range(self.n_evses) if self.phase(i) == p]
            out.append((f"site L{p + 1}", on_phase, self.site_limit_a))
            for k in range(self.panels):
                out.append((f"panel-{k} L{p + 1}", [i for i in on_phase if self.panel(i) == k], self.panel_limit_a))
        return out

    def nodes(self) -> list[dict[str, Any]]:
        site_a = self.site_limit_a
        return [
            {"id": "site", "parent": None, "limit_a": [site_a] * 3},
            *({"id": f"panel-{k}", "parent": "site", "limit_a": [self.panel_limit_a] * 3} for k in range(self.panels)),
        ]


@dataclass(frozen=True)
class Session:
    """One synthetic charging session, times in simulation periods."""

    session_id: str
    station: int
    arrival: int
    departure: int
    energy_kwh: float


def generate_sessions(
    layout: Layout, *, days: int, period_min: int, seed: int, weekday_sessions: int, weekend_sessions: int
) -> list[Session]:
    """Workplace arrivals: weekdays around 8:30 for about 8 h, fewer and shorter stays at weekends.

    Each car takes a random free EVSE; a car that finds none goes away (as at a full garage).
    Energy demand is log-normal around 10 kWh, never more than 32 A could deliver in the stay.
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible synthetic data, not secrets
    per_hour = 60 // period_min
    raw: list[tuple[float, float, float]] = []
    for day in range(days):
        weekend = (START + timedelta(days=day)).weekday() >= 5
        for _ in range(weekend_sessions if weekend else weekday_sessions):
            if weekend:
                arrive_h = rng.uniform(9, 18)
                stay_h = min(max(rng.gauss(3, 1.5), 0.5), 8)
            else:
                arrive_h = min(max(rng.gauss(8.5, 1.5), 5), 20)
                stay_h = min(max(rng.gauss(8, 2.5), 0.5), 14)
            energy = min(max(rng.lognormvariate(math.log(10), 0.6), 1.0), 50.0)
            energy = min(energy, 0.9 * MAX_PILOT_A * VOLTAGE_V / 1000 * stay_h)
            raw.append((day * 24 + arrive_h, stay_h, energy))
    raw.sort()
    free_at = [0] * layout.n_evses
    sessions = []
    for k, (arrive_h, stay_h, energy) in enumerate(raw):
        arrival = int(arrive_h * per_hour)
        departure = max(arrival + 1, int((arrive_h + stay_h) * per_hour))
        free = [i for i in range(layout.n_evses) if free_at[i] <= arrival]
        if not free:
            continue
        station = rng.choice(free)
        free_at[station] = departure
        sessions.append(Session(f"s{k:04d}", station, arrival, departure, round(energy, 3)))
    return sessions


def build_network(layout: Layout) -> acnsim.ChargingNetwork:
    network = acnsim.ChargingNetwork()
    angles = [0, -120, 120]
    for i in range(layout.n_evses):
        network.register_evse(FiniteRatesEVSE(layout.station(i), PILOTS_A), VOLTAGE_V, angles[layout.phase(i)])
    for name, members, limit in layout.limits():
        if members:
            network.add_constraint(acnsim.Current([layout.station(i) for i in members]), limit, name=name)
    return network


def build_events(layout: Layout, sessions: list[Session]) -> EventQueue:
    """Fresh EVs for each run: ideal batteries whose capacity is the requested energy."""
    events = []
    for s in sessions:
        battery = Battery(capacity=s.energy_kwh, init_charge=0, max_power=MAX_PILOT_A * VOLTAGE_V / 1000)
        ev = EV(s.arrival, s.departure, s.energy_kwh, layout.station(s.station), s.session_id, battery)
        events.append(PluginEvent(s.arrival, ev))
    return EventQueue(events)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class EngineAlgorithm(BaseAlgorithm):
    """ACN-Sim algorithm that calls ``balancing.engine.solve`` once per period.

    It carries what the glue carries between runs: when each car's on/off spell began, the
    energy it received, the limit it was offered and what it drew.
    """

    def __init__(
        self,
        layout: Layout,
        period_min: int,
        start: datetime = START,
        *,
        tell_departure: bool = True,
        deadline_first: bool = True,
    ) -> None:
        """``tell_departure=False`` withholds departures, leaving plain max-min fairness (for comparison);
        ``deadline_first`` sets the problem option of that name (``False``: fewest pauses first)."""
        super().__init__()
        self.tell_departure = tell_departure
        self.deadline_first = deadline_first
        self.max_recompute = 1
        self.layout = layout
        self.period_min = period_min
        self.start = start
        self.spell: dict[str, tuple[bool, datetime]] = {}
        self.offered: dict[str, float] = {}
        self.index = {layout.station(i): i for i in range(layout.n_evses)}

    def schedule(self, active_sessions: list[Any]) -> dict[str, list[float]]:
        interface = self.interface
        now = self.start + timedelta(minutes=self.period_min * interface.current_time)
        drawn = interface.last_actual_charging_rate
        by_station = {s.station_id: s for s in active_sessions}
        evses = []
        for station, i in self.index.items():
            entry: dict[str, Any] = {
                "id": station,
                "node": f"panel-{self.layout.panel(i)}",
                "phases": [f"L{self.layout.phase(i) + 1}"],
                "min_a": MIN_PILOT_A,
                "max_a": MAX_PILOT_A,
                "step_a": 1,
                "active": station in by_station,
            }
            session = by_station.get(station)
            if session is not None:
                departure = self.start + timedelta(minutes=self.period_min * session.estimated_departure)
                entry["energy_needed_kwh"] = max(float(session.remaining_demand), 0.0)
                if self.tell_departure:
                    entry["departure"] = _iso(departure)
                entry["session_kwh"] = float(session.energy_delivered)
                spell = self.spell.get(session.session_id)
                if spell is not None:
                    entry["charging_since" if spell[0] else "paused_since"] = _iso(spell[1])
                offered = self.offered.get(session.session_id)
                if offered and session.session_id in drawn:
                    entry["offered_a"] = offered
                    entry["measured_a"] = float(drawn[session.session_id])
            evses.append(entry)
        problem = {
            "voltage_v": VOLTAGE_V,
            "now": _iso(now),
            "nodes": self.layout.nodes(),
            "evses": evses,
            "period_s": self.period_min * 60,
            "deadline_first": self.deadline_first,
        }
        allocations = solve(problem)["allocations_a"]
        for station, session in by_station.items():
            on = allocations[station] > 0
            spell = self.spell.get(session.session_id)
            if spell is None or spell[0] != on:
                self.spell[session.session_id] = (on, now)
            self.offered[session.session_id] = allocations[station]
        return {station: [allocations[station]] for station in self.index}


@dataclass
class Outcome:
    name: str
    delivered_kwh: float
    requested_kwh: float
    call_ms: list[float] = field(default_factory=list)
    violations: int = 0


def count_violations(layout: Layout, pilots: np.ndarray) -> int:
    """Periods x constraints over their limit, plus pilots that are neither 0 nor 6..32 A in 1 A steps."""
    bad = 0
    for _, members, limit in layout.limits():
        if members:
            bad += int(np.sum(pilots[members, :].sum(axis=0) > limit + 1e-6))
    off_grid = (pilots > 1e-9) & ((pilots < MIN_PILOT_A - 1e-9) | (np.abs(pilots - np.round(pilots)) > 1e-6))
    return bad + int(np.sum(off_grid)) + int(np.sum(pilots > MAX_PILOT_A + 1e-9))


def run(name: str, algorithm: BaseAlgorithm, layout: Layout, sessions: list[Session], period_min: int) -> Outcome:
    simulator = acnsim.Simulator(
        build_network(layout), algorithm, build_events(layout, sessions), START, period=period_min, verbose=False
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        simulator.run()
    requested = sum(s.energy_kwh for s in sessions)
    delivered = sum(ev.energy_delivered for ev in simulator.ev_history.values())
    ms = [stat["solve_time"] * 1000 for stat in algorithm.solve_stats if stat["active_sessions"]]
    return Outcome(name, delivered, requested, ms, count_violations(layout, simulator.pilot_signals))


def offline_optimum_kwh(layout: Layout, sessions: list[Session], period_min: int, *, whole_amps: bool = False) -> float:
    """Most energy any schedule could deliver, knowing every session in advance (LP, HiGHS).

    Rates are continuous in [0, 32] A (the 6 A minimum is relaxed), so this is an upper bound.
    ``whole_amps``: every limit rounded down to whole amps, the most that pilots in whole amps
    can use of it; still an upper bound for them, and a tighter one.
    """
    kwh_per_a = VOLTAGE_V / 1000 * period_min / 60
    var_session: list[int] = []
    var_time: list[int] = []
    for k, s in enumerate(sessions):
        for t in range(s.arrival, s.departure):
            var_session.append(k)
            var_time.append(t)
    n = len(var_session)
    # One row per session (its energy, in A x periods), then one per constraint and period.
    rows: list[int] = list(var_session)
    cols: list[int] = list(range(n))
    limits: list[float] = [s.energy_kwh / kwh_per_a for s in sessions]
    row = len(sessions)
    horizon = max((s.departure for s in sessions), default=0)
    by_time: dict[int, list[int]] = {}
    for v, t in enumerate(var_time):
        by_time.setdefault(t, []).append(v)
    for _, members, limit in layout.limits():
        member_set = set(members)
        for t in range(horizon):
            vs = [v for v in by_time.get(t, []) if sessions[var_session[v]].station in member_set]
            if not vs:
                continue
            rows.extend([row] * len(vs))
            cols.extend(vs)
            limits.append(math.floor(limit + 1e-9) if whole_amps else limit)
            row += 1
    matrix = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(row, n)).tocsr()
    result = linprog(-np.ones(n), A_ub=matrix, b_ub=np.array(limits), bounds=(0, MAX_PILOT_A), method="highs")
    if result.status != 0:
        raise RuntimeError(f"offline LP failed: {result.message}")
    return float(-result.fun * kwh_per_a)


ALGORITHMS: dict[str, Callable[[Layout, int], BaseAlgorithm]] = {
    "ours (balancing.engine)": lambda layout, period: EngineAlgorithm(layout, period),
    "ours, fewest pauses": lambda layout, period: EngineAlgorithm(layout, period, deadline_first=False),
    "ours, no departures (max-min)": lambda layout, period: EngineAlgorithm(layout, period, tell_departure=False),
    "ACN round robin": lambda layout, period: RoundRobin(first_come_first_served),
    "ACN earliest deadline first": lambda layout, period: SortedSchedulingAlgo(earliest_deadline_first),
    "ACN least laxity first": lambda layout, period: SortedSchedulingAlgo(least_laxity_first),
    "ACN first come first served": lambda layout, period: SortedSchedulingAlgo(first_come_first_served),
}


def compare(
    layout: Layout, sessions: list[Session], period_min: int, names: list[str] | None = None
) -> tuple[list[Outcome], float]:
    """Run every algorithm (or ``names``) on the same sessions; also return the offline optimum (kWh)."""
    outcomes = []
    for name, make in ALGORITHMS.items():
        if names is None or name in names:
            outcomes.append(run(name, make(layout, period_min), layout, sessions, period_min))
    return outcomes, offline_optimum_kwh(layout, sessions, period_min)


def table(outcomes: list[Outcome], optimum_kwh: float, whole_amp_kwh: float) -> str:
    requested = outcomes[0].requested_kwh if outcomes else 0.0
    header = (
        f"{'algorithm':<32} {'kWh':>8} {'% requested':>11} {'% optimum':>10} {'% whole-amp':>11} "
        f"{'mean ms':>8} {'max ms':>8} {'violations':>10}"
    )
    lines = [header]
    for name, kwh in (("offline optimum (LP, HiGHS)", optimum_kwh), ("whole-amp ceiling (LP)", whole_amp_kwh)):
        lines.append(
            f"{name:<32} {kwh:>8.1f} {100 * kwh / requested:>10.2f}% {100 * kwh / optimum_kwh:>9.2f}% "
            f"{100 * kwh / whole_amp_kwh:>10.2f}% {'-':>8} {'-':>8} {'-':>10}"
        )
    for o in outcomes:
        mean_ms = sum(o.call_ms) / len(o.call_ms) if o.call_ms else 0.0
        lines.append(
            f"{o.name:<32} {o.delivered_kwh:>8.1f} {100 * o.delivered_kwh / o.requested_kwh:>10.2f}% "
            f"{100 * o.delivered_kwh / optimum_kwh:>9.2f}% {100 * o.delivered_kwh / whole_amp_kwh:>10.2f}% "
            f"{mean_ms:>8.2f} {max(o.call_ms, default=0):>8.2f} {o.violations:>10}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--evses", type=int, default=54)
    parser.add_argument("--cap-kw", type=float, default=25.0, help="transformer cap (kW), balanced over 3 phases")
    parser.add_argument("--weekday-sessions", type=int, default=45)
    parser.add_argument("--weekend-sessions", type=int, default=10)
    parser.add_argument("--period-min", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2019)
    parser.add_argument("--only", action="append", help="run only this algorithm (repeatable)")
    args = parser.parse_args()
    layout = Layout(n_evses=args.evses, cap_kw=args.cap_kw)
    sessions = generate_sessions(
        layout,
        days=args.days,
        period_min=args.period_min,
        seed=args.seed,
        weekday_sessions=args.weekday_sessions,
        weekend_sessions=args.weekend_sessions,
    )
    requested = sum(s.energy_kwh for s in sessions)
    print(
        f"{len(sessions)} sessions over {args.days} days, {args.evses} EVSEs, transformer cap {args.cap_kw:g} kW "
        f"({layout.site_limit_a:.1f} A per phase), {requested:.0f} kWh requested, seed {args.seed}"
    )
    began = time.perf_counter()
    outcomes, optimum = compare(layout, sessions, args.period_min, args.only)
    print(table(outcomes, optimum, offline_optimum_kwh(layout, sessions, args.period_min, whole_amps=True)))
    print(f"({time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
