"""What a charger reports is checked and brought to canonical units before it leaves the gateway."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from ocpp.exceptions import PropertyConstraintViolationError

from chargepoint.gateway import normalise

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_kilo_units_become_base_units_and_defaults_follow_the_measurand() -> None:
    samples = normalise.meter_values_16(
        [
            {
                "timestamp": "2026-05-01T11:59:50Z",
                "sampled_value": [
                    {"value": "12.5", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
                    {"value": "7.2", "measurand": "Power.Active.Import", "unit": "kW"},
                    {"value": "10.4", "measurand": "Current.Import", "phase": "L2"},
                    {"value": "999"},
                ],
            }
        ],
        now=NOW,
    )

    assert [(s["measurand"], s["value"], s["unit"], s["phase"]) for s in samples] == [
        ("Energy.Active.Import.Register", "12500.000000", "Wh", ""),
        ("Power.Active.Import", "7200.000000", "W", ""),
        ("Current.Import", "10.400000", "A", "L2"),
        ("Energy.Active.Import.Register", "999.000000", "Wh", ""),
    ]
    assert samples[0]["at"] == "2026-05-01T11:59:50+00:00"


def test_201_multiplier_and_unit_of_measure_are_applied() -> None:
    samples = normalise.meter_values_201(
        [
            {
                "timestamp": "2026-05-01T11:59:50Z",
                "sampled_value": [
                    {
                        "value": 3.5,
                        "measurand": "Energy.Active.Import.Register",
                        "unit_of_measure": {"unit": "Wh", "multiplier": 3},
                    },
                    {"value": 16, "measurand": "Current.Offered"},
                ],
            }
        ],
        now=NOW,
    )

    assert [(s["value"], s["unit"]) for s in samples] == [("3500.000000", "Wh"), ("16.000000", "A")]
    assert normalise.energy_register_wh(samples) == "3500.000000"


def test_signed_data_is_not_taken_for_a_number() -> None:
    samples = normalise.meter_values_16(
        [{"timestamp": "2026-05-01T11:59:50Z", "sampled_value": [{"value": "AbC=", "format": "SignedData"}]}], now=NOW
    )

    assert samples == []


@pytest.mark.parametrize("value", ["abc", "NaN", "Infinity", "1e20", "", "0x10", True], ids=lambda v: f"value={v!r}")
def test_a_reading_that_is_no_number_in_range_is_refused(value) -> None:
    with pytest.raises(PropertyConstraintViolationError):
        normalise.meter_values_16([{"timestamp": "2026-05-01T11:59:50Z", "sampled_value": [{"value": value}]}], now=NOW)


@pytest.mark.parametrize(
    "stamp",
    ["2026-05-03T12:00:00Z", "1999-12-31T23:59:59Z", "yesterday", "2026-13-01T00:00:00Z", 17],
)
def test_implausible_timestamps_are_refused(stamp) -> None:
    with pytest.raises(PropertyConstraintViolationError):
        normalise.timestamp(stamp, now=NOW)


def test_a_naive_timestamp_is_taken_as_utc() -> None:
    assert normalise.timestamp("2026-05-01T11:00:00", now=NOW) == datetime(2026, 5, 1, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize("connector", [-1, 17, "1", 1.0, None, False])
def test_connector_ids_outside_the_registered_range_are_refused(connector) -> None:
    with pytest.raises(PropertyConstraintViolationError):
        normalise.connector_id(connector)


def test_number_keeps_six_decimals_and_bounds() -> None:
    assert normalise.number("1.23456789", field="x") == Decimal("1.234568")
    with pytest.raises(PropertyConstraintViolationError):
        normalise.number("-1", field="x", low=Decimal(0))
