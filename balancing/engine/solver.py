"""The balancing policy: bounds per EVSE, who pauses, deadline floors, fair fill, notes.

Stages, each keeping every limit:

1. Fixed currents (``fixed_a``: an offline charger keeping its last profile, an unconfirmed
   lowering) are booked first: nobody can change them.
2. Bounds: each active EVSE may take 0 or a current in ``[lo, hi]`` on its step grid, where
   ``hi`` is the smallest of the charger's max, the car's acceptance, the measured draw plus
   a margin (capacity the car leaves unused goes to others) and the current that finishes
   its energy need within one period.
3. Admission: every admitted EVSE gets ``lo``; when not all fit, EVSEs are admitted in rotation
   order (see ``_admission_key``) and the rest pause. Recently started ones are kept on for
   ``min_on_s``; recently paused ones stay off for ``min_off_s``. With the problem's
   ``deadline_first`` (the default), a deadline-aware EVSE asks here for its required current
   (below) instead of its minimum: needs of cars leaving soon come before the minimums of
   cars that can wait, at the price of more pauses; without it the fewest pause. When what
   is left for the next EVSE is a sliver below its minimum, an admitted EVSE above its own
   minimum lends the difference (``_lend``), so the sliver is used instead of stranded.
4. Deadline floors: EVSEs that said how much energy they need and when they leave get the
   current that finishes it in time (remaining energy / time left), least laxity first.
5. Weighted max-min fair filling of what is left (``fill.water_fill``), then rounding down to
   each step and handing the rounding slack back (``fill.discretise``).
"""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field
from typing import Any

from balancing.engine.fill import EPS, Constraints, discretise, steps_down, water_fill
from balancing.engine.model import PHASE_NAMES, Evse, Node, Problem, parse_problem
from balancing.engine.result import Result

_KW = 3
"""Position of the power constraint in a node's four constraint slots (L1, L2, L3, kW)."""


@dataclass(slots=True)
class _Site:
    """Constraint system of a problem plus what the notes need to name each constraint."""

    system: Constraints
    cons_node: list[str]
    cons_slot: list[int]
    cons_limit: list[float]
    order: list[Node]
    """The nodes, every parent before its children."""
    described: dict[int, str] = field(default_factory=dict)
    limited_by: dict[int, str] = field(default_factory=dict)
    """Reason text per blocking constraint, built once."""


_FORMATTED: dict[float, str] = {}


def _fmt(value: float) -> str:
    """A current or power for a note: no trailing zeros, at most three decimals (memoised: values repeat)."""
    text = _FORMATTED.get(value)
    if text is None:
        text = f"{value:.3f}".rstrip("0").rstrip(".")
        if len(_FORMATTED) < 4096:
            _FORMATTED[value] = text
    return text


def _build_site(problem: Problem) -> _Site:
    """One constraint per (node, phase) with a limit_a and per node with a limit_kw.

    Each node gets, per phase, the list of constraints from itself up to the root, built once
    from its parent's list, so an EVSE's constraints are a concatenation, not a tree walk.
    A node without a limit on a phase shares its parent's list (they are never modified).
    """
    capacity: list[float] = []
    cons_node: list[str] = []
    cons_slot: list[int] = []
    phase_chain: dict[str, list[list[int]]] = {}
    kw_chain: dict[str, list[int]] = {}
    order = _top_down(problem)
    own_index: dict[str, list[int]] = {}
    for node in order:
        node_id = node.id
        own = [-1, -1, -1, -1]
        for slot, limit in enumerate(node.limit_a):
            if limit is not None:
                own[slot] = len(capacity)
                capacity.append(limit)
                cons_node.append(node_id)
                cons_slot.append(slot)
        if node.limit_kw is not None:
            own[_KW] = len(capacity)
            capacity.append(node.limit_kw)
            cons_node.append(node_id)
            cons_slot.append(_KW)
        own_index[node_id] = own
        if node.parent is None:
            above: list[list[int]] = [[], [], []]
            above_kw: list[int] = []
        else:
            above = phase_chain[node.parent]
            above_kw = kw_chain[node.parent]
        phase_chain[node_id] = [above[k] if own[k] < 0 else [own[k], *above[k]] for k in range(len(node.limit_a))]
        kw_chain[node_id] = above_kw if own[_KW] < 0 else [own[_KW], *above_kw]
    unit: list[list[int]] = []
    scaled: list[list[int]] = []
    scale: list[float] = []
    kw_per_a = problem.voltage_v / 1000.0
    below: dict[str, list[list[int]]] = {node.id: [[], [], [], []] for node in order}
    for i, evse in enumerate(problem.evses):
        node_id = evse.node
        phases = evse.phases
        chains = phase_chain[node_id]
        attached = below[node_id]
        if len(phases) == 1:
            slot = phases[0]
            unit.append(chains[slot])
            attached[slot].append(i)
        else:
            unit.append([c for slot in phases for c in chains[slot]])
            for slot in phases:
                attached[slot].append(i)
        attached[_KW].append(i)
        scaled.append(kw_chain[node_id])
        scale.append(len(phases) * kw_per_a)
    # Members of a node's constraints are the EVSEs of its subtree: gather them bottom-up.
    members: list[list[int]] = [[]] * len(capacity)  # every entry is replaced below
    for node in reversed(order):
        lists = below[node.id]
        if node.parent is not None:
            up = below[node.parent]
            up[0].extend(lists[0])
            up[1].extend(lists[1])
            up[2].extend(lists[2])
            up[3].extend(lists[3])
        for slot, c in enumerate(own_index[node.id]):
            if c >= 0:
                members[c] = lists[slot]
    system = Constraints(capacity, members, unit, scaled, scale)
    return _Site(system, cons_node, cons_slot, list(capacity), order)


def _top_down(problem: Problem) -> list[Node]:
    """Nodes ordered so that every parent comes before its children (root first)."""
    children: dict[str, list[Node]] = {}
    root = None
    for node in problem.nodes:
        if node.parent is None:
            root = node
        else:
            children.setdefault(node.parent, []).append(node)
    order: list[Node] = [] if root is None else [root]
    for node in order:
        order.extend(children.get(node.id, ()))
    return order


def _describe(site: _Site, c: int) -> str:
    """How a note names constraint ``c``, e.g. ``node panel-1 L2 (63 A)``; built once per constraint."""
    known = site.described.get(c)
    if known is not None:
        return known
    text = _describe_new(site, c)
    site.described[c] = text
    return text


def _describe_new(site: _Site, c: int) -> str:
    slot = site.cons_slot[c]
    if slot == _KW:
        return f"node {site.cons_node[c]} power ({_fmt(site.cons_limit[c])} kW)"
    return f"node {site.cons_node[c]} {PHASE_NAMES[slot]} ({_fmt(site.cons_limit[c])} A)"


@dataclass(slots=True)
class _Plan:
    """Per-EVSE working state of one solve, indexed like ``problem.evses``."""

    lo: list[float]
    hi: list[float]
    hi_reason: list[str]
    floors: list[float]
    steps: list[float]
    weights: list[float]
    required_a: list[float | None]
    laxity_s: list[float | None]


def _ceil_steps(x_a: float, step_a: float) -> float:
    return math.ceil(x_a / step_a - 1e-9) * step_a


def _bounds(problem: Problem, evse: Evse) -> tuple[float, float, str, float | None, float | None]:
    """Lowest and highest current (A) on the step grid, why the highest, required current and laxity."""
    step = evse.step_a
    lo = _ceil_steps(evse.min_a, step)
    if lo <= 0:
        lo = step
    hi = evse.max_a
    reason = f"charger max {_fmt(evse.max_a)} A"
    if evse.ev_max_a is not None and evse.ev_max_a < hi:
        hi = evse.ev_max_a
        reason = f"car accepts {_fmt(evse.ev_max_a)} A"
    measured, offered = evse.measured_a, evse.offered_a
    margin = problem.unused_margin_a
    if measured is not None and offered is not None and measured < offered - margin / 2:
        held = max(measured + margin, lo)
        if held < hi:
            hi = held
            reason = f"car draws {_fmt(measured)} A of {_fmt(offered)} A offered, held at {_fmt(held)} A"
    if problem.max_raise_a is not None:
        base = offered or 0.0
        stepped = max(base + problem.max_raise_a, lo)
        if stepped < hi:
            hi = stepped
            reason = f"raised at most {_fmt(problem.max_raise_a)} A per run, from {_fmt(base)} A"
    required: float | None = None
    laxity: float | None = None
    amps_per_kw = 1000.0 / (len(evse.phases) * problem.voltage_v)
    if evse.energy_needed_kwh is not None:
        # Done within the period, or by departure when the car leaves before the next run.
        until_s = problem.period_s
        if evse.departure is not None:
            left_s = (evse.departure - problem.now).total_seconds()
            if 0 < left_s < until_s:
                until_s = left_s
        within_period = evse.energy_needed_kwh * amps_per_kw * 3600.0 / until_s
        cap = max(_ceil_steps(within_period, step), lo) if evse.energy_needed_kwh > 0 else 0.0
        if cap < hi:
            hi = cap
            done = "by departure" if until_s < problem.period_s else "within period"
            reason = "energy need met" if cap == 0 else f"{_fmt(evse.energy_needed_kwh)} kWh left, done {done}"
        if evse.departure is not None:
            left_s = (evse.departure - problem.now).total_seconds()
            if left_s > 0:
                required = evse.energy_needed_kwh * amps_per_kw * 3600.0 / left_s
                top = max(min(hi, evse.max_a), lo)
                laxity = left_s - evse.energy_needed_kwh * amps_per_kw * 3600.0 / top
    return lo, steps_down(hi, step) * step, reason, required, laxity


def _admission_key(problem: Problem, evse: Evse, laxity: float | None) -> tuple[Any, ...]:
    """Who keeps charging when not all can: lower tuples first.

    Kept on first: EVSEs within ``min_on_s`` of starting, and cars known not to resume after a
    pause (unless already paused); then higher priority; cars that would finish with less than
    their minimum current within the period come last; then EVSEs with a deadline by least
    laxity, then the rotation: least energy this session, longest waiting, shortest charging.
    """
    now = problem.now
    on_s = (now - evse.charging_since).total_seconds() if evse.charging_since else 0.0
    off_s = (now - evse.paused_since).total_seconds() if evse.paused_since else 0.0
    recently_on = evse.charging_since is not None and on_s < problem.min_on_s
    would_not_resume = not evse.resumes_after_pause and evse.paused_since is None
    protected = 0 if recently_on or would_not_resume else 1
    urgency = (0, laxity) if laxity is not None else (1, 0.0)
    # A car whose remaining energy takes less than its minimum current for one period would
    # leave most of its pilot unused (the rest of the limit stays idle): it comes after the rest.
    tail = 0
    if evse.energy_needed_kwh is not None:
        amps = evse.energy_needed_kwh * 1000.0 / (len(evse.phases) * problem.voltage_v) * 3600.0 / problem.period_s
        tail = 1 if amps < evse.min_a else 0
    return (protected, -evse.priority, tail, urgency, evse.session_kwh or 0.0, -off_s, on_s, evse.id)


def solve_problem(problem: Problem) -> Result:
    """Allocate currents for a validated problem and return the result dict (see package docs)."""
    site = _build_site(problem)
    system = site.system
    capacity = system.capacity
    room = system.room
    book = system.add
    evses = problem.evses
    n = len(evses)
    allocation = [0.0] * n
    reasons = [""] * n
    warnings: list[str] = []
    plan = _Plan(
        lo=[0.0] * n,
        hi=[0.0] * n,
        hi_reason=[""] * n,
        floors=[0.0] * n,
        steps=[e.step_a for e in evses],
        weights=[e.priority for e in evses],
        required_a=[None] * n,
        laxity_s=[None] * n,
    )

    fixed_load = [0.0] * len(capacity)
    for i, evse in enumerate(evses):
        if evse.fixed_a is not None:
            allocation[i] = evse.fixed_a
            reasons[i] = f"fixed at {_fmt(evse.fixed_a)} A: the charger cannot take a new limit now"
            book(fixed_load, i, evse.fixed_a)
    if any(fixed_load):
        for c, fixed in enumerate(fixed_load):
            if fixed:
                capacity[c] -= fixed
    if min(capacity, default=0.0) < 0:
        for c, left in enumerate(capacity):
            if left < -EPS:
                warnings.append(f"{_describe(site, c)} is overloaded by fixed currents alone: nothing else can charge")
            if left < 0:
                capacity[c] = 0.0

    now = problem.now
    candidates: list[int] = []
    # Without a measured draw or an energy need, bounds depend on four fields that repeat
    # across a site. Zeros stay out of the memo: 0.0 and -0.0 are one key but print apart.
    bounds_of: dict[tuple[float, float, float, float | None], tuple[float, float, str, None, None]] = {}
    plan_lo, plan_hi, plan_reason = plan.lo, plan.hi, plan.hi_reason
    for i, evse in enumerate(evses):
        if evse.fixed_a is not None:
            continue
        if not evse.active:
            reasons[i] = "inactive"
            continue
        if (
            evse.measured_a is None
            and evse.energy_needed_kwh is None
            and evse.max_a
            and evse.ev_max_a != 0
            and (evse.offered_a is None or problem.max_raise_a is None)
        ):
            key = (evse.step_a, evse.min_a, evse.max_a, evse.ev_max_a)
            simple = bounds_of.get(key)
            if simple is None:
                lo, hi, hi_reason, _, _ = _bounds(problem, evse)
                simple = bounds_of[key] = (lo, hi, hi_reason, None, None)
            lo, hi, hi_reason, required, laxity = simple
        else:
            lo, hi, hi_reason, required, laxity = _bounds(problem, evse)
            plan.required_a[i], plan.laxity_s[i] = required, laxity
        plan_lo[i], plan_hi[i], plan_reason[i] = lo, hi, hi_reason
        if hi < lo - EPS:
            reasons[i] = (
                "paused: energy need met"
                if hi_reason == "energy need met"
                else f"paused: {hi_reason}, below the minimum {_fmt(lo)} A"
            )
            continue
        if evse.paused_since is not None:
            off_s = (now - evse.paused_since).total_seconds()
            if off_s < problem.min_off_s:
                reasons[i] = f"paused: minimum off time ({_fmt(math.ceil(problem.min_off_s - off_s))} s left)"
                continue
        candidates.append(i)

    # What each candidate asks for at admission: its minimum; with ``deadline_first``, a
    # deadline-aware EVSE asks for the current that finishes its energy by departure, so that
    # needs of cars leaving soon come before the minimums of cars that can wait.
    wants = plan.floors
    for i in candidates:
        want = plan.lo[i]
        required = plan.required_a[i]
        if required is not None and problem.deadline_first:
            want = max(want, min(plan.hi[i], _ceil_steps(required, plan.steps[i])))
        wants[i] = want
    floor_load = [0.0] * len(capacity)
    system.add_each(floor_load, candidates, wants)
    if all(load <= cap + EPS for load, cap in zip(floor_load, capacity, strict=True)):
        admitted = candidates  # everyone fits with what they ask for: nobody needs to pause
        candidates = []
    else:
        floor_load = [0.0] * len(capacity)
        admitted = []
        candidates.sort(key=lambda i: _admission_key(problem, evses[i], plan.laxity_s[i]))
    lenders: list[int] = []  # admitted EVSEs that asked for more than their minimum, most urgent first
    absorbs = [False] * len(capacity)  # per constraint: an admitted EVSE under it can still rise
    # Only EVSEs asking for more than their minimum can lend: without any, skip the bookkeeping.
    lending = problem.deadline_first and any(plan.required_a[i] is not None for i in candidates)
    for i in candidates:
        lo = plan.lo[i]
        left, blocked = room(floor_load, i)
        if (
            left + EPS < lo
            and left > EPS
            and lenders
            and not absorbs[blocked]
            and _lend(system, floor_load, plan, wants, lenders, i, absorbs)
        ):
            left = lo  # a less urgent EVSE gave up enough for this one's minimum
        if left + EPS < lo:
            reasons[i] = f"paused: rotation, not enough capacity at {_describe(site, blocked)} for {_fmt(lo)} A"
            if not evses[i].resumes_after_pause:
                reasons[i] += " (this car may not resume by itself)"
            wants[i] = 0.0
            continue
        step = plan.steps[i]
        take = wants[i] if left == math.inf else max(lo, min(wants[i], steps_down(left + EPS, step) * step))
        wants[i] = take
        book(floor_load, i, take)
        admitted.append(i)
        if lending:
            if take > lo + EPS:
                lenders.append(i)
            if take < plan.hi[i] - EPS:
                _can_rise(system, i, absorbs)

    urgent = sorted(
        (i for i in admitted if plan.required_a[i] is not None),
        key=lambda i: (plan.laxity_s[i], evses[i].id),
    )
    for i in urgent:
        required = plan.required_a[i]
        if required is None:
            continue
        step = plan.steps[i]
        target = min(plan.hi[i], _ceil_steps(required, step))
        extra = target - plan.floors[i]
        if extra <= EPS:
            continue
        extra = min(extra, room(floor_load, i)[0] + EPS)
        extra = steps_down(max(extra, 0.0), step) * step
        if extra > 0:
            plan.floors[i] += extra
            book(floor_load, i, extra)

    continuous = water_fill(system, admitted, plan.floors, plan.hi, plan.weights, floor_load)
    values, blocked_by = discretise(system, admitted, continuous, plan.floors, plan.hi, plan.steps, plan.weights)
    for i in admitted:
        allocation[i] = values[i]
        reasons[i] = _reason(site, blocked_by, plan, i, values[i])
    return _result(problem, site, allocation, reasons, warnings)


_LEND_TRIES = 16
"""How many admitted EVSEs are asked to lend current to one that would pause (bounds the cost)."""


def _can_rise(system: Constraints, i: int, absorbs: list[bool]) -> None:
    """Mark the constraints of admitted EVSE ``i``, which is below its highest current: the fair
    filling will give it what is left there, so nothing left there is stranded."""
    for c in system.unit[i]:
        absorbs[c] = True
    for c in system.scaled[i]:
        absorbs[c] = True


def _lend(
    system: Constraints,
    load: list[float],
    plan: _Plan,
    wants: list[float],
    lenders: list[int],
    i: int,
    absorbs: list[bool],
) -> bool:
    """Admit EVSE ``i`` at its minimum by lowering a less urgent admitted EVSE that asked for more.

    Used when only a sliver below ``i``'s minimum is left (e.g. 4 A of a 36 A phase after one
    car took 32 A): that sliver would be stranded, while lending ``minimum - sliver`` from an
    EVSE above its own minimum puts the whole limit to use. Lenders are tried least urgent
    first; one whose lowering does not free the constraint that blocks ``i`` is left as it was.
    """
    lo = plan.lo[i]
    for j in reversed(lenders[-_LEND_TRIES:]):
        short = lo - system.room(load, i)[0]
        give = _ceil_steps(short, plan.steps[j])
        if give >= lo - EPS:
            return False  # lending would only move current around, not put the sliver to use
        if wants[j] - give < plan.lo[j] - EPS:
            continue
        system.add(load, j, -give)
        if system.room(load, i)[0] + EPS >= lo:
            wants[j] -= give
            if wants[j] <= plan.lo[j] + EPS:
                lenders.remove(j)
            _can_rise(system, j, absorbs)
            return True
        system.add(load, j, give)
    return False


def _reason(site: _Site, blocked_by: dict[int, int], plan: _Plan, i: int, x: float) -> str:
    if x >= plan.hi[i] - EPS:
        reason = plan.hi_reason[i]
    else:
        c = blocked_by.get(i, -1)
        reason = site.limited_by.get(c) or _limited_by(site, c)
    required = plan.required_a[i]
    if required is not None:
        reason += f"; needs {required:.1f} A to finish by departure"
    return reason


def _limited_by(site: _Site, c: int) -> str:
    text = site.limited_by[c] = f"limited by {_describe(site, c)}" if c >= 0 else "rounded to its step"
    return text


def _tidy(x: float) -> float:
    rounded = round(x, 6)
    return rounded if abs(rounded - x) < 1e-9 else x


def _show(x: float, shown: dict[float, tuple[float, str]]) -> tuple[float, str]:
    """A current as the result gives it (float noise tidied) and as a note prints it."""
    tidy = _tidy(x)
    pair = shown[x] = (tidy, _fmt(tidy))
    return pair


def _round6(x: float) -> float:
    """``round(x, 6)``, skipping the costly rounding for whole numbers (which it returns unchanged)."""
    return x if x.is_integer() else round(x, 6)


def _result(problem: Problem, site: _Site, allocation: list[float], reasons: list[str], warnings: list[str]) -> Result:
    phase_count = problem.phase_count
    node_a = {node.id: [0.0] * phase_count for node in problem.nodes}
    node_kw = dict.fromkeys(node_a, 0.0)
    kw_per_a = problem.voltage_v / 1000.0
    evses = problem.evses
    ids = [evse.id for evse in evses]
    # Few distinct currents repeat many times: tidy and print each once. 0.0 and -0.0 are one
    # key but print apart, so zeros are not memoised.
    shown: dict[float, tuple[float, str]] = {}
    pairs = [(shown.get(x) if x else None) or _show(x, shown) for x in allocation]
    tidied = [x for x, _ in pairs]
    notes = [f"{evse_id}: {text} A, {reason}" for evse_id, (_, text), reason in zip(ids, pairs, reasons, strict=True)]
    paused: list[str] = []
    for evse, x in zip(evses, tidied, strict=True):
        if x:
            row = node_a[evse.node]
            for slot in evse.phases:
                row[slot] += x
            node_kw[evse.node] += x * len(evse.phases) * kw_per_a
        elif evse.active or evse.fixed_a is not None:
            paused.append(evse.id)
    for node in reversed(site.order):
        if node.parent is not None:
            row, up = node_a[node.id], node_a[node.parent]
            for slot in range(phase_count):
                up[slot] += row[slot]
            node_kw[node.parent] += node_kw[node.id]
    return {
        "allocations_a": dict(zip(ids, tidied, strict=True)),
        "node_load_a": {k: [_round6(v) for v in row] for k, row in node_a.items()},
        "node_load_kw": {k: _round6(v) for k, v in node_kw.items()},
        "paused": paused,
        "notes": notes,
        "reasons": dict(zip(ids, reasons, strict=True)),
        "warnings": warnings,
    }


def solve(problem: dict[str, Any]) -> Result:
    """Balance one site: validate the problem dict and return the result dict.

    Raises ProblemError (a ValueError) naming the field when the problem is malformed.

    The solver allocates many small objects that never form reference cycles; the cyclic
    garbage collector would traverse them (and the caller's heap) again and again, a third of
    the time at 10,000 EVSEs, so it is paused for the call. Only the call that paused it
    resumes it, which keeps concurrent calls from different threads correct.
    """
    paused_gc = gc.isenabled()
    if paused_gc:
        gc.disable()
    try:
        return solve_problem(parse_problem(problem))
    finally:
        if paused_gc:
            gc.enable()
