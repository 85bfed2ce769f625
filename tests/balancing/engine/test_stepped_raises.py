"""Raises in steps (``max_raise_a``): load comes on gradually; lowerings are never held back."""

from __future__ import annotations

import pytest

from balancing.engine import ProblemError, check, solve
from tests.balancing.engine.problems import evse, site


def test_a_raise_is_limited_to_the_step_above_what_the_charger_has_now() -> None:
    problem = site([63], evses=[evse("CP1", offered_a=10, measured_a=9.8)], max_raise_a=4)
    result = solve(problem)
    assert result["allocations_a"] == {"CP1": 14}
    assert result["reasons"]["CP1"] == "raised at most 4 A per run, from 10 A"
    assert check(problem, result) == []


def test_run_after_run_the_current_climbs_to_its_fair_share() -> None:
    offered = 6.0
    climb = []
    for _ in range(5):
        problem = site([63], evses=[evse("CP1", offered_a=offered, measured_a=offered), evse("CP2")], max_raise_a=8)
        offered = solve(problem)["allocations_a"]["CP1"]
        climb.append(offered)
    assert climb == [14, 22, 30, 32, 32]


def test_a_car_without_a_limit_yet_starts_at_its_minimum_or_the_step_if_higher() -> None:
    result = solve(site([63], evses=[evse("new-small"), evse("new-big", min_a=8)], max_raise_a=4))
    assert result["allocations_a"] == {"new-big": 8, "new-small": 6}
    assert solve(site([63], evses=[evse("new")], max_raise_a=10))["allocations_a"] == {"new": 10}


def test_lowerings_are_not_held_back_and_the_capacity_left_goes_to_others() -> None:
    # 20 A for two: CP1 had 20 A and drops to its share at once; CP2 (new) may start at 6 A only,
    # so CP1 keeps 14 A of the 20 A (never more than it had).
    problem = site([20], evses=[evse("CP1", offered_a=20, measured_a=20), evse("CP2")], max_raise_a=2)
    result = solve(problem)
    assert result["allocations_a"] == {"CP1": 14, "CP2": 6}
    assert check(problem, result) == []


def test_check_flags_a_raise_above_the_step() -> None:
    problem = site([63], evses=[evse("CP1", offered_a=10)], max_raise_a=4)
    assert check(problem, {"allocations_a": {"CP1": 16}}) == [
        "allocations_a['CP1']: 16 A rises more than max_raise_a 4 A above 10 A"
    ]


@pytest.mark.parametrize(("value", "message"), [(0, "must be greater than 0, not 0"), (-1, "must be at least 0")])
def test_a_bad_max_raise_is_refused_naming_the_field(value: float, message: str) -> None:
    with pytest.raises(ProblemError, match=f"max_raise_a: {message}"):
        solve(site([63], evses=[evse("CP1")], max_raise_a=value))
