"""When not every car can have its minimum: fewest pause, they take turns, nobody is flapped."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import Bounds, LinearConstraint, milp  # type: ignore[import-untyped, unused-ignore]

from balancing.engine import check, solve
from tests.balancing.engine.lp_reference import constraint_matrix
from tests.balancing.engine.problems import NOW, evse, iso, site


def test_fewest_evses_pause_when_the_site_cannot_give_everyone_6_a() -> None:
    # 20 A for five cars: three can have 6 A, two must pause.
    result = solve(site([20], evses=[evse(f"CP{k}") for k in range(5)]))
    assert len(result["paused"]) == 2
    assert sorted(result["allocations_a"].values()) == [0, 0, 6, 7, 7]
    paused_reason = result["reasons"][result["paused"][0]]
    assert paused_reason == "paused: rotation, not enough capacity at node site L1 (20 A) for 6 A"


def test_a_car_with_no_limit_above_it_charges_fully_while_a_full_panel_rotates() -> None:
    # The root has no current limit: "free" has infinite room, while the 10 A panel fits one car.
    problem = {
        "voltage_v": 230,
        "now": iso(NOW),
        "nodes": [{"id": "site", "parent": None}, {"id": "panel", "parent": "site", "limit_a": [10, 10, 10]}],
        "evses": [evse("free", "site"), evse("a", "panel"), evse("b", "panel")],
    }
    result = solve(problem)
    assert result["allocations_a"]["free"] == 32
    assert sorted([result["allocations_a"]["a"], result["allocations_a"]["b"]]) == [0, 10]
    assert check(problem, result) == []


@st.composite
def laminar_sites(draw: st.DrawFn) -> dict[str, Any]:
    """Three-phase trees with single-phase 6 A-minimum cars: a laminar family, where fewest-paused is exact."""
    n_nodes = draw(st.integers(1, 5))
    nodes = [
        {
            "id": f"n{k}",
            "parent": None if k == 0 else f"n{draw(st.integers(0, k - 1))}",
            "limit_a": [draw(st.integers(0, 60)) for _ in range(3)],
        }
        for k in range(n_nodes)
    ]
    cars = [
        evse(f"CP{k}", f"n{draw(st.integers(0, n_nodes - 1))}", (draw(st.sampled_from(["L1", "L2", "L3"])),))
        for k in range(draw(st.integers(1, 14)))
    ]
    return {"voltage_v": 230, "now": iso(NOW), "nodes": nodes, "evses": cars}


@settings(max_examples=60, deadline=None)
@given(laminar_sites())
def test_as_many_cars_charge_as_the_best_integer_program_allows(problem: dict[str, Any]) -> None:
    ids = [e["id"] for e in problem["evses"]]
    a_ub, b_ub = constraint_matrix(problem, ids)
    best = milp(
        -np.ones(len(ids)),
        constraints=[LinearConstraint(a_ub * 6, -np.inf, b_ub)] if len(b_ub) else [],
        integrality=np.ones(len(ids)),
        bounds=Bounds(0, 1),
    )
    result = solve(problem)
    charging = sum(1 for v in result["allocations_a"].values() if v > 0)
    assert charging == round(-best.fun)
    assert check(problem, result) == []


def _rotation_site(**cars: dict[str, Any]) -> dict[str, Any]:
    return site([13], evses=[evse(name, **extra) for name, extra in cars.items()])


def test_the_car_that_received_most_energy_pauses_and_the_longest_waiting_resumes() -> None:
    # Room for two at 6 A. "full" has had 12 kWh and charges; "waiting" was paused 20 min ago.
    result = solve(
        _rotation_site(
            full={"charging_since": iso(NOW - timedelta(hours=2)), "session_kwh": 12},
            some={"charging_since": iso(NOW - timedelta(hours=1)), "session_kwh": 5},
            waiting={"paused_since": iso(NOW - timedelta(minutes=20)), "session_kwh": 5},
        )
    )
    assert result["paused"] == ["full"]
    assert result["allocations_a"]["waiting"] > 0


def test_with_equal_energy_the_longest_waiting_goes_first() -> None:
    result = solve(
        _rotation_site(
            recent={"paused_since": iso(NOW - timedelta(minutes=10))},
            old={"paused_since": iso(NOW - timedelta(minutes=40))},
            oldest={"paused_since": iso(NOW - timedelta(minutes=90))},
        )
    )
    assert result["paused"] == ["recent"]


def test_a_car_that_just_started_keeps_charging_for_the_minimum_on_time() -> None:
    result = solve(
        _rotation_site(
            fresh={"charging_since": iso(NOW - timedelta(minutes=2)), "session_kwh": 30},
            other={"charging_since": iso(NOW - timedelta(hours=1)), "session_kwh": 1},
            waiting={"paused_since": iso(NOW - timedelta(hours=1)), "session_kwh": 0},
        )
    )
    assert result["allocations_a"]["fresh"] > 0
    assert result["paused"] == ["other"]


def test_a_car_just_paused_stays_off_for_the_minimum_off_time_even_with_room() -> None:
    problem = site([32], evses=[evse("a"), evse("b", paused_since=iso(NOW - timedelta(seconds=100)))])
    result = solve(problem)
    assert result["paused"] == ["b"]
    assert result["reasons"]["b"] == "paused: minimum off time (200 s left)"
    assert result["allocations_a"]["a"] == 32
    later = solve({**problem, "min_off_s": 60})
    assert later["paused"] == []


def _simulate(limit_a: float, n_cars: int, periods: int, period_s: int) -> list[list[float]]:
    """Run the engine like the glue does: carry on/off spells and energy from one run to the next."""
    state: dict[str, dict[str, Any]] = {f"CP{k}": {} for k in range(n_cars)}
    history: list[list[float]] = []
    for p in range(periods):
        now = NOW + timedelta(seconds=p * period_s)
        cars = [evse(name, **extra) for name, extra in state.items()]
        problem = site([limit_a], evses=cars, now=iso(now))
        result = solve(problem)
        assert check(problem, result) == []
        row = []
        for name, extra in state.items():
            current = result["allocations_a"][name]
            row.append(current)
            if current > 0:
                extra.pop("paused_since", None)
                extra.setdefault("charging_since", iso(now))
                extra["session_kwh"] = extra.get("session_kwh", 0) + current * 0.23 * period_s / 3600
            else:
                extra.pop("charging_since", None)
                extra.setdefault("paused_since", iso(now))
        history.append(row)
    return history


def test_cars_take_turns_without_ever_switching_faster_than_the_minimum_on_and_off_times() -> None:
    # 20 A for five cars, a run every minute, 5 min minimum on and off: three charge at a time.
    history = _simulate(limit_a=20, n_cars=5, periods=120, period_s=60)
    assert all(sum(1 for x in row if x > 0) == 3 for row in history)
    for car in range(5):
        on = [row[car] > 0 for row in history]
        spells = []
        start = 0
        for p in range(1, len(on) + 1):
            if p == len(on) or on[p] != on[start]:
                spells.append((on[start], p - start, start == 0 or p == len(on)))
                start = p
        assert len(spells) >= 4, f"car {car} did not rotate: {spells}"
        assert all(length >= 5 for _, length, at_edge in spells if not at_edge), spells
    energy = [sum(row[car] for row in history) for car in range(5)]
    assert max(energy) - min(energy) <= 0.25 * max(energy)


def test_a_car_that_would_not_resume_after_a_pause_is_kept_on_and_another_takes_the_pause() -> None:
    # Room for two at 6 A; "sleepy" has had the most energy, so the rotation would pause it.
    cars = {
        "sleepy": {"charging_since": iso(NOW - timedelta(hours=2)), "session_kwh": 12},
        "some": {"charging_since": iso(NOW - timedelta(hours=1)), "session_kwh": 5},
        "waiting": {"paused_since": iso(NOW - timedelta(minutes=20)), "session_kwh": 5},
    }
    assert solve(_rotation_site(**cars))["paused"] == ["sleepy"]
    cars["sleepy"]["resumes_after_pause"] = False
    result = solve(_rotation_site(**cars))
    assert result["paused"] == ["some"]
    assert result["allocations_a"]["sleepy"] > 0


def test_a_car_that_would_not_resume_still_pauses_when_the_limit_leaves_no_other_way() -> None:
    problem = site([8], evses=[evse("sleepy", resumes_after_pause=False), evse("other", resumes_after_pause=False)])
    result = solve(problem)
    assert result["paused"] == ["sleepy"]
    assert result["reasons"]["sleepy"].endswith("(this car may not resume by itself)")
    assert check(problem, result) == []
