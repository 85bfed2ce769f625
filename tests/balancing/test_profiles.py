"""Charging profiles we build are valid OCPP, by the `ocpp` library's own JSON schemas."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import ocpp
import pytest
from jsonschema import Draft4Validator, ValidationError

from balancing.profiles import (
    DEFAULT_PROFILE_ID,
    STATION_MAX_PROFILE_ID,
    TX_PROFILE_ID_BASE,
    failsafe_profile,
    station_max_profile,
    tx_profile,
)

NOW = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def validate_on_the_wire(version: str, payload: dict) -> None:
    """Validate as a charger's OCPP stack would: JSON text, decimals parsed exactly, the
    `ocpp` library's own schema (read here, not through its validator cache, whose float
    handling depends on who asked first)."""
    folder = "v16" if version == "1.6" else "v201"
    name = "SetChargingProfile" if version == "1.6" else "SetChargingProfileRequest"
    path = Path(ocpp.__file__).parent / folder / "schemas" / f"{name}.json"
    schema = json.loads(path.read_text(encoding="utf-8-sig"), parse_float=Decimal)
    Draft4Validator(schema).validate(json.loads(json.dumps(payload), parse_float=Decimal))


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_tx_profile_is_schema_valid_and_limited_in_time(version: str) -> None:
    payload = tx_profile(
        ocpp_version=version,
        connector_id=2,
        transaction_id="4711",
        limit_a=13.26,
        number_phases=3,
        now=NOW,
        valid_to=NOW + timedelta(minutes=15),
    )

    validate_on_the_wire(version, payload)
    profile = payload["csChargingProfiles"] if version == "1.6" else payload["chargingProfile"]
    assert profile["chargingProfilePurpose"] == "TxProfile"
    assert profile["validTo"] == "2026-05-01T09:15:00Z"
    schedule = profile["chargingSchedule"] if version == "1.6" else profile["chargingSchedule"][0]
    assert schedule["chargingRateUnit"] == "A"
    assert schedule["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 13.3, "numberPhases": 3}]


def test_ocpp16_tx_profile_binds_the_integer_transaction_id() -> None:
    payload = tx_profile(
        ocpp_version="1.6",
        connector_id=1,
        transaction_id="42",
        limit_a=6,
        number_phases=1,
        now=NOW,
        valid_to=NOW + timedelta(minutes=15),
    )
    assert payload["csChargingProfiles"]["transactionId"] == 42


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_failsafe_default_is_schema_valid_and_never_expires(version: str) -> None:
    payload = failsafe_profile(ocpp_version=version, limit_a=6, number_phases=3)

    validate_on_the_wire(version, payload)
    profile = payload["csChargingProfiles"] if version == "1.6" else payload["chargingProfile"]
    assert profile["chargingProfilePurpose"] == "TxDefaultProfile"
    assert "validTo" not in profile
    assert payload.get("connectorId", payload.get("evseId")) == 0


@pytest.mark.parametrize(
    ("version", "purpose"), [("1.6", "ChargePointMaxProfile"), ("2.0.1", "ChargingStationMaxProfile")]
)
@pytest.mark.parametrize("now", [None, NOW])
def test_station_max_profile_is_schema_valid_station_wide_and_never_expires(version, purpose, now) -> None:
    payload = station_max_profile(ocpp_version=version, limit_a=Decimal("12.04"), number_phases=1, now=now)

    validate_on_the_wire(version, payload)
    profile = payload["csChargingProfiles"] if version == "1.6" else payload["chargingProfile"]
    assert payload.get("connectorId", payload.get("evseId")) == 0
    assert (profile["chargingProfilePurpose"], profile["chargingProfileKind"]) == (purpose, "Absolute")
    assert "validTo" not in profile
    schedule = profile["chargingSchedule"] if version == "1.6" else profile["chargingSchedule"][0]
    assert schedule["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 12.0, "numberPhases": 1}]
    assert schedule.get("startSchedule") == (None if now is None else "2026-05-01T09:00:00Z")
    profile_id = profile.get("chargingProfileId", profile.get("id"))
    # Its own id: it neither replaces the fail-safe default nor any connector's TxProfile.
    assert profile_id == STATION_MAX_PROFILE_ID
    assert profile_id != DEFAULT_PROFILE_ID
    assert profile_id < TX_PROFILE_ID_BASE


def test_the_schema_check_bites_on_a_purpose_ocpp_does_not_know() -> None:
    payload = station_max_profile(ocpp_version="1.6", limit_a=16, number_phases=3)
    payload["csChargingProfiles"]["chargingProfilePurpose"] = "StationMaxProfile"
    with pytest.raises(ValidationError):
        validate_on_the_wire("1.6", payload)


def test_a_negative_station_limit_is_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match="limit_a: -1 A is negative"):
        station_max_profile(ocpp_version="2.0.1", limit_a=-1, number_phases=3)
