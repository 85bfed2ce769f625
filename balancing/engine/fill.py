"""Weighted progressive filling (water-filling) over linear packing constraints, and its discretisation.

The site is a set of constraints ``sum_i coef[c][i] * x_i <= capacity[c]``: one per node and
phase (coefficient 1 for an EVSE on that phase below the node) and one per node kW limit
(coefficient phases * voltage / 1000). Every coefficient is positive, which is what makes
progressive filling exact for weighted max-min fairness: raise a common level ``t`` and give
every EVSE ``x_i = max(floor_i, weight_i * t)``, capped at ``cap_i``; when a constraint fills
up, every EVSE under it stops. The result is the lexicographically max-min fair allocation of
``x_i / weight_i`` among the vectors that give each EVSE at least its floor.

Cost: the level only stops at events (an EVSE joins when ``weight_i * t`` reaches its floor,
an EVSE reaches its cap, a constraint fills). Each constraint keeps its load as ``F + R * t``
(frozen part plus growing rate), so an event touches only the constraints of the EVSEs it
changes; the next constraint to fill comes from a heap with lazy deletion. That is
``O((E * d + C) log C)`` for E EVSEs with d constraints each and C constraints.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

EPS = 1e-9
"""Float noise (A or kW) forgiven when testing whether a current fits a limit exactly.

Far below what ``check`` tolerates (1e-6), so a limit met exactly (3 x 21 A on 63 A) counts
as met, while float noise from steps like 0.1 A can never add up to a real overload."""


@dataclass(slots=True)
class Constraints:
    """Constraint system shared by every stage; indices are EVSE positions in the sorted problem."""

    capacity: list[float]
    """Remaining capacity per constraint (A, or kW for power constraints), after fixed currents."""
    members: list[list[int]]
    """EVSE indices under each constraint."""
    evse_cons: list[list[int]]
    """Constraint indices of each EVSE."""
    evse_coef: list[list[float]]
    """Coefficient of each EVSE in each of its constraints (same order as ``evse_cons``)."""


def water_fill(
    system: Constraints,
    participants: list[int],
    floors: list[float],
    caps: list[float],
    weights: list[float],
) -> dict[int, float]:
    """Continuous weighted max-min fair currents (A) for ``participants``, each within [floor, cap].

    The floors must already fit every constraint (the admission stage makes sure of that).
    Returns the current of each participant; other EVSEs are not counted.
    """
    capacity = system.capacity
    evse_cons = system.evse_cons
    evse_coef = system.evse_coef
    members = system.members
    n_cons = len(capacity)
    frozen_load = [0.0] * n_cons
    rate = [0.0] * n_cons
    growing_count = [0] * n_cons
    version = [0] * n_cons
    touched = [False] * n_cons

    # 0 = waiting to join, 1 = growing, 2 = frozen
    state: dict[int, int] = {}
    value: dict[int, float] = {}
    joins: list[tuple[float, int]] = []
    cap_events: list[tuple[float, int]] = []
    for i in participants:
        floor = floors[i]
        value[i] = floor
        for c, a in zip(evse_cons[i], evse_coef[i], strict=True):
            frozen_load[c] += a * floor
            touched[c] = True
        if caps[i] <= floor + EPS:
            state[i] = 2
            continue
        state[i] = 0
        w = weights[i]
        joins.append((floor / w, i))
        cap_events.append((caps[i] / w, i))
    joins.sort()
    cap_events.sort()
    heap: list[tuple[float, int, int]] = []
    saturated = [False] * n_cons
    for c in range(n_cons):
        if touched[c] and frozen_load[c] >= capacity[c] - EPS:
            saturated[c] = True

    def push(c: int) -> None:
        version[c] += 1
        if growing_count[c]:
            heapq.heappush(heap, ((capacity[c] - frozen_load[c]) / rate[c], version[c], c))

    def freeze(i: int, level: float) -> None:
        x = weights[i] * level
        if x < value[i]:
            x = value[i]
        value[i] = x
        state[i] = 2
        w = weights[i]
        for c, a in zip(evse_cons[i], evse_coef[i], strict=True):
            frozen_load[c] += a * x
            growing_count[c] -= 1
            if growing_count[c]:
                rate[c] -= a * w
            else:
                rate[c] = 0.0
            push(c)

    # EVSEs under a constraint already full at their floors never grow.
    for c in range(n_cons):
        if saturated[c]:
            for i in members[c]:
                if state.get(i) == 0:
                    state[i] = 2

    ji = 0
    ci = 0
    n_joins = len(joins)
    n_caps = len(cap_events)
    inf = math.inf
    while True:
        t_join = joins[ji][0] if ji < n_joins else inf
        t_cap = cap_events[ci][0] if ci < n_caps else inf
        while heap and (heap[0][1] != version[heap[0][2]] or saturated[heap[0][2]]):
            heapq.heappop(heap)
        t_sat = heap[0][0] if heap else inf
        if t_join == inf and t_cap == inf and t_sat == inf:
            break
        if t_sat <= t_join and t_sat <= t_cap:
            _, _, c = heapq.heappop(heap)
            saturated[c] = True
            for i in members[c]:
                s = state.get(i)
                if s == 1:
                    freeze(i, t_sat)
                elif s == 0:
                    state[i] = 2
        elif t_join <= t_cap:
            _, i = joins[ji]
            ji += 1
            if state[i] != 0:
                continue
            state[i] = 1
            floor = value[i]
            w = weights[i]
            for c, a in zip(evse_cons[i], evse_coef[i], strict=True):
                frozen_load[c] -= a * floor
                rate[c] += a * w
                growing_count[c] += 1
                push(c)
        else:
            _, i = cap_events[ci]
            ci += 1
            if state[i] == 1:
                freeze(i, t_cap)
                value[i] = min(value[i], caps[i])
    return value


def steps_down(x_a: float, step_a: float) -> int:
    """Whole steps of ``step_a`` at or below ``x_a``, forgiving float noise just under a step."""
    return math.floor(x_a / step_a + 1e-9)


def discretise(
    system: Constraints,
    participants: list[int],
    continuous: dict[int, float],
    floors: list[float],
    caps: list[float],
    steps: list[float],
    weights: list[float],
) -> dict[int, float]:
    """Round every current down to its step, then hand the freed capacity back one step at a time.

    Floors and caps are on the step grid. The hand-back goes to the lowest weighted level
    first (ties: the largest rounding loss, then index), so the result stays within one step
    of the continuous max-min allocation, and every addition is checked against every
    constraint of the EVSE, so no limit is ever crossed.
    """
    capacity = system.capacity
    evse_cons = system.evse_cons
    evse_coef = system.evse_coef
    load = [0.0] * len(capacity)
    result: dict[int, float] = {}
    for i in participants:
        step = steps[i]
        x = steps_down(continuous[i], step) * step
        if x < floors[i]:
            x = floors[i]
        if x > caps[i]:
            x = caps[i]
        result[i] = x
        for c, a in zip(evse_cons[i], evse_coef[i], strict=True):
            load[c] += a * x
    _repair(system, participants, result, floors, steps, weights, load)
    candidates = [i for i in participants if result[i] + steps[i] <= caps[i] + EPS]
    lost = {i: continuous[i] - result[i] for i in candidates}
    while candidates:
        candidates.sort(key=lambda i: ((result[i] + steps[i]) / weights[i], -lost[i], i))
        again: list[int] = []
        for i in candidates:
            step = steps[i]
            cons = evse_cons[i]
            coefs = evse_coef[i]
            if all(load[c] + a * step <= capacity[c] + EPS for c, a in zip(cons, coefs, strict=True)):
                result[i] += step
                for c, a in zip(cons, coefs, strict=True):
                    load[c] += a * step
                if result[i] + step <= caps[i] + EPS:
                    again.append(i)
            # An EVSE that does not fit now never will: loads only grow in this loop.
        candidates = again
    return result


def _repair(
    system: Constraints,
    participants: list[int],
    result: dict[int, float],
    floors: list[float],
    steps: list[float],
    weights: list[float],
    load: list[float],
) -> None:
    """Lower currents on any constraint that float noise pushed over capacity (rare; never below a floor)."""
    capacity = system.capacity
    for c, members in enumerate(system.members):
        if load[c] <= capacity[c] + EPS:
            continue
        over = sorted((i for i in members if i in result), key=lambda i: (-result[i] / weights[i], i))
        for i in over:
            while load[c] > capacity[c] + EPS and result[i] - steps[i] >= floors[i] - EPS:
                result[i] -= steps[i]
                for c2, a in zip(system.evse_cons[i], system.evse_coef[i], strict=True):
                    load[c2] -= a * steps[i]
            if load[c] <= capacity[c] + EPS:
                break
