"""The simulated charger obeys OCPP profile stacking; its car tapers near full."""

from datetime import UTC, datetime, timedelta

import pytest

from chargepoint.simulator.model import Car, ProfileStore, profile_from_ocpp

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
