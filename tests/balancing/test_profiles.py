"""Charging profiles we build are valid OCPP, by the `ocpp` library's own JSON schemas."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import ocpp
import pytest
from jsonschema import Draft4Validator

from balancing.profiles import failsafe_profile, tx_profile

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
