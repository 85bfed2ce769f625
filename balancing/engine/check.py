"""Independent check of a result against its problem: the invariants every output must keep.

This recomputes everything from the problem and the allocations alone, sharing no solver code
beyond input validation, so the tests and the glue (before it pushes profiles) can trust it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from balancing.engine.model import PHASE_NAMES, parse_problem

ABS_TOL = 1e-6
"""Float slack (A or kW) allowed over a limit, far below what a charger can resolve."""


def _over(load: float, limit: float, tolerance: float) -> bool:
    return load > limit + tolerance + 1e-9 * abs(limit)


def check(problem: dict[str, Any], result: Mapping[str, Any], *, tolerance: float = ABS_TOL) -> list[str]:
    """Return the list of invariant violations of ``result`` for ``problem``; empty means valid.

    Checked: every EVSE has an allocation and nothing else does; inactive EVSEs get 0 (unless
    they carry ``fixed_a``, which must be kept as given); others get 0 or a current in
    ``[min_a, min(max_a, ev_max_a)]`` on their ``step_a`` grid, and with ``max_raise_a`` at most
    that much above ``offered_a`` (or the lowest allowed current, if higher); per node and phase the sum of
    currents below it stays within ``limit_a`` and the power within ``limit_kw``. Where fixed
    currents alone exceed a limit, nothing else below that limit may charge. Raises
    ProblemError if the problem itself is malformed. ``tolerance``: float slack forgiven over a
    limit (A or kW); the default suits checking a result before it is pushed; a negative value
    demands that much to spare.
    """
    parsed = parse_problem(problem)
    violations: list[str] = []
    allocations = result.get("allocations_a")
    if not isinstance(allocations, dict):
        return ["allocations_a: missing or not an object"]
    ids = {evse.id for evse in parsed.evses}
    for extra in sorted(set(allocations) - ids):
        violations.append(f"allocations_a[{extra!r}]: not an EVSE of the problem")
    node_by_id = {node.id: node for node in parsed.nodes}
    phase_count = parsed.phase_count
    load_a: dict[str, list[float]] = {node.id: [0.0] * phase_count for node in parsed.nodes}
    load_kw: dict[str, float] = dict.fromkeys(node_by_id, 0.0)
    fixed_a: dict[str, list[float]] = {node.id: [0.0] * phase_count for node in parsed.nodes}
    fixed_kw: dict[str, float] = dict.fromkeys(node_by_id, 0.0)
    free_under: dict[str, list[bool]] = {node.id: [False] * phase_count for node in parsed.nodes}
    free_kw: dict[str, bool] = dict.fromkeys(node_by_id, False)

    for evse in parsed.evses:
        where = f"allocations_a[{evse.id!r}]"
        x = allocations.get(evse.id)
        if x is None:
            violations.append(f"{where}: missing")
            continue
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x) or x < 0:
            violations.append(f"{where}: {x!r} is not a finite current >= 0")
            continue
        x = float(x)
        if evse.fixed_a is not None:
            if abs(x - evse.fixed_a) > ABS_TOL:
                violations.append(f"{where}: {x:g} A but the charger is fixed at {evse.fixed_a:g} A")
        elif not evse.active:
            if x != 0:
                violations.append(f"{where}: {x:g} A for an inactive EVSE (must be 0)")
        elif x != 0:
            top = evse.max_a if evse.ev_max_a is None else min(evse.max_a, evse.ev_max_a)
            if x < evse.min_a - ABS_TOL:
                violations.append(f"{where}: {x:g} A is below min_a {evse.min_a:g} A (and not 0)")
            if x > top + ABS_TOL:
                violations.append(f"{where}: {x:g} A is above the allowed {top:g} A")
            if parsed.max_raise_a is not None:
                lowest = max(math.ceil(evse.min_a / evse.step_a - 1e-9), 1) * evse.step_a
                base = evse.offered_a or 0.0
                if x > max(base + parsed.max_raise_a, lowest) + ABS_TOL:
                    violations.append(
                        f"{where}: {x:g} A rises more than max_raise_a {parsed.max_raise_a:g} A above {base:g} A"
                    )
            steps = x / evse.step_a
            if abs(steps - round(steps)) > 1e-6:
                violations.append(f"{where}: {x:g} A is not a multiple of step_a {evse.step_a:g} A")
        power_kw = x * len(evse.phases) * parsed.voltage_v / 1000.0
        node_id: str | None = evse.node
        is_fixed = evse.fixed_a is not None
        while node_id is not None:
            for slot in evse.phases:
                load_a[node_id][slot] += x
                if is_fixed:
                    fixed_a[node_id][slot] += x
                elif x:
                    free_under[node_id][slot] = True
            load_kw[node_id] += power_kw
            if is_fixed:
                fixed_kw[node_id] += power_kw
            elif x:
                free_kw[node_id] = True
            node_id = node_by_id[node_id].parent

    for node in parsed.nodes:
        for slot, limit in enumerate(node.limit_a):
            if limit is None:
                continue
            phase = PHASE_NAMES[slot]
            if _over(fixed_a[node.id][slot], limit, tolerance):
                if free_under[node.id][slot]:
                    violations.append(
                        f"node {node.id} {phase}: fixed currents alone exceed {limit:g} A, yet others charge"
                    )
            elif _over(load_a[node.id][slot], limit, tolerance):
                violations.append(f"node {node.id} {phase}: {load_a[node.id][slot]:.6g} A > limit {limit:g} A")
        if node.limit_kw is not None:
            if _over(fixed_kw[node.id], node.limit_kw, tolerance):
                if free_kw[node.id]:
                    violations.append(
                        f"node {node.id} power: fixed currents alone exceed {node.limit_kw:g} kW, yet others charge"
                    )
            elif _over(load_kw[node.id], node.limit_kw, tolerance):
                violations.append(f"node {node.id} power: {load_kw[node.id]:.6g} kW > limit {node.limit_kw:g} kW")
    return violations
