"""The unmanaged counterfactual: acceptance rate by source, and the load it puts in each interval."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from billing.counterfactual import SessionLoad, acceptance_rate, scaled_to, unmanaged_intervals

T0 = datetime(2026, 10, 5, 17, 0, tzinfo=UTC)


def session(**kw) -> SessionLoad:
    values = {
        "session_id": 1,
        "started_at": T0,
        "stopped_at": T0 + timedelta(hours=4),
        "energy_kwh": Decimal(8),
        "rating_kw": Decimal("11"),
    }
    values.update(kw)
    return SessionLoad(**values)


def test_what_the_car_declared_comes_first() -> None:
    rate = acceptance_rate(session(declared_kw=Decimal("7.4"), observed_kw=Decimal("6")))
    assert (rate.rate_kw, rate.source) == (Decimal("7.4"), "declared")


def test_a_declared_rate_above_the_chargers_rating_is_capped_by_it() -> None:
    rate = acceptance_rate(session(declared_kw=Decimal("22")))
    assert (rate.rate_kw, rate.source) == (Decimal(11), "declared")


def test_the_highest_uncapped_draw_comes_next() -> None:
    rate = acceptance_rate(session(observed_kw=Decimal("6.6")))
    assert (rate.rate_kw, rate.source) == (Decimal("6.6"), "observed")


def test_the_chargers_rating_is_the_last_resort() -> None:
    rate = acceptance_rate(session())
    assert (rate.rate_kw, rate.source) == (Decimal(11), "rating")


def test_a_rate_that_could_not_have_delivered_the_energy_is_raised_to_the_average() -> None:
    # 30 kWh in 2 hours cannot come from a 6.6 kW car: it drew at least 15 kW on average.
    rate = acceptance_rate(
        session(observed_kw=Decimal("6.6"), energy_kwh=Decimal(30), stopped_at=T0 + timedelta(hours=2))
    )
    assert (rate.rate_kw, rate.source) == (Decimal(15), "average")


def test_unmanaged_cars_draw_at_their_rate_from_plug_in_until_they_have_their_energy() -> None:
    # 8 kW car, 6 kWh: 17:00-17:45 at 8 kW = 2 kWh per interval. A second car plugs in at 17:10
    # with 11 kW (rating), 2.75 kWh: 17:10-17:25, split 5/15 and 10/15 over two intervals.
    cars = [
        session(session_id=1, energy_kwh=Decimal(6), declared_kw=Decimal(8)),
        session(session_id=2, started_at=T0 + timedelta(minutes=10), energy_kwh=Decimal("2.75")),
    ]

    intervals, sources = unmanaged_intervals(cars)

    step = timedelta(minutes=15)
    assert intervals[T0] == Decimal(2) + Decimal("2.75") / 3
    assert intervals[T0 + step] == Decimal(2) + Decimal("2.75") * 2 / 3
    assert intervals[T0 + 2 * step] == Decimal(2)
    assert T0 + 3 * step not in intervals
    assert sources == {"declared": 1, "rating": 1}


def test_scaling_keeps_the_shape_and_matches_the_metered_energy() -> None:
    shape = {T0: Decimal(3), T0 + timedelta(minutes=15): Decimal(1)}
    assert scaled_to(shape, Decimal(2)) == {T0: Decimal("1.5"), T0 + timedelta(minutes=15): Decimal("0.5")}
