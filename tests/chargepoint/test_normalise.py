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


@pytest.mark.parametrize(
    ("measurand", "value", "unit"),
    [
        ("Energy.Active.Import.Register", "-1e12", "Wh"),
        ("Energy.Active.Import.Register", "2e10", "Wh"),
        ("Energy.Active.Import.Interval", "-1", "Wh"),
        ("Current.Import", "-500", "A"),
        ("Current.Import", "1001", "A"),
        ("Current.Offered", "33", "A"),  # twice the rating of 16 A, and more
        ("Power.Active.Import", "-7.2", "kW"),
        ("Power.Active.Import", "1001", "kW"),
        ("Power.Factor", "1.5", ""),
        ("Voltage", "1200", "V"),
        ("Voltage", "-230", "V"),
        ("SoC", "101", "Percent"),
        ("SoC", "-1", "Percent"),
    ],
)
def test_a_reading_outside_what_a_charger_can_measure_is_refused(measurand, value, unit) -> None:
    limits = normalise.Limits.for_station(connectors=2, rating_a=Decimal(16))
    reading = [
        {"timestamp": "2026-05-01T11:59:50Z", "sampled_value": [{"value": value, "measurand": measurand, "unit": unit}]}
    ]

    with pytest.raises(PropertyConstraintViolationError):
        normalise.meter_values_16(reading, now=NOW, limits=limits)


def test_readings_at_the_edges_of_the_physical_range_are_kept() -> None:
    limits = normalise.Limits.for_station(connectors=2, rating_a=Decimal(16))
    values = [
        {"value": "0", "measurand": "Energy.Active.Import.Register"},
        {"value": "32", "measurand": "Current.Import"},
        {"value": "-1", "measurand": "Power.Factor"},
        {"value": "0", "measurand": "Power.Active.Export"},
        {"value": "100", "measurand": "SoC"},
    ]

    samples = normalise.meter_values_16(
        [{"timestamp": "2026-05-01T11:59:50Z", "sampled_value": values}], now=NOW, limits=limits
    )

    assert len(samples) == 5


@pytest.mark.parametrize("stamp", ["2026-05-01T12:06:00Z", "2026-05-02T12:00:00Z", "2011-01-01T00:00:00Z"])
def test_a_reading_dated_past_the_clock_skew_or_older_than_retention_is_refused(stamp, settings) -> None:
    settings.GATEWAY_CLOCK_SKEW_S = 300
    settings.TELEMETRY_RETENTION_DAYS = 90
    reading = [{"timestamp": stamp, "sampled_value": [{"value": "1"}]}]

    with pytest.raises(PropertyConstraintViolationError):
        normalise.meter_values_16(reading, now=NOW)


def test_a_reading_within_the_clock_skew_is_kept(settings) -> None:
    settings.GATEWAY_CLOCK_SKEW_S = 300

    samples = normalise.meter_values_16(
        [{"timestamp": "2026-05-01T12:04:00Z", "sampled_value": [{"value": "1"}]}], now=NOW
    )

    assert len(samples) == 1


@pytest.mark.parametrize(("connector", "ok"), [(0, True), (2, True), (3, False), (7, False)])
def test_a_connector_beyond_the_registered_count_is_refused(connector, ok) -> None:
    limits = normalise.Limits.for_station(connectors=2, rating_a=Decimal(16))

    if ok:
        assert normalise.connector_id(connector, limits=limits) == connector
    else:
        with pytest.raises(PropertyConstraintViolationError):
            normalise.connector_id(connector, limits=limits)


def test_a_site_meter_may_report_a_whole_site_on_connector_0_only() -> None:
    limits = normalise.Limits.for_station(connectors=0, rating_a=Decimal(16), site_meter=True)
    site = [
        {"value": "2000", "measurand": "Power.Active.Import", "unit": "kW"},
        {"value": "2500", "measurand": "Current.Import"},
    ]

    samples = normalise.meter_values_16(
        [{"timestamp": "2026-05-01T11:59:50Z", "sampled_value": site}], now=NOW, limits=limits
    )

    assert [s["value"] for s in samples] == ["2000000.000000", "2500.000000"]
    assert normalise.connector_id(0, limits=limits) == 0
    with pytest.raises(PropertyConstraintViolationError):
        normalise.connector_id(1, limits=limits)
