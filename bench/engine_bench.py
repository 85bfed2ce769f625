"""Time ``balancing.engine.solve`` on 4-level three-phase trees, against one HiGHS LP of the same size.

Run: ``.venv/bin/python bench/engine_bench.py`` (``--profile 10000`` prints a cProfile of one solve).

The tree is site -> panels -> sub-panels -> circuits -> EVSEs, four EVSEs a circuit, four
circuits a sub-panel, four sub-panels a panel, limits at every level (per phase, and kW at the
site) tight enough that each level binds somewhere. 70 % of the EVSEs are single-phase, spread
unevenly over L1/L2/L3; the rest are three-phase; steps of 1 A or 0.1 A; some cars accept less.
Times are the median (and the fastest) of repeats of the whole ``solve`` call: validation, fill,
rounding, notes and the result dict.

The LP is the first level of the sequential max-min LP: maximise the common level t subject to
``x_i >= t``, ``lo_i <= x_i <= hi_i`` and every node limit, one ``scipy.optimize.linprog``
(HiGHS) call. The full sequential LP repeats that (plus a freeze test per EVSE) until every
EVSE is fixed, so the ratio below understates how much faster the engine is than an LP answer.
"""

from __future__ import annotations

import argparse
import cProfile
import math
import pstats
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linprog  # type: ignore[import-untyped, unused-ignore]
from scipy.sparse import coo_matrix, hstack, vstack  # type: ignore[import-untyped, unused-ignore]

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from balancing.engine import check, solve

VOLTAGE_V = 230
FAN_OUT = 4


def make_problem(n_evses: int, seed: int = 7) -> dict[str, Any]:
    """A deterministic 4-level three-phase site with ``n_evses`` EVSEs."""
    rng = random.Random(seed)  # noqa: S311 - reproducible synthetic data, not secrets
    n_circuits = math.ceil(n_evses / FAN_OUT)
    n_subpanels = math.ceil(n_circuits / FAN_OUT)
    n_panels = math.ceil(n_subpanels / FAN_OUT)
    site_a = max(6.0 * n_evses, 32.0)
    nodes: list[dict[str, Any]] = [
        {"id": "site", "parent": None, "limit_a": [site_a] * 3, "limit_kw": 0.9 * site_a * 3 * VOLTAGE_V / 1000}
    ]
    for p in range(n_panels):
        nodes.append({"id": f"P{p}", "parent": "site", "limit_a": [400.0, 400.0, 350.0]})
    for s in range(n_subpanels):
        nodes.append({"id": f"P{s // FAN_OUT}.S{s}", "parent": f"P{s // FAN_OUT}", "limit_a": [100.0, 90.0, 100.0]})
    for c in range(n_circuits):
        s = c // FAN_OUT
        nodes.append({"id": f"C{c}", "parent": f"P{s // FAN_OUT}.S{s}", "limit_a": [40.0, 40.0, 40.0]})
    evses = []
    for i in range(n_evses):
        three = rng.random() < 0.3
        phases = ["L1", "L2", "L3"] if three else [rng.choices(["L1", "L2", "L3"], weights=[5, 3, 2])[0]]
        evse: dict[str, Any] = {
            "id": f"CP{i:05d}/1",
            "node": f"C{i // FAN_OUT}",
            "phases": phases,
            "min_a": 6,
            "max_a": rng.choice([16, 32]),
            "step_a": rng.choice([1, 0.1]),
            "active": rng.random() < 0.9,
            "priority": rng.choice([1, 1, 1, 2]),
        }
        if rng.random() < 0.3:
            evse["ev_max_a"] = rng.choice([10, 13, 16, 20])
        evses.append(evse)
    return {"voltage_v": VOLTAGE_V, "now": "2026-05-01T09:00:00Z", "nodes": nodes, "evses": evses}


def _lp_model(problem: dict[str, Any]) -> tuple[Any, np.ndarray, list[tuple[float, float]], list[float]]:
    """Constraint matrix, limits, current bounds and weights of the active EVSEs of ``problem``."""
    evses = [e for e in problem["evses"] if e["active"]]
    parent = {n["id"]: n["parent"] for n in problem["nodes"]}
    index: dict[tuple[str, int], int] = {}
    limits: list[float] = []
    for node in problem["nodes"]:
        for slot, limit in enumerate(node["limit_a"]):
            index[node["id"], slot] = len(limits)
            limits.append(limit)
        if node.get("limit_kw") is not None:
            index[node["id"], 3] = len(limits)
            limits.append(node["limit_kw"])
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for k, evse in enumerate(evses):
        node = evse["node"]
        while node is not None:
            for phase in evse["phases"]:
                rows.append(index[node, int(phase[1]) - 1])
                cols.append(k)
                vals.append(1.0)
            if (node, 3) in index:
                rows.append(index[node, 3])
                cols.append(k)
                vals.append(len(evse["phases"]) * VOLTAGE_V / 1000)
            node = parent[node]
    matrix = coo_matrix((vals, (rows, cols)), shape=(len(limits), len(evses))).tocsr()
    bounds = [(6.0, float(min(e["max_a"], e.get("ev_max_a", e["max_a"])))) for e in evses]
    weights = [float(e.get("priority", 1)) for e in evses]
    return matrix, np.array(limits), bounds, weights


def lp_max_min(problem: dict[str, Any], *, sequential: bool, budget_s: float = 300.0) -> tuple[float, int]:
    """Seconds and LP solves for max-min fairness by LP (HiGHS): one level, or the whole sequence.

    Each level maximises t subject to ``x_i >= w_i t`` for the EVSEs not yet fixed; the EVSEs
    whose level row has a non-zero dual (they block t) or that reached their bound are fixed at
    ``w_i t`` and the next level is solved, until every EVSE is fixed. That yields the same
    allocation as the engine's progressive filling (before rounding to steps).
    """
    matrix, limits, bounds, weights = _lp_model(problem)
    n = len(bounds)
    fixed: dict[int, float] = {}
    began = time.perf_counter()
    solves = 0
    while len(fixed) < n:
        free = [i for i in range(n) if i not in fixed]
        level_rows = coo_matrix(
            (
                [weights[i] for i in free] + [-1.0] * len(free),
                (list(range(len(free))) * 2, [n] * len(free) + free),
            ),
            shape=(len(free), n + 1),
        )
        a_ub = vstack([hstack([matrix, coo_matrix((matrix.shape[0], 1))]), level_rows]).tocsr()
        b_ub = np.concatenate([limits, np.zeros(len(free))])
        var_bounds = [(fixed[i], fixed[i]) if i in fixed else bounds[i] for i in range(n)] + [(0.0, None)]
        cost = np.zeros(n + 1)
        cost[n] = -1.0
        result = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=var_bounds, method="highs")
        solves += 1
        if result.status != 0:
            raise RuntimeError(result.message)
        if not sequential:
            break
        t = result.x[n]
        duals = result.ineqlin.marginals[matrix.shape[0] :]
        newly = {
            i: min(weights[i] * t, bounds[i][1])
            for k, i in enumerate(free)
            if abs(duals[k]) > 1e-9 or weights[i] * t >= bounds[i][1] - 1e-9
        }
        if not newly:
            newly = {i: max(bounds[i][0], weights[i] * t) for i in free if result.x[i] <= weights[i] * t + 1e-7}
        fixed.update(newly or {i: result.x[i] for i in free})
        if time.perf_counter() - began > budget_s:
            return math.inf, solves
    return time.perf_counter() - began, solves


def timings_ms(fn: Any, repeats: int) -> tuple[float, float]:
    """Median and fastest of ``repeats`` calls, in ms (the fastest shows the cost without noise)."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times), 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10, 100, 1000, 10000])
    parser.add_argument("--sequential-up-to", type=int, default=1000, help="largest size for the sequential LP")
    parser.add_argument("--profile", type=int, metavar="N", help="profile one solve of N EVSEs instead")
    args = parser.parse_args()
    if args.profile:
        problem = make_problem(args.profile)
        profiler = cProfile.Profile()
        profiler.enable()
        solve(problem)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
        return
    columns = [
        ("EVSEs", 6),
        ("nodes", 6),
        ("engine ms", 10),
        ("min ms", 8),
        ("1 LP level ms", 14),
        ("level/engine", 13),
        ("seq. LP ms", 11),
        ("LP solves", 10),
        ("seq/engine", 11),
        ("valid", 6),
    ]
    print(" ".join(f"{name:>{width}}" for name, width in columns))
    for n in args.sizes:
        problem = make_problem(n)
        valid = not check(problem, solve(problem))
        repeats = 200 if n <= 10 else 50 if n <= 100 else 21 if n <= 1000 else 7
        engine_ms, fastest_ms = timings_ms(lambda p=problem: solve(p), repeats)
        level_ms = 1000 * statistics.median(lp_max_min(problem, sequential=False)[0] for _ in range(3))
        if n <= args.sequential_up_to:
            seconds, solves = lp_max_min(problem, sequential=True)
            seq = f"{1000 * seconds:>11.0f} {solves:>10} {1000 * seconds / engine_ms:>10.0f}x"
        else:
            seq = f"{'-':>11} {'-':>10} {'-':>11}"
        print(
            f"{n:>6} {len(problem['nodes']):>6} {engine_ms:>10.2f} {fastest_ms:>8.2f} {level_ms:>14.1f} "
            f"{level_ms / engine_ms:>12.1f}x {seq} {'yes' if valid else 'NO':>6}"
        )


if __name__ == "__main__":
    main()
