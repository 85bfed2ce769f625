"""Reference solutions by linear programming (scipy's HiGHS), independent of the engine's code.

``lex_max_min`` solves weighted max-min fairness as a sequence of LPs: maximise the common
level t with ``x_i >= w_i t`` for the EVSEs not yet fixed, then fix every EVSE that cannot
exceed its level at that optimum, and repeat.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linprog  # type: ignore[import-untyped, unused-ignore]


def constraint_matrix(problem: dict[str, Any], ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``A x <= b`` of every node-phase and node-kW limit, for the EVSEs ``ids``."""
    parent = {node["id"]: node.get("parent") for node in problem["nodes"]}
    node_of = {e["id"]: e for e in problem["evses"]}
    phase_count = problem.get("phases") or (
        1 if len(next(n for n in problem["nodes"] if n.get("parent") is None).get("limit_a") or [0, 0, 0]) == 1 else 3
    )
    rows: list[np.ndarray] = []
    limits: list[float] = []
    voltage = float(problem["voltage_v"])
    for node in problem["nodes"]:
        below = []
        for k, evse_id in enumerate(ids):
            walk = node_of[evse_id]["node"]
            while walk is not None and walk != node["id"]:
                walk = parent[walk]
            if walk == node["id"]:
                below.append(k)
        for slot, limit in enumerate((node.get("limit_a") or [])[:phase_count]):
            if limit is None:
                continue
            row = np.zeros(len(ids))
            for k in below:
                if f"L{slot + 1}" in node_of[ids[k]]["phases"]:
                    row[k] = 1.0
            rows.append(row)
            limits.append(float(limit))
        if node.get("limit_kw") is not None:
            row = np.zeros(len(ids))
            for k in below:
                row[k] = len(node_of[ids[k]]["phases"]) * voltage / 1000.0
            rows.append(row)
            limits.append(float(node["limit_kw"]))
    if not rows:
        return np.zeros((0, len(ids))), np.zeros(0)
    return np.array(rows), np.array(limits)


def lex_max_min(
    a_ub: np.ndarray, b_ub: np.ndarray, floors: list[float], caps: list[float], weights: list[float]
) -> list[float]:
    """Weighted lexicographic max-min allocation with ``floor_i <= x_i <= cap_i`` and ``A x <= b``."""
    n = len(floors)
    fixed: dict[int, float] = {}
    t_top = max((c / w for c, w in zip(caps, weights, strict=True)), default=0.0) + 1.0
    while len(fixed) < n:
        free = [i for i in range(n) if i not in fixed]
        bounds = [(fixed[i], fixed[i]) if i in fixed else (floors[i], caps[i]) for i in range(n)]
        rows = [np.append(row, 0.0) for row in a_ub]
        limits = list(b_ub)
        for i in free:
            row = np.zeros(n + 1)
            row[i] = -1.0
            row[n] = weights[i]
            rows.append(row)
            limits.append(0.0)
        cost = np.zeros(n + 1)
        cost[n] = -1.0
        level = linprog(cost, A_ub=np.array(rows), b_ub=np.array(limits), bounds=[*bounds, (0, t_top)], method="highs")
        if level.status != 0:
            raise AssertionError(f"level LP failed: {level.message}")
        t = level.x[n]
        newly = {}
        for i in free:
            probe = np.zeros(n + 1)
            probe[i] = -1.0
            top = linprog(probe, A_ub=np.array(rows), b_ub=np.array(limits), bounds=[*bounds, (t, t)], method="highs")
            base = max(floors[i], weights[i] * t)
            if top.status != 0 or top.x[i] <= base + 1e-7:
                newly[i] = min(base, caps[i])
        if not newly:  # numerical stalemate: fix the rest where they stand
            newly = {i: max(floors[i], weights[i] * t) for i in free}
        fixed.update(newly)
    return [fixed[i] for i in range(n)]
