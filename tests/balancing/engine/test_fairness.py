"""Max-min fairness (weighted by priority) across the whole tree and all phases, checked by LP."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from balancing.engine import check, solve
from balancing.engine.fill import Constraints, water_fill
from tests.balancing.engine.lp_reference import constraint_matrix, lex_max_min
from tests.balancing.engine.problems import evse, problems, site

LP = settings(max_examples=40, deadline=None)


def _bounds(e: dict[str, Any]) -> tuple[float, float]:
    step = e.get("step_a", 1)
    lo = max(math.ceil(e["min_a"] / step - 1e-9) * step, step)
    top = e["max_a"] if e.get("ev_max_a") is None else min(e["max_a"], e["ev_max_a"])
    return lo, math.floor(top / step + 1e-9) * step


def _lp_for_charging(problem: dict[str, Any], result: dict[str, Any]) -> tuple[list[str], list[float]]:
    """The sequential-LP max-min allocation among the EVSEs the engine let charge."""
    ids = [e["id"] for e in problem["evses"] if result["allocations_a"][e["id"]] > 0]
    by_id = {e["id"]: e for e in problem["evses"]}
    a_ub, b_ub = constraint_matrix(problem, ids)
    floors, caps = zip(*(_bounds(by_id[i]) for i in ids), strict=True) if ids else ((), ())
    weights = [float(by_id[i].get("priority", 1)) for i in ids]
    return ids, lex_max_min(a_ub, b_ub, list(floors), list(caps), weights)


@st.composite
def plain_problems(draw: st.DrawFn, *, uniform_step: bool) -> dict[str, Any]:
    problem = draw(problems(max_nodes=5, max_evses=8, optional_fields=False))
    for e in problem["evses"]:
        if uniform_step:
            e["step_a"] = 1
        if draw(st.booleans()):
            e["priority"] = draw(st.sampled_from([1, 2, 3]))
    return problem


@LP
@given(plain_problems(uniform_step=True))
def test_allocation_is_within_one_step_of_the_sequential_lp_max_min(problem: dict[str, Any]) -> None:
    """Each EVSE gets its LP share within a step. More than a step above it is only leftover that
    no other EVSE could take (e.g. half a three-phase step's power, which buys a single-phase car
    two steps): then nobody else is below its share rounded down to the step."""
    result = solve(problem)
    got = result["allocations_a"]
    ids, reference = _lp_for_charging(problem, result)
    short = [i for i, lp_a in zip(ids, reference, strict=True) if got[i] < math.floor(lp_a + 1e-6) - 1e-6]
    for evse_id, lp_a in zip(ids, reference, strict=True):
        assert got[evse_id] >= lp_a - 1 - 1e-6, (evse_id, lp_a, result["notes"])
        if got[evse_id] > lp_a + 1 + 1e-6:
            assert not short, (evse_id, lp_a, short, result["notes"])


@LP
@given(plain_problems(uniform_step=False))
def test_rounding_to_steps_never_costs_an_evse_more_than_one_step(problem: dict[str, Any]) -> None:
    result = solve(problem)
    ids, reference = _lp_for_charging(problem, result)
    by_id = {e["id"]: e for e in problem["evses"]}
    for evse_id, lp_a in zip(ids, reference, strict=True):
        assert result["allocations_a"][evse_id] >= lp_a - by_id[evse_id].get("step_a", 1) - 1e-6


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_progressive_filling_equals_the_sequential_lp_exactly(data: st.DataObject) -> None:
    """The continuous fill, on random packing constraints with floors, caps and weights."""
    n = data.draw(st.integers(1, 7))
    m = data.draw(st.integers(1, 5))
    power_row = [data.draw(st.booleans()) for _ in range(m)]
    scale = [data.draw(st.sampled_from([0.23, 0.69, 1.5])) for _ in range(n)]
    member = [[data.draw(st.booleans()) for _ in range(n)] for _ in range(m)]
    rows = [[(scale[i] if power_row[c] else 1.0) if member[c][i] else 0.0 for i in range(n)] for c in range(m)]
    floors = [data.draw(st.sampled_from([0.0, 1.0, 6.0])) for _ in range(n)]
    caps = [f + data.draw(st.floats(0, 30)) for f in floors]
    weights = [data.draw(st.sampled_from([1.0, 2.0, 0.5])) for _ in range(n)]
    limits = [sum(r * f for r, f in zip(row, floors, strict=True)) + data.draw(st.floats(0, 50)) for row in rows]
    members = [[i for i in range(n) if member[c][i]] for c in range(m)]
    unit = [[c for c in range(m) if member[c][i] and not power_row[c]] for i in range(n)]
    scaled = [[c for c in range(m) if member[c][i] and power_row[c]] for i in range(n)]
    system = Constraints(list(limits), members, unit, scaled, scale)
    ours = water_fill(system, list(range(n)), floors, caps, weights)
    import numpy as np

    reference = lex_max_min(np.array(rows), np.array(limits), floors, caps, weights)
    for i in range(n):
        assert abs(ours[i] - reference[i]) <= 1e-6 * max(1.0, reference[i]), (i, ours, reference)


def test_equal_priority_shares_a_panel_equally_and_leaves_the_rest_to_the_other_panel() -> None:
    # panel-a 20 A for three cars: 6.67 each, rounded to 1 A steps: 7 + 7 + 6;
    # panel-b has one car, limited by the site: 40 - 20 = 20 A.
    problem = site(
        [40, 40, 40],
        {"id": "panel-a", "parent": "site", "limit_a": [20, 20, 20]},
        {"id": "panel-b", "parent": "site", "limit_a": [32, 32, 32]},
        evses=[evse("a1", "panel-a"), evse("a2", "panel-a"), evse("a3", "panel-a"), evse("b1", "panel-b")],
    )
    result = solve(problem)
    assert sorted(result["allocations_a"][k] for k in ("a1", "a2", "a3")) == [6, 7, 7]
    assert result["allocations_a"]["b1"] == 20
    assert result["reasons"]["b1"] == "limited by node site L1 (40 A)"
    assert "limited by node panel-a L1 (20 A)" in result["reasons"]["a3"]


def test_priority_two_gets_twice_the_current_of_priority_one() -> None:
    problem = site([30, 30, 30], evses=[evse("vip", priority=2), evse("std")])
    assert solve(problem)["allocations_a"] == {"std": 10, "vip": 20}


def test_higher_priority_keeps_charging_when_only_one_can() -> None:
    problem = site([10, 10, 10], evses=[evse("std", session_kwh=0), evse("vip", priority=3, session_kwh=30)])
    result = solve(problem)
    assert result["allocations_a"] == {"std": 0, "vip": 10}
    assert result["paused"] == ["std"]


def test_an_overloaded_phase_binds_its_cars_while_the_other_phases_still_give_theirs_full_current() -> None:
    # Four single-phase cars on L1, one on L2, one on L3 of a 3 x 32 A site.
    cars = [evse(f"l1-{k}", phases=("L1",)) for k in range(4)]
    cars += [evse("l2", phases=("L2",)), evse("l3", phases=("L3",))]
    result = solve(site([32, 32, 32], evses=cars))
    assert [result["allocations_a"][f"l1-{k}"] for k in range(4)] == [8, 8, 8, 8]
    assert result["allocations_a"]["l2"] == 32
    assert result["allocations_a"]["l3"] == 32
    assert result["reasons"]["l1-0"] == "limited by node site L1 (32 A)"
    assert result["reasons"]["l2"] == "charger max 32 A"
    assert result["node_load_a"]["site"] == [32, 32, 32]


def test_a_three_phase_car_is_held_by_the_busiest_of_its_phases() -> None:
    cars = [evse("three", phases=("L1", "L2", "L3")), evse("l1-a", phases=("L1",)), evse("l1-b", phases=("L1",))]
    result = solve(site([30, 30, 30], evses=cars))
    assert result["allocations_a"] == {"l1-a": 10, "l1-b": 10, "three": 10}
    assert result["node_load_a"]["site"] == [30, 10, 10]


def test_power_limit_counts_three_phase_cars_three_times() -> None:
    # 11.04 kW at 230 V: one three-phase car at 16 A = 11.04 kW, or 48 A of single-phase cars.
    problem = site([63, 63, 63], limit_kw=11.04, evses=[evse("three", phases=("L1", "L2", "L3")), evse("one")])
    result = solve(problem)
    assert result["allocations_a"] == {"one": 12, "three": 12}
    assert result["node_load_kw"]["site"] <= 11.04
    assert "power (11.04 kW)" in result["reasons"]["three"]
    assert check(problem, result) == []


def test_the_issue_example_gives_the_car_what_it_accepts_and_the_rest_their_share() -> None:
    problem = site(
        [100, 100, 100],
        {"id": "panel-1", "parent": "site", "limit_a": [63, 63, 63]},
        limit_kw=20.0,
        evses=[
            evse("CP001/1", "panel-1", ev_max_a=16, measured_a=9.5, offered_a=16),
            evse("CP002/1", "panel-1"),
            evse("CP003/1", "panel-1", phases=("L2",)),
        ],
    )
    result = solve(problem)
    # CP001 draws 9.5 of 16: held at 11.5 -> 11 A on 1 A steps; the others share 20 kW - 11 A * 0.23.
    assert result["allocations_a"]["CP001/1"] == 11
    assert result["allocations_a"]["CP002/1"] == 32
    assert result["allocations_a"]["CP003/1"] == 32
    assert result["node_load_kw"]["site"] == (11 + 32 + 32) * 0.23
    assert result["reasons"]["CP001/1"] == "car draws 9.5 A of 16 A offered, held at 11.5 A"
