"""Hypothesis strategies that draw any problem the engine's schema admits, and small helpers."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

NOW = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
PHASES = ("L1", "L2", "L3")


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def amps(high: float) -> st.SearchStrategy[float]:
    """Currents as JSON would bring them: integers or finite floats."""
    return st.one_of(st.integers(0, int(high)), st.floats(0, high, allow_nan=False, allow_infinity=False))


@st.composite
def problems(
    draw: st.DrawFn,
    *,
    max_nodes: int = 6,
    max_evses: int = 12,
    optional_fields: bool = True,
) -> dict[str, Any]:
    """A valid problem: random tree, limits (some absent or null), EVSEs with random options."""
    phase_count = draw(st.sampled_from([1, 3, 3]))
    n_nodes = draw(st.integers(1, max_nodes))
    node_ids = [f"n{k}" for k in range(n_nodes)]
    nodes: list[dict[str, Any]] = []
    for k, node_id in enumerate(node_ids):
        node: dict[str, Any] = {"id": node_id, "parent": None if k == 0 else node_ids[draw(st.integers(0, k - 1))]}
        # The root has a current limit nine times in ten; without one, EVSEs right below it
        # have infinite room (a case that once crashed the admission).
        if draw(st.integers(0, 9)) > 0 if k == 0 else draw(st.booleans()):
            width = phase_count if phase_count == 3 else draw(st.sampled_from([1, 3]))
            node["limit_a"] = [draw(st.one_of(st.none(), amps(120))) if k else draw(amps(120)) for _ in range(width)]
        if draw(st.integers(0, 3)) == 0:
            node["limit_kw"] = draw(amps(60))
        nodes.append(node)
    problem: dict[str, Any] = {"voltage_v": draw(st.sampled_from([230, 120, 240.0])), "now": iso(NOW), "nodes": nodes}
    if phase_count == 1:
        problem["phases"] = 1
    elif draw(st.booleans()):
        problem["phases"] = 3
    site_phases = list(PHASES[:phase_count])
    evses = []
    for j in range(draw(st.integers(0, max_evses))):
        width = 1 if phase_count == 1 else draw(st.sampled_from([1, 1, 2, 3]))
        start = draw(st.integers(0, phase_count - width))
        min_a = draw(st.sampled_from([0, 6, 6, 6, 8, 10, 6.5]))
        evse: dict[str, Any] = {
            "id": f"CP{j:03d}/{draw(st.integers(1, 2))}",
            "node": draw(st.sampled_from(node_ids)),
            "phases": site_phases[start : start + width],
            "min_a": min_a,
            "max_a": min_a + draw(st.sampled_from([0, 10, 26, 26, 10.5])),
            "active": draw(st.sampled_from([True, True, True, False])),
        }
        if draw(st.booleans()):
            evse["step_a"] = draw(st.sampled_from([1, 0.1, 0.5, 2, 6, 0.3]))
        if optional_fields:
            _draw_options(draw, evse)
        evses.append(evse)
    # ids must be unique: renumber the connector suffix clashes away
    seen: set[str] = set()
    for evse in evses:
        while evse["id"] in seen:
            evse["id"] += "x"
        seen.add(evse["id"])
    problem["evses"] = evses
    if optional_fields and draw(st.booleans()):
        problem["min_on_s"] = draw(st.sampled_from([0, 60, 300]))
        problem["min_off_s"] = draw(st.sampled_from([0, 60, 300]))
        problem["unused_margin_a"] = draw(st.sampled_from([0, 1, 2, 4.5]))
        problem["period_s"] = draw(st.sampled_from([60, 300, 900]))
        problem["deadline_first"] = draw(st.booleans())
        if draw(st.booleans()):
            problem["max_raise_a"] = draw(st.sampled_from([0.5, 2, 4, 10]))
    return problem


def _draw_options(draw: st.DrawFn, evse: dict[str, Any]) -> None:
    if draw(st.booleans()):
        evse["ev_max_a"] = draw(amps(40))
    if draw(st.booleans()):
        evse["measured_a"] = draw(amps(40))
        evse["offered_a"] = draw(amps(40))
    if draw(st.booleans()):
        evse["priority"] = draw(st.sampled_from([1, 2, 3, 0.5]))
    if draw(st.booleans()):
        evse["energy_needed_kwh"] = draw(amps(60))
        if draw(st.integers(0, 3)):
            evse["departure"] = iso(NOW + timedelta(seconds=draw(st.integers(-3600, 12 * 3600))))
    spell = draw(st.sampled_from([None, "charging_since", "paused_since"]))
    if spell is not None:
        evse[spell] = iso(NOW - timedelta(seconds=draw(st.integers(0, 3600))))
    if draw(st.booleans()):
        evse["session_kwh"] = draw(amps(50))
    if draw(st.integers(0, 9)) == 0:
        evse["fixed_a"] = draw(amps(32))
    if draw(st.integers(0, 4)) == 0:
        evse["resumes_after_pause"] = draw(st.booleans())


def shuffled(problem: dict[str, Any], seed: int) -> dict[str, Any]:
    """The same problem with its node and EVSE lists (and dict keys) in another order."""
    rng = random.Random(seed)
    nodes = [dict(reversed(list(node.items()))) for node in problem["nodes"]]
    evses = [dict(reversed(list(evse.items()))) for evse in problem["evses"]]
    rng.shuffle(nodes)
    rng.shuffle(evses)
    return {**dict(reversed(list(problem.items()))), "nodes": nodes, "evses": evses}


def evse(evse_id: str, node: str = "site", phases: tuple[str, ...] = ("L1",), **extra: Any) -> dict[str, Any]:
    """An active 6-32 A EVSE with 1 A steps, for hand-worked examples."""
    return {
        "id": evse_id,
        "node": node,
        "phases": list(phases),
        "min_a": 6,
        "max_a": 32,
        "step_a": 1,
        "active": True,
        **extra,
    }


def site(
    limit_a: list[float],
    *children: dict[str, Any],
    limit_kw: float | None = None,
    evses: list[dict[str, Any]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A problem with a root node ``site`` and the given child nodes and EVSEs, at 230 V."""
    root: dict[str, Any] = {"id": "site", "parent": None, "limit_a": limit_a}
    if limit_kw is not None:
        root["limit_kw"] = limit_kw
    return {"voltage_v": 230, "now": iso(NOW), "nodes": [root, *children], "evses": evses or [], **extra}
