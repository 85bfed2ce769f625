"""Deadline-aware allocation: cars that say what they need and when they leave get it in time."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from balancing.engine import check, solve
from bench.acn_compare import ALGORITHMS, Layout, compare, generate_sessions
from tests.balancing.engine.problems import NOW, evse, iso, site


def _leaving_in(hours: float, energy_kwh: float) -> dict[str, Any]:
    return {"energy_needed_kwh": energy_kwh, "departure": iso(NOW + timedelta(hours=hours))}


def test_a_car_leaving_soon_gets_the_current_that_finishes_its_energy_in_time() -> None:
    # 5 kWh in 1 h at 230 V: 21.7 A, rounded up to 22 A; the other car takes the remaining 10 A.
    problem = site([32], evses=[evse("leaving", **_leaving_in(1, 5)), evse("staying")])
    result = solve(problem)
    assert result["allocations_a"] == {"leaving": 22, "staying": 10}
    assert result["reasons"]["leaving"].endswith("needs 21.7 A to finish by departure")


def test_without_a_departure_max_min_fairness_stays_the_rule() -> None:
    problem = site([32], evses=[evse("leaving", energy_needed_kwh=5), evse("staying")])
    assert solve(problem)["allocations_a"] == {"leaving": 16, "staying": 16}


def test_a_car_needing_less_than_the_fair_share_leaves_the_rest_to_others() -> None:
    # 1 kWh in 2 h needs 2.2 A: its floor is the 6 A minimum, and it still shares fairly (16 A).
    problem = site([32], evses=[evse("light", **_leaving_in(2, 1)), evse("other")])
    assert solve(problem)["allocations_a"] == {"light": 16, "other": 16}


def _two_needing_20_a_and_a_plain_car(**options: Any) -> dict[str, Any]:
    """40 A; "relaxed" and "urgent" both need 20 A, urgent with 1 h less slack; "plain" has no deadline."""
    cars = [
        evse("relaxed", **_leaving_in(3, 20 * 0.23 * 3)),
        evse("urgent", **_leaving_in(2, 20 * 0.23 * 2)),
        evse("plain"),
    ]
    return site([40], evses=cars, **options)


def test_by_default_cars_with_deadlines_get_their_required_current_before_others_get_their_minimum() -> None:
    # The least laxity first, then the other; the car without a deadline waits.
    problem = _two_needing_20_a_and_a_plain_car()
    result = solve(problem)
    assert result["allocations_a"] == {"relaxed": 20, "urgent": 20, "plain": 0}
    assert result["paused"] == ["plain"]
    assert check(problem, result) == []


def test_with_deadline_first_off_the_fewest_pause_and_least_laxity_gets_its_need_next() -> None:
    # Everyone gets 6 A first, then urgent's 20 A, then relaxed the rest.
    problem = _two_needing_20_a_and_a_plain_car(deadline_first=False)
    result = solve(problem)
    assert result["allocations_a"] == {"relaxed": 14, "urgent": 20, "plain": 6}
    assert check(problem, result) == []


def test_a_car_leaving_soon_gets_its_need_before_others_get_their_minimum_unless_deadline_first_is_off() -> None:
    # 12 A: the car leaving in an hour with 3 kWh to go (13 A needed) takes all 12 A and the
    # others wait; with deadline_first off the fewest pause (two cars at 6 A, least laxity first).
    cars = [evse("plain"), evse("late", **_leaving_in(8, 10)), evse("soon", **_leaving_in(1, 3))]
    problem = site([12], evses=cars)
    result = solve(problem)
    assert result["allocations_a"] == {"late": 0, "plain": 0, "soon": 12}
    assert check(problem, result) == []
    fewest = solve(site([12], evses=cars, deadline_first=False))
    assert fewest["allocations_a"] == {"late": 6, "plain": 0, "soon": 6}
    assert fewest["paused"] == ["plain"]


def test_a_sliver_below_the_minimum_is_not_stranded_the_urgent_car_lends_what_admits_another() -> None:
    # 36 A: the urgent car needs 32 A; giving it 32 would strand 4 A (below the 6 A minimum).
    # It lends 2 A so the other car charges at 6 A and all 36 A are used.
    problem = site([36], evses=[evse("urgent", **_leaving_in(1, 32 * 0.23)), evse("plain")])
    result = solve(problem)
    assert result["allocations_a"] == {"urgent": 30, "plain": 6}
    assert check(problem, result) == []


def test_nothing_is_lent_when_it_would_only_move_current_from_one_car_to_another() -> None:
    # 28.99 A: the urgent car takes 28 A; admitting the other at 6 A would take 6 A from it and
    # still leave the 0.99 A unused, so nobody is lowered.
    problem = site([28.99], evses=[evse("urgent", **_leaving_in(1, 32 * 0.23)), evse("plain")])
    result = solve(problem)
    assert result["allocations_a"] == {"urgent": 28, "plain": 0}


def test_a_car_is_not_offered_more_than_finishes_its_energy_within_the_period() -> None:
    # 0.1 kWh in a 5-minute period needs 5.2 A: it gets the 6 A minimum; the other car the rest.
    problem = site([32], evses=[evse("nearly-full", energy_needed_kwh=0.1), evse("other")])
    result = solve(problem)
    assert result["allocations_a"] == {"nearly-full": 6, "other": 26}
    assert result["reasons"]["nearly-full"] == "0.1 kWh left, done within period"


def test_a_car_leaving_before_the_next_run_is_offered_what_finishes_its_energy_before_it_leaves() -> None:
    # 0.23 kWh at 230 V is 1 Ah: 12 A would take the whole 5-minute period, but the car leaves in
    # 3 minutes, so it needs 1 Ah / 0.05 h = 20 A; the other car gets the remaining 12 A.
    problem = site([32], evses=[evse("leaving", **_leaving_in(0.05, 0.23)), evse("other")])
    result = solve(problem)
    assert result["allocations_a"] == {"leaving": 20, "other": 12}
    assert result["reasons"]["leaving"].startswith("0.23 kWh left, done by departure")


def test_when_not_all_can_charge_a_car_finishing_below_its_minimum_waits_for_spare_current() -> None:
    # 10 A, room for one: 0.1 kWh needs 5.2 A for one period, so a 6 A pilot would leave part
    # of the limit idle; the other car uses all 10 A, whatever their laxities.
    problem = site([10], evses=[evse("nearly-full", **_leaving_in(0.5, 0.1)), evse("other", **_leaving_in(8, 30))])
    result = solve(problem)
    assert result["allocations_a"] == {"nearly-full": 0, "other": 10}
    assert result["reasons"]["nearly-full"].startswith("paused: rotation")
    # With room for both at their minimum, it finishes at 6 A.
    both = solve(site([16], evses=[evse("nearly-full", **_leaving_in(0.5, 0.1)), evse("other")]))
    assert both["allocations_a"] == {"nearly-full": 6, "other": 10}


def test_a_car_whose_energy_need_is_met_pauses() -> None:
    result = solve(site([32], evses=[evse("done", **_leaving_in(2, 0)), evse("other")]))
    assert result["allocations_a"] == {"done": 0, "other": 32}
    assert result["reasons"]["done"] == "paused: energy need met"


def test_in_acn_sim_a_day_of_sessions_gets_more_energy_than_every_acn_algorithm_and_never_violates() -> None:
    """A small ACN-Sim run: 20 EVSEs, one workday, 10 kW transformer, 10-minute periods."""
    layout = Layout(n_evses=20, cap_kw=10.0)
    sessions = generate_sessions(layout, days=1, period_min=10, seed=2019, weekday_sessions=22, weekend_sessions=0)
    names = [name for name in ALGORITHMS if not name.startswith("ours, ")]
    outcomes, optimum_kwh = compare(layout, sessions, period_min=10, names=names)
    ours = outcomes[0]
    assert ours.name == "ours (balancing.engine)"
    best_acn = max(o.delivered_kwh for o in outcomes[1:])
    assert ours.delivered_kwh >= best_acn
    assert ours.delivered_kwh >= 0.95 * optimum_kwh
    assert all(o.violations == 0 for o in outcomes)
    assert sum(ours.call_ms) / len(ours.call_ms) < 50
