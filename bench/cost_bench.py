"""Cost-aware balancing on real sessions: the bill of each policy against the offline optimum.

Run: ``make bench-cost`` or ``.venv/bin/python bench/cost_bench.py`` (``--help`` for options;
about a minute a cap). Nothing is fetched: the sessions and the tariff are in ``bench/data``.

Data: July 2019 of Caltech's 54-EVSE garage from ACN-Data (``bench/data/README.md``): arrival,
departure and the energy each car took. Tariff: SCE TOU-EV-4 (2019) as a URDB v7 record,
time-of-use energy and a facility demand charge of 15.51 $/kW on the month's highest 15-minute
average. Site: 54 EVSEs of 32 A at 208 V single-phase (6.656 kW a car), 6 A minimum, a grid
connection of ``--grid-kw``, America/Los_Angeles.

Policies, each replayed in 5-minute steps and billed with ``bill_month``:

- unmanaged: every car at its full rate from arrival until it has its energy or leaves;
- static cap: the engine sharing the fixed cap ``C`` (``managed_profile``);
- cost-aware: ``billing.costaware.plan_charging`` feeding the engine (``cost_aware_profile``),
  the site's demand cap ``C`` and the grid as limits;
- offline optimum: an LP with perfect foresight (scipy HiGHS) minimising energy cost + demand
  charge, each session getting exactly the energy the cost-aware policy delivered to it (the
  same service), a car only while present and at most at its rate, the site at most the grid.
  It ignores the 6 A minimum, so it is a lower bound of any real policy's bill.

Solve time: each cost-aware step's ``plan_charging`` + engine ``solve`` (wall ms, 54 EVSEs).
Targets: cost-aware bill within 5 % of the optimum's, cost-aware kWh >= static cap kWh, every
solve < 50 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from scipy.optimize import linprog  # type: ignore[import-untyped, unused-ignore]
from scipy.sparse import coo_matrix  # type: ignore[import-untyped, unused-ignore]

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from billing.intervals import interval_floor
from billing.tariffs import MonthBill, TariffSpec, bill_month, tariff_from_urdb, tariff_json_load, window_start
from billing.whatif import PlannedSession, cost_aware_profile, managed_profile, sessions_from_csv, unmanaged_profile

DATA = Path(__file__).resolve().parent / "data"
RESULTS = Path(__file__).resolve().parent / "results"
TZ = ZoneInfo("America/Los_Angeles")
EVSES = 54
VOLTAGE_V = 208.0
PHASES = 1
MAX_A = 32.0
MAX_KW = MAX_A * VOLTAGE_V / 1000  # 6.656 kW
STEP_MINUTES = 5


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def months_of(intervals: dict[datetime, Decimal]) -> list[tuple[int, int]]:
    return sorted({(at.astimezone(TZ).year, at.astimezone(TZ).month) for at in intervals})


def bill(spec: TariffSpec, intervals: dict[datetime, Decimal]) -> dict[str, Any]:
    """Every month of ``intervals`` billed (ratchet from the months before), summed."""
    energy_cost = demand = fixed = Decimal(0)
    kwh = Decimal(0)
    peak = Decimal(0)
    history: list[Decimal] = []
    bills: list[MonthBill] = []
    for year, month in months_of(intervals):
        b = bill_month(
            spec,
            intervals,
            tz=TZ,
            year=year,
            month=month,
            interval_minutes=STEP_MINUTES,
            ratchet_reference_kw=max(history[-11:], default=Decimal(0)),
        )
        history.append(b.peak_kw)
        bills.append(b)
        energy_cost += b.energy_cost
        demand += b.demand_charge
        fixed += b.fixed_charge
        kwh += b.energy_kwh
        peak = max(peak, b.peak_kw)
    daily: dict[str, float] = {}
    for b in bills:
        daily.update({day.isoformat(): round(float(kw), 2) for day, kw in b.daily_peak_kw.items()})
    return {
        "peak_kw": float(peak),
        "energy_kwh": float(kwh),
        "energy_cost": float(energy_cost),
        "demand_charge": float(demand),
        "fixed_charge": float(fixed),
        "bill": float(energy_cost + demand + fixed),
        "daily_peak_kw": daily,
    }


def price_of(spec: TariffSpec, at: datetime) -> float:
    return float(spec.energy_periods[spec.energy_period(at.astimezone(TZ))][0].price)


def demand_price(spec: TariffSpec, month: int) -> float:
    if not spec.flat_demand_periods:
        return 0.0
    return float(spec.flat_demand_periods[spec.flat_demand_months[month - 1]][0].price)


def offline_optimum(
    spec: TariffSpec, sessions: list[PlannedSession], energy_by_row: dict[int, float], grid_kw: float
) -> tuple[dict[datetime, Decimal], float, float]:
    """The LP: cheapest bill delivering ``energy_by_row`` to each session; (intervals, objective $, s).

    Variables: kWh of each session in each step it is present (<= its rate x the time there),
    and one billing demand per local month (>= every demand window's average kW in it). The
    tariff here has a flat demand charge only (TOU demand charges are not modelled).
    """
    if spec.demand_periods:
        raise SystemExit("the offline optimum models a flat demand charge only")
    step = timedelta(minutes=STEP_MINUTES)
    step_h = STEP_MINUTES / 60
    window_h = spec.demand_window_minutes / 60
    cols_session: list[int] = []
    cols_step: list[datetime] = []
    upper: list[float] = []
    for s in sessions:
        need = energy_by_row.get(s.row, 0.0)
        if need <= 1e-9:
            continue
        t = interval_floor(s.arrival, STEP_MINUTES)
        while t < s.departure:
            hours = (min(t + step, s.departure) - max(t, s.arrival)).total_seconds() / 3600
            if hours > 0:
                cols_session.append(s.row)
                cols_step.append(t)
                upper.append(s.max_kw * hours * (1 + 1e-9))
            t += step
    n_e = len(cols_step)
    steps = sorted(set(cols_step))
    step_index = {t: i for i, t in enumerate(steps)}
    window_of = {t: window_start(t, t.astimezone(TZ), spec.demand_window_minutes) for t in steps}
    windows = sorted(set(window_of.values()))
    window_index = {w: i for i, w in enumerate(windows)}
    month_keys = sorted({(w.astimezone(TZ).year, w.astimezone(TZ).month) for w in windows})
    month_index = {m: i for i, m in enumerate(month_keys)}
    n = n_e + len(month_keys)
    cost = np.zeros(n)
    price_at = {t: price_of(spec, t) for t in steps}
    cost[:n_e] = [price_at[t] for t in cols_step]
    for (_year, month), i in month_index.items():
        cost[n_e + i] = demand_price(spec, month)
    # Equalities: each session's energy.
    rows_session = sorted(set(cols_session))
    session_index = {row: i for i, row in enumerate(rows_session)}
    a_eq = coo_matrix(
        (np.ones(n_e), ([session_index[r] for r in cols_session], np.arange(n_e))), shape=(len(rows_session), n)
    ).tocsr()
    b_eq = np.array([energy_by_row[r] for r in rows_session])
    # Inequalities: per step the grid; per window its energy <= billing demand x window length.
    n_steps, n_windows = len(steps), len(windows)
    data: list[float] = []
    rows: list[int] = []
    cols: list[int] = []
    for j, t in enumerate(cols_step):
        rows.append(step_index[t])
        cols.append(j)
        data.append(1.0)
        rows.append(n_steps + window_index[window_of[t]])
        cols.append(j)
        data.append(1.0)
    for w, i in window_index.items():
        rows.append(n_steps + i)
        cols.append(n_e + month_index[(w.astimezone(TZ).year, w.astimezone(TZ).month)])
        data.append(-window_h)
    a_ub = coo_matrix((data, (rows, cols)), shape=(n_steps + n_windows, n)).tocsr()
    b_ub = np.concatenate([np.full(n_steps, grid_kw * step_h), np.zeros(n_windows)])
    bounds = [(0.0, u) for u in upper] + [(0.0, None)] * len(month_keys)
    started = time.perf_counter()
    result = linprog(cost, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
    seconds = time.perf_counter() - started
    if result.status != 0:
        raise SystemExit(f"offline optimum: {result.message}")
    out: dict[datetime, Decimal] = defaultdict(Decimal)
    for j, t in enumerate(cols_step):
        if result.x[j] > 0:
            out[t] += Decimal(repr(float(result.x[j])))
    return dict(out), float(result.fun), seconds


def by_period(spec: TariffSpec, intervals: dict[datetime, Decimal]) -> dict[str, float]:
    """kWh by energy price, for the diagnosis."""
    out: dict[str, float] = defaultdict(float)
    for at, kwh in intervals.items():
        out[f"{price_of(spec, at):.5f}"] += float(kwh)
    return {k: round(v, 1) for k, v in sorted(out.items())}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", default=str(DATA / "acn_caltech_2019-07.csv"))
    parser.add_argument("--tariff", default=str(DATA / "sce_tou_ev_4_2019.json"))
    parser.add_argument("--caps", default="30,45,60", help="static caps C, kW, comma-separated")
    parser.add_argument("--grid-kw", type=float, default=150.0)
    parser.add_argument("--margin-kw", type=float, default=0.0)
    parser.add_argument("--diagnose", action="store_true", help="print per-day peaks and kWh by price")
    parser.add_argument("--output", default=None, help="JSON (default bench/results/cost-<date>.json)")
    args = parser.parse_args()

    spec = tariff_from_urdb(tariff_json_load(Path(args.tariff).read_bytes()))
    sessions = sessions_from_csv(Path(args.sessions).read_text(), default_max_kw=MAX_KW)
    stations = {s.station_id for s in sessions}
    if len(stations) > EVSES:
        raise SystemExit(f"{len(stations)} stations in the data, more than the {EVSES} EVSEs")
    requested = sum(s.energy_kwh for s in sessions)
    caps = [float(c) for c in args.caps.split(",") if c.strip()]
    log(
        f"{len(sessions)} sessions at {len(stations)} of {EVSES} EVSEs, {requested:,.1f} kWh taken; "
        f"tariff {spec.name}; grid {args.grid_kw:g} kW; caps {caps}"
    )

    unmanaged, _ = unmanaged_profile(sessions, STEP_MINUTES)
    base = bill(spec, unmanaged)
    log(f"unmanaged: peak {base['peak_kw']:.1f} kW, {base['energy_kwh']:,.1f} kWh, bill ${base['bill']:,.2f}")
    results: list[dict[str, Any]] = [{"cap_kw": None, "policy": "unmanaged", **base}]
    for cap in caps:
        started = time.perf_counter()
        managed, _, _ = managed_profile(
            sessions, limit_kw=cap, voltage_v=VOLTAGE_V, phases=PHASES, step_minutes=STEP_MINUTES
        )
        static = bill(spec, managed)
        log(
            f"C={cap:g} kW static cap: {static['energy_kwh']:,.1f} kWh, bill ${static['bill']:,.2f} "
            f"({time.perf_counter() - started:.1f} s)"
        )
        started = time.perf_counter()
        run = cost_aware_profile(
            sessions,
            spec=spec,
            tz=TZ,
            cap_kw=cap,
            grid_kw=args.grid_kw,
            voltage_v=VOLTAGE_V,
            phases=PHASES,
            step_minutes=STEP_MINUTES,
            margin_kw=args.margin_kw,
        )
        aware = bill(spec, run.intervals)
        timing = {
            "steps": run.solves,
            "mean_ms": statistics.fmean(run.solve_ms) if run.solve_ms else 0.0,
            "p99_ms": percentile(run.solve_ms, 0.99),
            "max_ms": max(run.solve_ms, default=0.0),
        }
        log(
            f"C={cap:g} kW cost-aware: {aware['energy_kwh']:,.1f} kWh, bill ${aware['bill']:,.2f}, "
            f"{run.solves} steps, {timing['mean_ms']:.2f} ms mean / {timing['max_ms']:.1f} ms max "
            f"({time.perf_counter() - started:.1f} s)"
        )
        optimum_intervals, objective, lp_s = offline_optimum(spec, sessions, run.delivered_by_row, args.grid_kw)
        optimum = bill(spec, optimum_intervals)
        log(f"C={cap:g} kW offline optimum: bill ${optimum['bill']:,.2f} (LP ${objective:,.2f}, {lp_s:.1f} s)")
        ratio = aware["bill"] / optimum["bill"] if optimum["bill"] else float("nan")
        results.append({"cap_kw": cap, "policy": "static_cap", **static})
        results.append({"cap_kw": cap, "policy": "cost_aware", **aware, "solve": timing, "vs_optimum": ratio})
        results.append({"cap_kw": cap, "policy": "offline_optimum", **optimum, "lp_seconds": lp_s})
        if args.diagnose:
            log(f"  kWh by price: cost-aware {by_period(spec, run.intervals)}")
            log(f"                optimum    {by_period(spec, optimum_intervals)}")
            log(f"                static     {by_period(spec, managed)}")
            for day in sorted(aware["daily_peak_kw"]):
                log(
                    f"  {day}: peak cost-aware {aware['daily_peak_kw'][day]:6.1f}  optimum "
                    f"{optimum['daily_peak_kw'].get(day, 0):6.1f}  static {static['daily_peak_kw'].get(day, 0):6.1f}"
                )

    print()
    print(
        f"{'cap kW':>6} {'policy':<16} {'kWh':>9} {'% req':>6} {'energy $':>9} {'demand $':>9} {'bill $':>9} "
        f"{'% of opt':>8} {'peak kW':>7} {'solve ms mean/p99/max':>22}"
    )
    for r in results:
        cap_text = "-" if r["cap_kw"] is None else f"{r['cap_kw']:g}"
        if r["policy"] == "cost_aware":
            solve = r["solve"]
            solve_text = f"{solve['mean_ms']:.2f}/{solve['p99_ms']:.1f}/{solve['max_ms']:.1f}"
            extra = f"{100 * r['vs_optimum']:7.1f}% {r['peak_kw']:7.1f} {solve_text:>22}"
        else:
            extra = f"{'':>8} {r['peak_kw']:7.1f}"
        print(
            f"{cap_text:>6} {r['policy']:<16} {r['energy_kwh']:9,.1f} {100 * r['energy_kwh'] / requested:5.1f}% "
            f"{r['energy_cost']:9,.2f} {r['demand_charge']:9,.2f} {r['bill']:9,.2f} {extra}"
        )
    checks = []
    for cap in caps:
        static = next(r for r in results if r["cap_kw"] == cap and r["policy"] == "static_cap")
        aware = next(r for r in results if r["cap_kw"] == cap and r["policy"] == "cost_aware")
        checks.append(
            {
                "cap_kw": cap,
                "within_5_percent_of_optimum": aware["vs_optimum"] <= 1.05,
                "kwh_at_least_static": aware["energy_kwh"] >= static["energy_kwh"] - 1e-6,
                "every_solve_under_50_ms": aware["solve"]["max_ms"] < 50,
            }
        )
    print()
    for c in checks:
        print(
            f"C={c['cap_kw']:g} kW: bill within 5 % of optimum {'yes' if c['within_5_percent_of_optimum'] else 'NO'}; "
            f"kWh >= static cap {'yes' if c['kwh_at_least_static'] else 'NO'}; "
            f"every solve < 50 ms {'yes' if c['every_solve_under_50_ms'] else 'NO'}"
        )
    output = Path(args.output) if args.output else RESULTS / f"cost-{datetime.now(UTC):%Y-%m-%d}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    if not args.diagnose:
        for r in results:
            r.pop("daily_peak_kw", None)
    output.write_text(
        json.dumps(
            {
                "sessions": len(sessions),
                "requested_kwh": requested,
                "evses": EVSES,
                "voltage_v": VOLTAGE_V,
                "max_kw": MAX_KW,
                "grid_kw": args.grid_kw,
                "margin_kw": args.margin_kw,
                "step_minutes": STEP_MINUTES,
                "tariff": spec.name,
                "results": results,
                "checks": checks,
            },
            indent=2,
        )
        + "\n"
    )
    log(f"-> {output}")


if __name__ == "__main__":
    main()
