"""The simulated charger obeys OCPP profile stacking, its car tapers near full, its faults misbehave."""

from datetime import UTC, datetime, timedelta

import pytest

from chargepoint.simulator.fleet import TruthSample, fault_metrics
from chargepoint.simulator.model import (
    DROP_RECONNECT,
    IGNORE_PROFILES,
    IGNORE_TX_PROFILES,
    REJECT_PROFILES,
    SLEEPING_CAR,
    Car,
    Fault,
    ProfileStore,
    parse_fault,
    profile_answer,
    profile_from_ocpp,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def profile(purpose: str, limit: float, *, connector: int = 1, stack: int = 0, pid: int = 1, tx=None, periods=None):
    raw = {
        "chargingProfileId": pid,
        "stackLevel": stack,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": periods or [{"startPeriod": 0, "limit": limit}],
        },
    }
    if tx is not None:
        raw["transactionId"] = tx
    return profile_from_ocpp(connector_id=connector, raw=raw, now=NOW, voltage_v=230, phases=3, tx_started=None)


def limit(store: ProfileStore, tx: str | None = "7", at: datetime = NOW) -> float:
    return store.limit_a(connector_id=1, now=at, transaction_id=tx, rating_a=16)


def test_tx_profile_wins_over_tx_default_and_the_highest_stack_level_wins() -> None:
    store = ProfileStore()
    store.install(profile("TxDefaultProfile", 12, stack=0, pid=1))
    store.install(profile("TxDefaultProfile", 8, stack=2, pid=2))
    assert limit(store) == 8
    store.install(profile("TxProfile", 14, stack=0, pid=3, tx="7"))
    assert limit(store) == 14
    assert limit(store, tx="8") == 8  # another transaction's TxProfile does not apply


def test_the_station_maximum_caps_every_connector() -> None:
    store = ProfileStore()
    store.install(profile("TxProfile", 14, pid=1))
    assert store.install(profile("ChargePointMaxProfile", 10, connector=0, pid=2)) == "Accepted"
    assert limit(store) == 10


def test_without_a_transaction_only_defaults_apply_and_connector_zero_defaults_count() -> None:
    store = ProfileStore()
    store.install(profile("TxDefaultProfile", 9, connector=0, pid=1))
    assert limit(store, tx=None) == 9
    store.install(profile("TxDefaultProfile", 11, connector=1, pid=2))
    assert limit(store, tx=None) == 11


def test_a_limit_under_six_amps_pauses_and_schedules_step_in_time() -> None:
    store = ProfileStore()
    store.install(profile("TxProfile", 0, periods=[{"startPeriod": 0, "limit": 4}, {"startPeriod": 60, "limit": 10}]))
    assert limit(store) == 0
    assert limit(store, at=NOW + timedelta(seconds=61)) == 10


def test_same_purpose_and_stack_level_replace_and_clear_by_purpose() -> None:
    store = ProfileStore()
    store.install(profile("TxDefaultProfile", 12, pid=1))
    store.install(profile("TxDefaultProfile", 7, pid=2))
    assert len(store.profiles) == 1
    assert limit(store) == 7
    assert store.clear(purpose="TxDefaultProfile") == "Accepted"
    assert store.clear(purpose="TxDefaultProfile") == "Unknown"
    assert limit(store) == 16


def test_misplaced_profiles_are_rejected() -> None:
    store = ProfileStore()
    assert store.install(profile("ChargePointMaxProfile", 10, connector=1)) == "Rejected"
    assert store.install(profile("TxProfile", 10, connector=0)) == "Rejected"


def test_watt_schedules_are_turned_into_amps_per_phase() -> None:
    p = profile_from_ocpp(
        connector_id=1,
        raw={
            "id": 3,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": [
                {"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6900}]}
            ],
        },
        now=NOW,
        voltage_v=230,
        phases=3,
        tx_started=None,
    )
    assert p.limit_at(NOW) == pytest.approx(10.0)


def test_a_car_takes_its_rate_until_80_percent_then_tapers() -> None:
    car = Car(max_power_kw=11.0, soc=0.5)
    assert car.draw_kw(offered_a=16, voltage_v=230, phases=3) == 11.0
    assert car.draw_kw(offered_a=10, voltage_v=230, phases=3) == pytest.approx(6.9)
    assert car.draw_kw(offered_a=5, voltage_v=230, phases=3) == 0
    car.soc = 0.9
    assert car.acceptance_kw() == pytest.approx(5.5)
    car.soc = 1.0
    assert car.draw_kw(offered_a=16, voltage_v=230, phases=3) == 0


# -- fault modes --------------------------------------------------------------------------------


def test_a_charger_that_ignores_profiles_accepts_them_but_offers_its_rating() -> None:
    store = ProfileStore()
    fault = Fault(IGNORE_PROFILES)
    assert profile_answer(fault=fault, store=store, profile=profile("TxProfile", 8)) == "Accepted"
    assert profile_answer(
        fault=fault, store=store, profile=profile("ChargePointMaxProfile", 10, connector=0, pid=2)
    ) == ("Accepted")
    assert store.limit_a(connector_id=1, now=NOW, transaction_id="7", rating_a=16, fault=fault) == 16
    assert limit(store) == 8  # the same profiles on a charger that behaves


def test_a_charger_that_ignores_tx_profiles_still_obeys_the_station_maximum() -> None:
    store = ProfileStore()
    fault = Fault(IGNORE_TX_PROFILES)
    profile_answer(fault=fault, store=store, profile=profile("TxProfile", 8, pid=1))
    profile_answer(fault=fault, store=store, profile=profile("TxDefaultProfile", 7, pid=2))
    assert store.limit_a(connector_id=1, now=NOW, transaction_id="7", rating_a=16, fault=fault) == 16
    profile_answer(fault=fault, store=store, profile=profile("ChargingStationMaxProfile", 10, connector=0, pid=3))
    assert store.limit_a(connector_id=1, now=NOW, transaction_id="7", rating_a=16, fault=fault) == 10
    profile_answer(fault=fault, store=store, profile=profile("ChargingStationMaxProfile", 3, connector=0, pid=3))
    assert store.limit_a(connector_id=1, now=NOW, transaction_id="7", rating_a=16, fault=fault) == 0


def test_a_charger_that_rejects_profiles_stores_none_the_default_included() -> None:
    store = ProfileStore()
    fault = Fault(REJECT_PROFILES)
    assert profile_answer(fault=fault, store=store, profile=profile("TxDefaultProfile", 6, connector=0)) == "Rejected"
    assert profile_answer(fault=fault, store=store, profile=profile("TxProfile", 8, pid=2)) == "Rejected"
    assert store.profiles == []
    assert store.limit_a(connector_id=1, now=NOW, transaction_id="7", rating_a=32, fault=fault) == 32


def test_a_sleeping_car_stops_for_good_once_paused_after_it_drew() -> None:
    car = Car(max_power_kw=7.4, sleeps=True)
    assert not car.observe(offered_a=0, session_s=1)  # has not drawn yet: waiting for its first offer
    power = car.draw_kw(offered_a=16, voltage_v=230, phases=1)
    car.charge(power_kw=power, seconds=5)
    assert power == pytest.approx(3.68)
    assert car.observe(offered_a=0, session_s=10) is True
    assert car.observe(offered_a=16, session_s=20) is False  # already asleep
    assert car.draw_kw(offered_a=16, voltage_v=230, phases=1) == 0


def test_a_sleeping_car_with_a_time_falls_asleep_then_and_a_normal_car_never() -> None:
    car = Car(max_power_kw=7.4, sleeps=True, sleep_after_s=30)
    assert not car.observe(offered_a=16, session_s=29)
    assert car.observe(offered_a=16, session_s=30)
    normal = Car(max_power_kw=7.4)
    normal.charge(power_kw=7.4, seconds=5)
    assert not normal.observe(offered_a=0, session_s=1000)
    assert normal.draw_kw(offered_a=16, voltage_v=230, phases=1) == pytest.approx(3.68)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ignore_profiles", Fault(IGNORE_PROFILES)),
        ("reject_profiles", Fault(REJECT_PROFILES)),
        ("drop_reconnect:30:4", Fault(DROP_RECONNECT, drop_every_s=30, reconnect_after_s=4)),
        ("drop_reconnect", Fault(DROP_RECONNECT)),
        ("sleeping_car:90", Fault(SLEEPING_CAR, sleep_after_s=90)),
        ("sleeping_car", Fault(SLEEPING_CAR)),
    ],
)
def test_fault_texts_parse(text: str, expected: Fault) -> None:
    assert parse_fault(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("explode", "fault mode: 'explode'"),
        ("drop_reconnect:x", "are not numbers"),
        ("drop_reconnect:0:1", "drop_every_s"),
        ("drop_reconnect:1:2:3", "at most EVERY_S:AFTER_S"),
        ("sleeping_car:-1", "sleep_after_s"),
        ("ignore_profiles:5", "takes no arguments"),
    ],
)
def test_bad_fault_texts_are_refused_naming_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_fault(text)


# -- fault figures --------------------------------------------------------------------------------


def test_fault_metrics_count_time_power_and_energy_above_the_cap_from_the_fault_on() -> None:
    samples = [TruthSample(float(t), kw) for t, kw in enumerate([25, 19, 19, 22, 23, 20.02, 19.5, 19.5])]
    m = fault_metrics(samples, cap_kw=20, fault_at_s=2)
    assert m.seconds_above == 2  # t=3 and t=4; t=0 is before the fault, 20.02 is within rounding
    assert m.max_kw_above == pytest.approx(3)
    assert m.kwh_above == pytest.approx((2 + 3) / 3600)
    assert m.recover_s == 3  # back under at t=5
    assert m.samples == 6


def test_fault_metrics_without_excess_recover_at_once_and_unrecovered_is_none() -> None:
    calm = fault_metrics([TruthSample(t, 18.0) for t in (0.0, 1.0, 2.0)], cap_kw=20, fault_at_s=0)
    assert (calm.seconds_above, calm.max_kw_above, calm.recover_s) == (0, 0, 0)
    stuck = fault_metrics([TruthSample(0.0, 18), TruthSample(1.0, 21)], cap_kw=20, fault_at_s=0)
    assert stuck.recover_s is None


def test_behaving_share_is_their_draw_over_what_the_cap_leaves_them_within_their_demand() -> None:
    samples = [
        TruthSample(0.0, 20, behaving_kw=12.8, misbehaving_kw=7.2, behaving_demand_kw=21),
        TruthSample(1.0, 16, behaving_kw=8.8, misbehaving_kw=7.2, behaving_demand_kw=21),
        TruthSample(2.0, 14, behaving_kw=14.0, misbehaving_kw=0.0, behaving_demand_kw=14),  # demand-bound
    ]
    m = fault_metrics(samples, cap_kw=20, fault_at_s=0, steady_from_s=1)
    assert m.behaving_share == pytest.approx((8.8 + 14) / (12.8 + 14))


def test_simulate_chargers_fault_options_apply_to_the_named_charger_and_bad_ones_are_refused() -> None:
    from django.core.management.base import CommandError

    from chargepoint.management.commands.simulate_chargers import with_faults
    from chargepoint.simulator.fleet import seed_specs

    specs = with_faults(seed_specs(["A", "B"], "pw-123456789012"), ["B=drop_reconnect:20:3"])
    assert [s.fault for s in specs] == [Fault(), Fault(DROP_RECONNECT, drop_every_s=20, reconnect_after_s=3)]
    with pytest.raises(CommandError, match="'C' is not one of the simulated chargers"):
        with_faults(specs, ["C=ignore_profiles"])
    with pytest.raises(CommandError, match="not CP-ID=MODE"):
        with_faults(specs, ["ignore_profiles"])
    with pytest.raises(CommandError, match="--fault A: fault mode: 'melt'"):
        with_faults(specs, ["A=melt"])
