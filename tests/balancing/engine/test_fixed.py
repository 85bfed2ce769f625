"""Currents the engine cannot change (offline chargers, unconfirmed lowerings) are booked first."""

from __future__ import annotations

from balancing.engine import check, solve
from tests.balancing.engine.problems import evse, site


def test_an_offline_charger_keeps_its_last_limit_and_the_others_share_what_is_left() -> None:
    problem = site([32], evses=[evse("offline", fixed_a=16, active=False), evse("a"), evse("b")])
    result = solve(problem)
    assert result["allocations_a"] == {"a": 8, "b": 8, "offline": 16}
    assert result["reasons"]["offline"] == "fixed at 16 A: the charger cannot take a new limit now"
    assert check(problem, result) == []


def test_when_fixed_currents_alone_overload_a_limit_nothing_else_below_it_charges_and_it_is_reported() -> None:
    problem = site(
        [63],
        {"id": "panel", "parent": "site", "limit_a": [32]},
        evses=[evse("stuck-1", "panel", fixed_a=20), evse("stuck-2", "panel", fixed_a=20), evse("other", "panel")],
    )
    result = solve(problem)
    assert result["allocations_a"] == {"other": 0, "stuck-1": 20, "stuck-2": 20}
    assert result["paused"] == ["other"]
    assert result["warnings"] == ["node panel L1 (32 A) is overloaded by fixed currents alone: nothing else can charge"]
    assert check(problem, result) == []
    raised = {**result, "allocations_a": {**result["allocations_a"], "other": 6}}
    assert check(problem, raised) == ["node panel L1: fixed currents alone exceed 32 A, yet others charge"]
