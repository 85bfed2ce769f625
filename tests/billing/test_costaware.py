"""The cost-aware policy on examples small enough to check on paper.

Slots here are whole hours (the policy takes any slots; live ones are the tariff's demand
windows), prices in $/kWh, demand charges in $/kW, powers in kW, energies in kWh.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from billing.costaware import CarNeed, DemandState, Slot, demand_states, effective_cap, plan_charging, tariff_slots
from billing.tariffs import bill_month, tariff_from_urdb

DAY = datetime(2026, 7, 1, tzinfo=UTC)  # a Wednesday


def at(hour: int) -> datetime:
    return DAY + timedelta(hours=hour)


def hours(first: int, last: int, price: float, keys: tuple[str, ...] = ("flat",)) -> list[Slot]:
    return [Slot(at(h), at(h + 1), price, keys) for h in range(first, last)]


def flat(peak_kw: float, *, price: float = 10.0, ratchet: bool = False) -> dict[str, DemandState]:
    return {"flat": DemandState("flat", "facility demand", price, peak_kw, at(7), from_ratchet=ratchet)}


class TestEffectiveCap:
    def test_a_month_peak_above_the_cap_lifts_it_less_the_margin(self) -> None:
        cap = effective_cap(cap_kw=20, grid_kw=100, keys_now=("flat",), demands=flat(26), margin_kw=0.5)
        assert (cap.kw, cap.lifted, cap.source) == (25.5, True, "month_peak:flat")
        assert "facility demand peak 26 kW" in cap.reason
        assert "above the 20 kW cap" in cap.reason

    def test_a_month_peak_below_the_cap_never_lifts_nor_lowers_it(self) -> None:
        cap = effective_cap(cap_kw=20, grid_kw=100, keys_now=("flat",), demands=flat(15), margin_kw=0.5)
        assert (cap.kw, cap.lifted, cap.source) == (20, False, "demand_cap")
        assert "not above it" in cap.reason

    def test_a_peak_within_the_margin_of_the_cap_does_not_lift_it(self) -> None:
        cap = effective_cap(cap_kw=20, grid_kw=100, keys_now=("flat",), demands=flat(20.4), margin_kw=0.5)
        assert cap.kw == 20
        assert not cap.lifted

    def test_never_above_the_grid_connection(self) -> None:
        cap = effective_cap(cap_kw=20, grid_kw=50, keys_now=("flat",), demands=flat(80), margin_kw=0.5)
        assert cap.kw == 50
        assert "grid connection's 50 kW" in cap.reason

    def test_the_ratchet_counts_as_demand_already_billed(self) -> None:
        cap = effective_cap(cap_kw=20, grid_kw=100, keys_now=("flat",), demands=flat(30, ratchet=True), margin_kw=0)
        assert cap.kw == 30
        assert "facility demand ratchet 30 kW" in cap.reason

    def test_in_an_on_peak_window_the_lowest_peak_of_the_charges_in_force_counts(self) -> None:
        """Flat demand has reached 30 kW this month, on-peak demand only 22 kW: charging above 22 kW
        in on-peak hours would raise the on-peak charge, so the cap there is 22 kW."""
        demands = {
            "flat": DemandState("flat", "facility demand", 10.0, 30.0),
            "tou:1": DemandState("tou:1", "time-of-use demand, period 1", 15.0, 22.0),
        }
        on_peak = effective_cap(cap_kw=20, grid_kw=100, keys_now=("flat", "tou:1"), demands=demands, margin_kw=0)
        off_peak = effective_cap(cap_kw=20, grid_kw=100, keys_now=("flat",), demands=demands, margin_kw=0)
        assert (on_peak.kw, off_peak.kw) == (22.0, 30.0)

    def test_no_cap_configured_means_no_kw_cap(self) -> None:
        cap = effective_cap(cap_kw=None, grid_kw=100, keys_now=("flat",), demands=flat(26), margin_kw=0)
        assert cap.kw is None


class TestOneTouDay:
    """08:00-12:00 costs $0.30/kWh, 12:00-16:00 $0.10/kWh; facility demand $10/kW.

    One car plugged in at 08:00 needs 20 kWh by 16:00 and takes up to 7 kW.
    """

    slots = hours(8, 12, 0.30) + hours(12, 16, 0.10)
    car = CarNeed("car", 20.0, at(16), 7.0)

    def test_with_no_peak_yet_it_spreads_at_the_lowest_level_that_finishes(self) -> None:
        """20 kWh in 8 h needs 2.5 kW all day. Putting it all in the cheap hours would need 5 kW:
        2.5 kW more demand costs $25, and moves 10 kWh from $0.30 to $0.10, saving only $2."""
        plan = plan_charging(now=at(8), slots=self.slots, cars=[self.car], demands=flat(0), cap_kw=20, grid_kw=50)
        assert plan.kw_now["car"] == pytest.approx(2.5, abs=0.02)
        assert plan.raised_to_kw["flat"] == pytest.approx(2.5, abs=0.02)
        assert plan.unmet_kwh == 0

    def test_under_a_peak_already_set_it_waits_for_the_cheap_hours(self) -> None:
        """This month already peaked at 6 kW: 4 cheap hours x 6 kW = 24 kWh >= 20 kWh, so the car
        waits at 08:00 and takes 6 kW at 12:00 (6 + 6 + 6 + 2 kWh)."""
        morning = plan_charging(now=at(8), slots=self.slots, cars=[self.car], demands=flat(6), cap_kw=20, grid_kw=50)
        assert morning.kw_now["car"] == 0
        assert morning.raised_to_kw == {}
        noon = plan_charging(now=at(12), slots=self.slots[4:], cars=[self.car], demands=flat(6), cap_kw=20, grid_kw=50)
        assert noon.kw_now["car"] == pytest.approx(6.0)

    def test_the_building_load_takes_its_part_of_the_free_level(self) -> None:
        """Same 6 kW peak, but the building draws 1 kW: 4 h x 5 kW = 20 kWh, still enough."""
        noon = plan_charging(
            now=at(12), slots=self.slots[4:], cars=[self.car], demands=flat(6), cap_kw=20, grid_kw=50, other_kw=1
        )
        assert noon.kw_now["car"] == pytest.approx(5.0)

    def test_a_car_that_cannot_wait_charges_now(self) -> None:
        """At 15:00 with 10 kWh still to go and 1 h left at 7 kW, 7 kWh is all it can get: it
        charges at its maximum and 3 kWh is reported as unmet."""
        late = CarNeed("car", 10.0, at(16), 7.0)
        plan = plan_charging(now=at(15), slots=self.slots[7:], cars=[late], demands=flat(6), cap_kw=20, grid_kw=50)
        assert plan.kw_now["car"] == pytest.approx(7.0)
        assert plan.unmet_kwh == pytest.approx(3.0)

    def test_a_car_leaving_within_the_slot_takes_its_energy_before_it_leaves(self) -> None:
        """At 15:00 the slot runs to 16:00 but the car leaves at 15:15 with 1.5 kWh to go: it cannot
        get any later, so it gets 1.5 kWh over its 15 minutes, 6 kW, not 1.5 kW over the hour."""
        leaving = CarNeed("car", 1.5, at(15) + timedelta(minutes=15), 7.0)
        plan = plan_charging(now=at(15), slots=self.slots[7:], cars=[leaving], demands=flat(6), cap_kw=20, grid_kw=50)
        assert plan.kw_now["car"] == pytest.approx(6.0)
        assert plan.unmet_kwh == 0


class TestOneDemandWindow:
    """Two cars, a flat charge and no peak yet; equal prices, so only demand matters.

    A needs 10 kWh by 10:00 (two hours), B 6 kWh by 12:00; both take up to 7 kW. A alone needs
    5 kW for its two hours; A and B need 16 kWh in four hours, and 5 kW for four hours is 20: so
    the lowest level that finishes both is 5 kW, set in the first window and never exceeded.
    """

    def test_the_level_is_the_lowest_that_finishes_every_car(self) -> None:
        cars = [CarNeed("A", 10.0, at(10), 7.0), CarNeed("B", 6.0, at(12), 7.0)]
        plan = plan_charging(now=at(8), slots=hours(8, 12, 0.1), cars=cars, demands=flat(0), cap_kw=20, grid_kw=50)
        assert plan.raised_to_kw["flat"] == pytest.approx(5.0, abs=0.02)
        assert max(plan.levels_kw) == pytest.approx(5.0, abs=0.02)
        # A cannot get more than 7 kWh in its last hour: 3 kWh now at least, and it has the least
        # laxity (2 h - 10/7 h), so the whole 5 kW goes to A; B waits.
        assert plan.kw_now["A"] == pytest.approx(5.0, abs=0.02)
        assert plan.kw_now["B"] == 0

    def test_an_on_peak_window_is_raised_only_when_off_peak_cannot_do_it(self) -> None:
        """Off-peak (flat only, $10/kW) 08:00-10:00, on-peak (flat + $20/kW) 10:00-12:00. One car,
        14 kWh by 12:00, 7 kW max: 2 off-peak hours at 7 kW give 14 kWh, so only the off-peak
        level rises (to 7 kW) and nothing is planned on-peak."""
        slots = hours(8, 10, 0.1) + hours(10, 12, 0.1, ("flat", "tou:1"))
        demands = flat(0) | {"tou:1": DemandState("tou:1", "on-peak demand", 20.0, 0.0)}
        plan = plan_charging(
            now=at(8), slots=slots, cars=[CarNeed("car", 14.0, at(12), 7.0)], demands=demands, cap_kw=20, grid_kw=50
        )
        assert plan.kw_now["car"] == pytest.approx(7.0, abs=0.02)
        assert plan.levels_kw[2:] == [0.0, 0.0]
        assert "tou:1" not in plan.raised_to_kw


class TestChargersMinimum:
    """A charger cannot go below its minimum power (here 1.5 kW): a car waits or charges at 1.5 kW
    or more. One slot 08:00-09:00 then three more to 12:00, equal prices; this month already
    peaked at 5 kW, so the hour may hold 5 kWh."""

    slots = hours(8, 12, 0.1)

    def test_a_car_is_not_started_on_less_than_its_minimum(self) -> None:
        """A leaves at 09:00 needing 4.5 kWh: it must have them now. That leaves 0.5 kWh of the
        hour, 0.5 kW, below B's 1.5 kW: B waits (it has three more hours) rather than being
        planned at 0.5 kW, which a charger would run at 1.5 kW and so draw 6 kWh in the hour."""
        cars = [CarNeed("A", 4.5, at(9), 7.0, 1.5), CarNeed("B", 2.0, at(12), 7.0, 1.5)]
        plan = plan_charging(now=at(8), slots=self.slots, cars=cars, demands=flat(5), cap_kw=20, grid_kw=50)
        assert plan.kw_now == {"A": pytest.approx(4.5), "B": 0.0}
        assert plan.raised_to_kw == {}

    def test_a_car_that_must_charge_gets_its_minimum_and_the_others_give_way(self) -> None:
        """C leaves at 09:00 needing 0.5 kWh: it gets 1.5 kW and has its 0.5 kWh in 20 minutes.
        The hour's 5 kWh less C's 0.5 leaves 4.5 kWh for D: 4.5 kW."""
        cars = [CarNeed("C", 0.5, at(9), 7.0, 1.5), CarNeed("D", 10.0, at(12), 7.0, 1.5)]
        plan = plan_charging(now=at(8), slots=self.slots, cars=cars, demands=flat(5), cap_kw=20, grid_kw=50)
        assert plan.kw_now == {"C": pytest.approx(1.5), "D": pytest.approx(4.5)}

    def test_a_car_is_started_on_its_minimum_within_the_sites_peak_margin(self) -> None:
        """With a 0.5 kW peak margin the plan keeps to 5 - 0.5 = 4.5 kWh in the hour. A must have
        3.3 kWh now; 1.2 kWh is left, 0.3 short of B's 1.5 kW minimum, within the margin: B starts
        at 1.5 kW (4.8 kW in all, still under the 5 kW the month has set)."""
        cars = [CarNeed("A", 3.3, at(9), 7.0, 1.5), CarNeed("B", 2.0, at(12), 7.0, 1.5)]
        plan = plan_charging(
            now=at(8), slots=self.slots, cars=cars, demands=flat(5), cap_kw=20, grid_kw=50, margin_kw=0.5
        )
        assert plan.kw_now == {"A": pytest.approx(3.3), "B": pytest.approx(1.5)}

    def test_a_raise_below_a_lone_cars_minimum_is_rounded_up_to_it(self) -> None:
        """No peak yet; one car needs 4 kWh by 10:00, its charger's minimum is 2.5 kW. The lowest
        level that finishes it is 2 kW: the month's demand rises anyway, so the car runs at 2.5
        kW now rather than waiting (which would leave it 4 kWh for its last hour)."""
        car = CarNeed("car", 4.0, at(10), 7.0, 2.5)
        plan = plan_charging(now=at(8), slots=self.slots, cars=[car], demands=flat(0), cap_kw=20, grid_kw=50)
        assert plan.raised_to_kw["flat"] == pytest.approx(2.0, abs=0.02)
        assert plan.kw_now["car"] == pytest.approx(2.5)


class TestWindowAlreadyDrawn:
    """15-minute demand windows, equal prices, this month's peak 20 kW: a window may hold 5 kWh.
    At 08:10 the window 08:00-08:15 has 5 minutes left. One car needing 10 kWh by 12:00, 7 kW at
    most (0.583 kWh in 5 minutes)."""

    now = at(8) + timedelta(minutes=10)
    edges = [now] + [at(8) + timedelta(minutes=m) for m in range(15, 255, 15)]
    slots = [Slot(start, end, 0.1, ("flat",)) for start, end in pairwise(edges)]
    car = CarNeed("car", 10.0, at(12), 7.0, 1.5)

    def plan(self, drawn: tuple[float, float]):
        return plan_charging(
            now=self.now, slots=self.slots, cars=[self.car], demands=flat(20), cap_kw=20, grid_kw=50, window_drawn=drawn
        )

    def test_what_the_window_drew_above_the_level_is_taken_off_now(self) -> None:
        """The first 10 minutes drew 4.5 kWh (27 kW: cars that left took theirs fast). 5 - 4.5 =
        0.5 kWh for the last 5 minutes: 6 kW, not the car's 7 kW, and the window stays at 20 kW."""
        assert self.plan((1 / 6, 4.5)).kw_now["car"] == pytest.approx(6.0)

    def test_a_window_already_full_lets_a_car_with_time_wait(self) -> None:
        """5.5 kWh in 10 minutes is already 22 kW for the window: the car waits; no raise."""
        plan = self.plan((1 / 6, 5.5))
        assert plan.kw_now["car"] == 0
        assert plan.raised_to_kw == {}

    def test_energy_not_drawn_earlier_is_not_made_up_above_the_level(self) -> None:
        """Four such cars could take 28 kW. The first 10 minutes drew 1 kWh (6 kW): the window
        could still take 4 kWh, 48 kW for 5 minutes, but the cars get the level's 20 kW, no more
        (a burst above the level to fill the window is not planned)."""
        cars = [CarNeed(f"car{n}", 10.0, at(12), 7.0, 1.5) for n in range(4)]
        for drawn in ((1 / 6, 1.0), (0.0, 0.0)):
            plan = plan_charging(
                now=self.now, slots=self.slots, cars=cars, demands=flat(20), cap_kw=20, grid_kw=50, window_drawn=drawn
            )
            assert sum(plan.kw_now.values()) == pytest.approx(20.0)


def test_slots_follow_the_tariffs_windows_and_periods() -> None:
    """A URDB record: $0.10 before 12:00, $0.30 after, 15-minute windows, $10/kW facility demand."""
    record = {
        "name": "Two-period test",
        "energyratestructure": [[{"rate": 0.10}], [{"rate": 0.30}]],
        "energyweekdayschedule": [[0] * 12 + [1] * 12] * 12,
        "energyweekendschedule": [[0] * 24] * 12,
        "flatdemandstructure": [[{"rate": 10}]],
        "flatdemandmonths": [0] * 12,
    }
    spec = tariff_from_urdb(record)
    tz = ZoneInfo("UTC")
    slots = tariff_slots(spec, tz, at(11) + timedelta(minutes=40), at(12) + timedelta(minutes=15))
    assert [(s.start.strftime("%H:%M"), s.end.strftime("%H:%M"), s.price_kwh) for s in slots] == [
        ("11:40", "11:45", 0.10),
        ("11:45", "12:00", 0.10),
        ("12:00", "12:15", 0.30),
    ]
    assert all(s.demand_keys == ("flat",) for s in slots)
    # The month so far: one 15-minute window at 24 kW (6 kWh) sets the facility demand.
    bill = bill_month(spec, {at(9): Decimal(6)}, tz=tz, year=2026, month=7, interval_minutes=15)
    states = demand_states(spec, month=7, peak=(float(bill.peak_kw), bill.peak_at), tou={})
    assert states["flat"].peak_kw == 24.0
    assert states["flat"].price_per_kw == 10.0
