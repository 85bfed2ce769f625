"""Properties every result keeps, for any problem the schema admits (hypothesis)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from balancing.engine import check, solve
from tests.balancing.engine.problems import problems, shuffled

PROPERTY = settings(max_examples=250, deadline=None)


@PROPERTY
@given(problems())
def test_every_result_keeps_every_limit_and_current_range(problem: dict[str, Any]) -> None:
    result = solve(problem)
    assert check(problem, result) == []


@PROPERTY
@given(problems())
def test_inactive_evses_get_nothing_unless_their_current_is_fixed(problem: dict[str, Any]) -> None:
    result = solve(problem)
    for evse in problem["evses"]:
        if not evse["active"] and "fixed_a" not in evse:
            assert result["allocations_a"][evse["id"]] == 0


@PROPERTY
@given(problems(), st.integers(0, 2**32 - 1))
def test_result_does_not_depend_on_the_order_of_nodes_and_evses(problem: dict[str, Any], seed: int) -> None:
    assert solve(shuffled(problem, seed)) == solve(problem)


@settings(max_examples=60, deadline=None)
@given(problems())
def test_same_input_gives_the_same_json_output(problem: dict[str, Any]) -> None:
    first = json.dumps(solve(problem), sort_keys=True)
    again = json.dumps(solve(json.loads(json.dumps(problem))), sort_keys=True)
    assert first == again


@PROPERTY
@given(problems())
def test_every_charging_evse_is_at_its_top_or_held_by_a_full_limit(problem: dict[str, Any]) -> None:
    """No capacity is wasted: raising any charging EVSE by one step would cross a limit or its own top."""
    result = solve(problem)
    # Counted as wasted only if one more step fits with 2 uA to spare (a negative tolerance):
    # a limit left with 0.99999994 A after a tiny fixed current cannot take a 1 A step, although
    # check's default slack of 1e-6 would let it.
    base = check(problem, result, tolerance=-2e-6)
    for evse in problem["evses"]:
        x = result["allocations_a"][evse["id"]]
        if x == 0 or "fixed_a" in evse:
            continue
        raised = {**result, "allocations_a": {**result["allocations_a"], evse["id"]: x + evse.get("step_a", 1)}}
        reason = result["reasons"][evse["id"]]
        if check(problem, raised, tolerance=-2e-6) == base and reason.startswith("limited by"):
            raise AssertionError(f"{evse['id']} could take one more step: {reason}")


@PROPERTY
@given(problems())
def test_node_loads_in_the_result_add_up_the_allocations(problem: dict[str, Any]) -> None:
    result = solve(problem)
    phases = problem.get("phases", 3)
    totals = {node["id"]: [0.0] * phases for node in problem["nodes"]}
    parent = {node["id"]: node["parent"] for node in problem["nodes"]}
    for evse in problem["evses"]:
        node = evse["node"]
        while node is not None:
            for name in evse["phases"]:
                totals[node][int(name[1]) - 1] += result["allocations_a"][evse["id"]]
            node = parent[node]
    for node_id, row in totals.items():
        assert result["node_load_a"][node_id] == [round(v, 6) for v in row] or all(
            abs(a - b) < 1e-6 for a, b in zip(result["node_load_a"][node_id], row, strict=True)
        )
    assert set(result["reasons"]) == {e["id"] for e in problem["evses"]}
