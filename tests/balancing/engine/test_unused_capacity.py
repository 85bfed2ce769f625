"""Capacity a car leaves unused goes to the others, and the car gets it back when it draws more."""

from __future__ import annotations

from typing import Any

from balancing.engine import solve
from tests.balancing.engine.problems import evse, site


def _pair(**slow: Any) -> dict[str, float]:
    return solve(site([32], evses=[evse("slow", **slow), evse("other")]))["allocations_a"]


def test_a_car_drawing_far_below_its_offer_is_held_near_its_draw_and_the_other_car_gets_the_rest() -> None:
    assert _pair() == {"other": 16, "slow": 16}
    assert _pair(measured_a=5, offered_a=16) == {"other": 25, "slow": 7}


def test_the_hold_never_goes_below_the_minimum_current() -> None:
    assert _pair(measured_a=0, offered_a=16) == {"other": 26, "slow": 6}


def test_a_held_car_whose_draw_rises_close_to_its_offer_may_rise_again() -> None:
    # Held at 7 A; now it draws 6.5 A of 7 A: within half the 2 A margin, so the hold is lifted.
    assert _pair(measured_a=6.5, offered_a=7) == {"other": 16, "slow": 16}


def test_a_held_car_still_drawing_little_stays_held_so_the_limit_does_not_flap() -> None:
    # Held at 7 A and drawing 5.5 A: still more than 1 A below, so it stays at 5.5 + 2 -> 7 A.
    assert _pair(measured_a=5.5, offered_a=7) == {"other": 25, "slow": 7}


def test_a_car_that_takes_its_full_offer_is_not_held() -> None:
    assert _pair(measured_a=15.8, offered_a=16) == {"other": 16, "slow": 16}


def test_the_margin_is_a_problem_option() -> None:
    result = solve(site([32], evses=[evse("slow", measured_a=5, offered_a=16), evse("other")], unused_margin_a=4))
    assert result["allocations_a"] == {"other": 23, "slow": 9}
    assert result["reasons"]["slow"] == "car draws 5 A of 16 A offered, held at 9 A"
