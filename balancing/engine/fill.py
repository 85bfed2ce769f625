"""Weighted progressive filling (water-filling) over linear packing constraints, and its discretisation.

The site is a set of constraints ``sum_i coef[c][i] * x_i <= capacity[c]``: one per node and
phase (coefficient 1 for an EVSE on that phase below the node) and one per node kW limit
(coefficient ``scale_i`` = phases * voltage / 1000 for every kW constraint of EVSE i). Every
coefficient is positive, which is what makes progressive filling exact for weighted max-min
fairness: raise a common level ``t`` and give every EVSE ``x_i = max(floor_i, weight_i * t)``,
capped at ``cap_i``; when a constraint fills up, every EVSE under it stops. The result is the
lexicographically max-min fair allocation of ``x_i / weight_i`` among the vectors that give
each EVSE at least its floor.

Cost: the level only stops at events (EVSEs join when ``weight_i * t`` reaches their floor,
reach their cap, or a constraint fills). Each constraint keeps its load as ``F + R * t``
(frozen part plus growing rate), so an event touches only the constraints of the EVSEs it
changes; the next constraint to fill comes from a heap. That is ``O(E * d + C log C)``-ish for
E EVSEs with d constraints each and C constraints. Unit and scaled coefficients are kept in
separate lists because a plain loop costs half of one that multiplies by a coefficient.
"""

from __future__ import annotations

import heapq
import itertools
import math
import operator
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
    unit: list[list[int]]
    """Per EVSE, the constraints where its coefficient is 1 (node-phase current limits)."""
    scaled: list[list[int]]
    """Per EVSE, the constraints where its coefficient is ``scale[i]`` (node power limits)."""
    scale: list[float]
    """Per EVSE, its coefficient in the ``scaled`` constraints (kW per A)."""

    def room(self, load: list[float], i: int) -> tuple[float, int]:
        """Most current (A) EVSE ``i`` could add given ``load``, and the constraint that sets it (-1: none)."""
        capacity = self.capacity
        best = math.inf
        which = -1
        for c in self.unit[i]:
            left = capacity[c] - load[c]
            if left < best:
                best, which = left, c
        scale = self.scale[i]
        for c in self.scaled[i]:
            left = (capacity[c] - load[c]) / scale
            if left < best:
                best, which = left, c
        return best, which

    def add(self, load: list[float], i: int, amount_a: float) -> None:
        """Book ``amount_a`` more (or less, if negative) of EVSE ``i`` into ``load``."""
        for c in self.unit[i]:
            load[c] += amount_a
        scaled = self.scaled[i]
        if scaled:
            power = amount_a * self.scale[i]
            for c in scaled:
                load[c] += power

    def add_each(self, load: list[float], evses: list[int], amounts_a: list[float]) -> None:
        """``add`` for each EVSE of ``evses`` in turn, its amount taken from ``amounts_a`` (indexed by EVSE)."""
        unit = self.unit
        scaled = self.scaled
        scale = self.scale
        for i in evses:
            amount_a = amounts_a[i]
            for c in unit[i]:
                load[c] += amount_a
            if scaled[i]:
                power = amount_a * scale[i]
                for c in scaled[i]:
                    load[c] += power


def water_fill(
    system: Constraints,
    participants: list[int],
    floors: list[float],
    caps: list[float],
    weights: list[float],
    floor_load: list[float] | None = None,
) -> list[float]:
    """Continuous weighted max-min fair currents (A) for ``participants``, each within [floor, cap].

    The floors must already fit every constraint (the admission stage makes sure of that);
    ``floor_load``, if the caller has it, is the load of those floors per constraint, which
    saves a pass. Returns a list indexed like ``floors``; non-participants keep their floor.

    A constraint's saturation level ``(capacity - F) / R`` only falls when an EVSE under it
    starts growing and only rises when one stops, so the heap is pushed on joins alone; a
    popped entry whose level has since risen is pushed again with the new level (lazy
    increase-key), and one whose constraint no longer grows is dropped.
    """
    capacity = system.capacity
    unit = system.unit
    scaled = system.scaled
    scale = system.scale
    members = system.members
    n_cons = len(capacity)
    if floor_load is None:
        frozen_load = [0.0] * n_cons
        for i in participants:
            system.add(frozen_load, i, floors[i])
    else:
        frozen_load = list(floor_load)
    rate = [0.0] * n_cons
    growing_count = [0] * n_cons
    queued = [math.inf] * n_cons
    saturated = [False] * n_cons

    # 0 = waiting to join, 1 = growing, 2 = frozen, -1 = not taking part
    state = [-1] * len(floors)
    value = list(floors)
    # Levels at which each EVSE joins and reaches its cap; events go by (level, index), sorted
    # by index first and then stably by the level alone (float keys compare much faster).
    join_at = [0.0] * len(floors)
    cap_at = [0.0] * len(floors)
    joins: list[int] = []
    for i in participants:
        floor = floors[i]
        if caps[i] <= floor + EPS:
            state[i] = 2
            continue
        state[i] = 0
        w = weights[i]
        join_at[i] = floor / w
        cap_at[i] = caps[i] / w
        joins.append(i)
    joins.sort()
    cap_events = sorted(joins, key=cap_at.__getitem__)
    joins.sort(key=join_at.__getitem__)
    # EVSEs under a constraint already full at their floors never grow.
    for c in range(n_cons):
        if frozen_load[c] >= capacity[c] - EPS and members[c]:
            saturated[c] = True
            for i in members[c]:
                if state[i] == 0:
                    state[i] = 2
    heap: list[tuple[float, int]] = []
    growing = 0

    def freeze(group: list[int], level: float) -> int:
        """Stop the growing EVSEs of ``group`` at ``level`` (waiting ones stop too); returns how many grew."""
        stopped = 0
        for i in group:
            s = state[i]
            if s != 1:
                if s == 0:
                    state[i] = 2
                continue
            stopped += 1
            w = weights[i]
            x = w * level
            if x < value[i]:
                x = value[i]
            if x > caps[i]:
                x = caps[i]
            value[i] = x
            state[i] = 2
            for c in unit[i]:
                frozen_load[c] += x
                count = growing_count[c] - 1
                growing_count[c] = count
                if count:
                    rate[c] -= w
                else:
                    rate[c] = 0.0
            if scaled[i]:
                a = scale[i]
                power = a * x
                dr = a * w
                for c in scaled[i]:
                    frozen_load[c] += power
                    count = growing_count[c] - 1
                    growing_count[c] = count
                    if count:
                        rate[c] -= dr
                    else:
                        rate[c] = 0.0
        return stopped

    ji = 0
    ci = 0
    n_joins = len(joins)
    n_caps = len(cap_events)
    inf = math.inf
    heappop = heapq.heappop
    heappush = heapq.heappush
    while True:
        if not growing and ji == n_joins:
            break  # nothing grows or will: what is left in the heap and the cap events changes nothing
        t_join = join_at[joins[ji]] if ji < n_joins else inf
        t_cap = cap_at[cap_events[ci]] if ci < n_caps else inf
        t_sat = inf
        while heap:
            t, c = heap[0]
            if t != queued[c] or saturated[c] or not growing_count[c]:
                heappop(heap)
                if t == queued[c]:
                    queued[c] = inf
                continue
            actual = (capacity[c] - frozen_load[c]) / rate[c]
            if actual > t + EPS * (1.0 + abs(t)):
                heappop(heap)
                queued[c] = actual
                heappush(heap, (actual, c))
                continue
            t_sat = t
            break
        if t_join == inf and t_cap == inf and t_sat == inf:
            break
        if t_sat <= t_join and t_sat <= t_cap:
            _, c = heappop(heap)
            queued[c] = inf
            saturated[c] = True
            growing -= freeze(members[c], t_sat)
        elif t_join <= t_cap:
            touched: set[int] = set()
            while ji < n_joins and join_at[joins[ji]] == t_join:
                i = joins[ji]
                ji += 1
                if state[i] != 0:
                    continue
                state[i] = 1
                growing += 1
                floor = value[i]
                w = weights[i]
                cons = unit[i]
                for c in cons:
                    frozen_load[c] -= floor
                    rate[c] += w
                    growing_count[c] += 1
                touched.update(cons)
                if scaled[i]:
                    a = scale[i]
                    power = a * floor
                    dr = a * w
                    for c in scaled[i]:
                        frozen_load[c] -= power
                        rate[c] += dr
                        growing_count[c] += 1
                    touched.update(scaled[i])
            fresh: list[tuple[float, int]] = []
            for c in touched:
                if not saturated[c]:
                    t = (capacity[c] - frozen_load[c]) / rate[c]
                    if t < queued[c]:
                        queued[c] = t
                        fresh.append((t, c))
            if len(fresh) > len(heap):
                # Many at once: drop the entries these supersede (popping would only discard
                # them) and rebuild the heap in O(n) rather than pushing one by one.
                heap = [entry for entry in heap if entry[0] == queued[entry[1]]]
                heap += fresh
                heapq.heapify(heap)
            else:
                for entry in fresh:
                    heappush(heap, entry)
        else:
            capped: list[int] = []
            while ci < n_caps and cap_at[cap_events[ci]] == t_cap:
                i = cap_events[ci]
                ci += 1
                if state[i] == 1:
                    capped.append(i)
            growing -= freeze(capped, t_cap)
    return value


def steps_down(x_a: float, step_a: float) -> int:
    """Whole steps of ``step_a`` at or below ``x_a``, forgiving float noise just under a step."""
    return math.floor(x_a / step_a + 1e-9)


def discretise(
    system: Constraints,
    participants: list[int],
    continuous: list[float],
    floors: list[float],
    caps: list[float],
    steps: list[float],
    weights: list[float],
) -> tuple[list[float], dict[int, int]]:
    """Round every current down to its step, then hand the freed capacity back one step at a time.

    Floors and caps are on the step grid. The hand-back goes to the lowest weighted level
    first (ties: the largest rounding loss, then index), so the result stays within one step
    of the continuous max-min allocation, and every addition is checked against every
    constraint of the EVSE, so no limit is ever crossed. Returns the currents (indexed like
    ``floors``) and, for each EVSE left below its cap, the constraint that stopped it.
    """
    capacity = system.capacity
    load = [0.0] * len(capacity)
    result = [0.0] * len(floors)
    floor = math.floor
    for i in participants:
        step = steps[i]
        x = floor(continuous[i] / step + 1e-9) * step  # steps_down, inlined
        if x < floors[i]:
            x = floors[i]
        if x > caps[i]:
            x = caps[i]
        result[i] = x
    system.add_each(load, participants, result)
    if any(map(operator.gt, load, map(operator.add, capacity, itertools.repeat(EPS)))):
        _repair(system, participants, result, floors, steps, weights, load)
    candidates = [i for i in participants if result[i] + steps[i] <= caps[i] + EPS]
    lost = {i: continuous[i] - result[i] for i in candidates}
    unit = system.unit
    scaled = system.scaled
    scale = system.scale
    inf = math.inf
    blocked_by: dict[int, int] = {}
    # Each round goes by (level, -lost, index): sorted once by the fixed part (by index, then
    # by loss, largest first), then each round by level alone, which keeps the ties in that
    # order (every sort is stable, also in reverse).
    candidates.sort()
    candidates.sort(key=lost.__getitem__, reverse=True)
    while candidates:
        level = {i: (result[i] + steps[i]) / weights[i] for i in candidates}
        again: set[int] = set()
        for i in sorted(candidates, key=level.__getitem__):
            step = steps[i]
            # system.room and system.add, inlined: this loop runs once per step handed back
            left = inf
            which = -1
            for c in unit[i]:
                room = capacity[c] - load[c]
                if room < left:
                    left, which = room, c
            a = scale[i]
            for c in scaled[i]:
                room = (capacity[c] - load[c]) / a
                if room < left:
                    left, which = room, c
            if left + EPS >= step:
                result[i] += step
                for c in unit[i]:
                    load[c] += step
                if scaled[i]:
                    power = step * a
                    for c in scaled[i]:
                        load[c] += power
                if result[i] + step <= caps[i] + EPS:
                    again.add(i)
            else:
                blocked_by[i] = which  # does not fit now, never will: loads only grow here
        candidates = [i for i in candidates if i in again]
    return result, blocked_by


def _repair(
    system: Constraints,
    participants: list[int],
    result: list[float],
    floors: list[float],
    steps: list[float],
    weights: list[float],
    load: list[float],
) -> None:
    """Lower currents on any constraint that float noise pushed over capacity (rare; never below a floor)."""
    capacity = system.capacity
    taking_part: set[int] | None = None
    for c, members in enumerate(system.members):
        if load[c] <= capacity[c] + EPS:
            continue
        if taking_part is None:
            taking_part = set(participants)
        over = sorted((i for i in members if i in taking_part), key=lambda i: (-result[i] / weights[i], i))
        for i in over:
            while load[c] > capacity[c] + EPS and result[i] - steps[i] >= floors[i] - EPS:
                result[i] -= steps[i]
                system.add(load, i, -steps[i])
            if load[c] <= capacity[c] + EPS:
                break
