"""Meter readings on the real PostgreSQL: one row per instant, completed never overwritten, partitions made at ingest.

Through ``telemetry_apply`` (the worker's entry point) where the ingest decides something,
through ``readings_store`` where the store itself does.
"""

import logging
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from django.db import IntegrityError, connection
from django.utils import timezone as django_timezone

from billing.intervals import interval_floor
from chargepoint.gateway import normalise
from chargepoint.models import ChargingStation, MeterReading, ReadingContext, RollupPending
from chargepoint.partitions import partition_name, partitions_list
from chargepoint.readings import ReadingRows, reading_values, readings_store
from chargepoint.telemetry import telemetry_apply
from tests.factories import ChargingSessionFactory, ChargingStationFactory, ConnectorFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
CP = "READ-1"


@pytest.fixture
def station() -> ChargingStation:
    station = ChargingStationFactory(charge_point_id=CP, max_current_a=32)
    ConnectorFactory(station=station, connector_id=1)
    return station


def sample(
    at: datetime, measurand: str, value: str, unit: str, *, phase: str = "", location: str = "", context: str = ""
) -> dict[str, str]:
    return {
        "at": at.isoformat(),
        "measurand": measurand,
        "phase": phase,
        "location": location,
        "context": context,
        "value": value,
        "unit": unit,
    }


def meter(samples: list[dict[str, str]], *, connector: int | None = 1, transaction_id: str | None = None) -> dict:
    return {
        "type": "meter",
        "cp": CP,
        "ts": samples[0]["at"],
        "connector": connector,
        "transaction_id": transaction_id,
        "samples": samples,
    }


def row(station: ChargingStation, at: datetime, connector_no: int = 1) -> MeterReading:
    return MeterReading.objects.get(station=station, sampled_at=at, connector_no=connector_no)


def as_values(reading: MeterReading) -> set[tuple[Any, ...]]:
    return {(v["measurand"], v["phase"], v["location"], v["value"], v["unit"]) for v in reading_values(reading)}


# --- One row per instant ------------------------------------------------------------------------


def test_the_values_of_one_instant_merge_into_one_row_with_typed_columns(station) -> None:
    later = T0 + timedelta(seconds=10)
    outcome = telemetry_apply(
        events=[
            meter(
                [
                    sample(T0, "Energy.Active.Import.Register", "12345.5", "Wh", context="Sample.Periodic"),
                    sample(T0, "Power.Active.Import", "7360", "W"),
                    *[
                        sample(T0, "Current.Import", a, "A", phase=f"L{n}")
                        for n, a in ((1, "10.5"), (2, "11"), (3, "9.25"))
                    ],
                    sample(T0, "Current.Offered", "16", "A"),
                    sample(T0, "Voltage", "231.5", "V"),
                    sample(T0, "SoC", "42", "Percent", location="EV"),
                    sample(later, "Current.Import", "4", "A"),
                ]
            )
        ]
    )

    assert outcome.samples == 9
    assert MeterReading.objects.filter(station=station).count() == 2
    first = row(station, T0)
    assert (first.energy_wh, first.power_w, first.offered_a, first.voltage_v, first.soc_pct) == (
        12345.5,
        7360.0,
        16.0,
        231.5,
        42.0,
    )
    assert (first.current_l1_a, first.current_l2_a, first.current_l3_a, first.current_a) == (10.5, 11.0, 9.25, None)
    assert first.current_max_a == 11.0
    assert first.context == ReadingContext.SAMPLE_PERIODIC  # named by the first value that said why
    assert first.extra is None
    assert row(station, later).current_a == 4.0


def test_one_instant_written_in_two_time_zones_is_one_row(station) -> None:
    """The same instant as +02:00 and as UTC, in one message: one row, both values in it."""
    local = T0.astimezone(timezone(timedelta(hours=2)))
    telemetry_apply(
        events=[
            meter(
                [sample(local, "Current.Import", "10", "A", phase="L1"), sample(T0, "Power.Active.Import", "2300", "W")]
            )
        ]
    )

    stored = MeterReading.objects.get(station=station)
    assert stored.sampled_at == T0
    assert (stored.current_l1_a, stored.power_w) == (10.0, 2300.0)


def test_a_message_sent_again_is_stored_once(station) -> None:
    message = meter(
        [sample(T0, "Current.Import", "10", "A", phase="L1"), sample(T0, "Energy.Active.Import.Register", "500", "Wh")]
    )
    telemetry_apply(events=[message])
    before = MeterReading.objects.values().get(station=station)

    telemetry_apply(events=[message, message])

    assert list(MeterReading.objects.filter(station=station).values()) == [before]


def test_a_second_message_at_the_same_instant_completes_the_row_and_never_overwrites_it(station) -> None:
    telemetry_apply(
        events=[
            meter(
                [
                    sample(T0, "Current.Import", "10", "A", phase="L1"),
                    sample(T0, "Frequency", "50", "Hz"),
                ]
            )
        ]
    )
    session = ChargingSessionFactory(connector=station.connectors.get(), transaction_id="77", started_at=T0)

    telemetry_apply(
        events=[
            meter(
                [
                    sample(T0, "Current.Import", "99", "A", phase="L1", context="Trigger"),  # stored already: kept
                    sample(T0, "Current.Import", "12", "A", phase="L2", context="Trigger"),
                    sample(T0, "Frequency", "51", "Hz", context="Trigger"),  # stored already: kept
                    sample(T0, "Temperature", "31.5", "Celsius", location="Body", context="Trigger"),
                ],
                transaction_id="77",
            )
        ]
    )

    stored = row(station, T0)
    assert (stored.current_l1_a, stored.current_l2_a) == (10.0, 12.0)
    assert stored.extra == {"Frequency": 50.0, "Temperature@Body": 31.5}
    assert stored.session_id == session.pk  # the reading had none: the second message named it
    assert stored.context == ReadingContext.TRIGGER  # had none either


def test_a_context_already_stored_is_kept(station) -> None:
    telemetry_apply(events=[meter([sample(T0, "Current.Import", "10", "A", phase="L1", context="Sample.Periodic")])])
    telemetry_apply(events=[meter([sample(T0, "Current.Import", "12", "A", phase="L2", context="Trigger")])])

    stored = row(station, T0)
    assert stored.context == ReadingContext.SAMPLE_PERIODIC
    assert stored.current_l2_a == 12.0


def test_the_store_counts_only_rows_inserted_or_completed(station) -> None:
    def batch(**values: float) -> ReadingRows:
        rows = ReadingRows()
        for column, value in values.items():
            measurand, phase = {"l1": ("Current.Import", "L1"), "power": ("Power.Active.Import", "")}[column]
            rows.add(
                station_id=station.pk,
                connector_no=1,
                at=T0,
                session_id=None,
                measurand=measurand,
                phase=phase,
                location="",
                context="",
                unit="A" if column == "l1" else "W",
                value=value,
            )
        return rows

    assert readings_store(batch(l1=10.0)) == 1
    assert readings_store(batch(l1=10.0)) == 0  # nothing new: the row is left alone
    assert readings_store(batch(l1=11.0)) == 0  # a different value for a stored one: kept as it was
    assert readings_store(batch(l1=11.0, power=2300.0)) == 1  # completed
    stored = row(station, T0)
    assert (stored.current_l1_a, stored.power_w) == (10.0, 2300.0)


# --- extra, and back through reading_values --------------------------------------------------------


def test_measurands_without_a_column_go_to_extra_and_come_back_as_they_came(station) -> None:
    others = [
        ("Temperature", "31.5", "Celsius", "", "Body"),
        ("Temperature", "88.7", "Fahrenheit", "", "Cable"),
        ("Voltage", "231.0", "V", "L1-N", ""),
        ("Current.Import", "0.5", "A", "N", ""),
        ("Energy.Active.Import.Register", "999.0", "Wh", "", "Inlet"),
        ("Energy.Active.Export.Register", "12.0", "Wh", "", ""),
        ("Power.Reactive.Import", "100.0", "var", "", ""),
        ("Power.Factor", "0.98", "", "", ""),
        ("Frequency", "50.0", "Hz", "", ""),
    ]
    typed = [("Current.Import", "10.0", "A", "L1", ""), ("SoC", "55.0", "Percent", "", "")]
    telemetry_apply(
        events=[
            meter(
                [
                    sample(T0, measurand, value, unit, phase=phase, location=location)
                    for measurand, value, unit, phase, location in [*others, *typed]
                ]
            )
        ]
    )

    stored = row(station, T0)
    assert stored.extra == {
        "Temperature@Body": 31.5,
        "Temperature@Cable#Fahrenheit": 88.7,
        "Voltage|L1-N": 231.0,
        "Current.Import|N": 0.5,
        "Energy.Active.Import.Register@Inlet": 999.0,
        "Energy.Active.Export.Register": 12.0,
        "Power.Reactive.Import#var": 100.0,
        "Power.Factor": 0.98,
        "Frequency": 50.0,
    }
    assert (stored.current_l1_a, stored.soc_pct, stored.energy_wh, stored.voltage_v) == (10.0, 55.0, None, None)
    expected = {(m, phase, location, float(value), unit) for m, value, unit, phase, location in [*others, *typed]}
    assert as_values(stored) == expected
    assert len(reading_values(stored)) == len(expected)


def test_a_value_in_a_unit_other_than_its_columns_is_kept_with_its_unit(station) -> None:
    """A register the gateway did not bring to Wh is not taken for Wh: extra, with its unit."""
    telemetry_apply(events=[meter([sample(T0, "Energy.Active.Import.Register", "12.5", "kWh")])])

    stored = row(station, T0)
    assert stored.energy_wh is None
    assert stored.extra == {"Energy.Active.Import.Register#kWh": 12.5}
    assert as_values(stored) == {("Energy.Active.Import.Register", "", "", 12.5, "kWh")}


def test_kwh_and_kw_arrive_as_wh_and_w_from_both_protocols(station) -> None:
    now = django_timezone.now()
    at16, at201 = T0, T0 + timedelta(seconds=1)
    raw16 = [
        {
            "timestamp": at16.isoformat(),
            "sampled_value": [
                {"measurand": "Energy.Active.Import.Register", "unit": "kWh", "value": "123.4567"},
                {"measurand": "Power.Active.Import", "unit": "kW", "value": "7.36"},
            ],
        }
    ]
    raw201 = [
        {
            "timestamp": at201.isoformat(),
            "sampled_value": [
                {"measurand": "Energy.Active.Import.Register", "value": 1.5, "unit_of_measure": {"unit": "kWh"}},
                {
                    "measurand": "Energy.Active.Export.Register",
                    "value": 2,
                    "unit_of_measure": {"unit": "Wh", "multiplier": 3},
                },
            ],
        }
    ]
    telemetry_apply(
        events=[meter(normalise.meter_values_16(raw16, now=now)), meter(normalise.meter_values_201(raw201, now=now))]
    )

    first, second = row(station, at16), row(station, at201)
    assert (first.energy_wh, first.power_w, first.extra) == (pytest.approx(123456.7), pytest.approx(7360.0), None)
    assert second.energy_wh == pytest.approx(1500.0)
    assert second.extra == {"Energy.Active.Export.Register": pytest.approx(2000.0)}


# --- Partitions made at ingest -------------------------------------------------------------------------


def test_a_reading_for_a_month_without_a_partition_makes_it_and_the_rest_of_the_batch_stands(station) -> None:
    july, september = datetime(2025, 7, 14, 8, 0, tzinfo=UTC), datetime(2025, 9, 2, 8, 0, tzinfo=UTC)
    months = [partition_name(datetime(2025, m, 1, tzinfo=UTC)) for m in (7, 8, 9)]
    assert not set(months) & {name for name, _ in partitions_list()}
    status = {
        "type": "status", "cp": CP, "ts": july.isoformat(), "connector": 1, "status": "Preparing",
        "error_code": "", "at": july.isoformat(),
    }  # fmt: skip

    outcome = telemetry_apply(
        events=[
            status,
            meter([sample(july, "Current.Import", "10", "A", phase="L1")]),
            meter([sample(september, "Current.Import", "11", "A", phase="L1")]),
        ]
    )

    assert outcome.applied == 3
    assert set(months) <= {name for name, _ in partitions_list()}  # the month between too: one range
    assert (row(station, july).current_l1_a, row(station, september).current_l1_a) == (10.0, 11.0)
    assert station.connectors.get().status == "Preparing"  # written before the failed insert: kept
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {months[0]}")  # noqa: S608 - our own table
        assert cursor.fetchone()[0] == 1  # in its month's partition


def test_a_row_the_table_refuses_is_not_taken_for_a_missing_partition(station) -> None:
    """A check that fails is an error of its own (told apart by the error's fields): raised, no
    partition made."""
    at = django_timezone.now()  # a month with its partition
    rows = ReadingRows()
    rows.add(
        station_id=station.pk, connector_no=-1, at=at, session_id=None, measurand="Voltage",
        phase="", location="", context="", unit="V", value=230.0,
    )  # fmt: skip
    partitions_before = partitions_list()

    with pytest.raises(IntegrityError, match="connector_no"):
        readings_store(rows)

    assert partitions_list() == partitions_before


# --- Retention ---------------------------------------------------------------------------------------------


def test_a_reading_older_than_the_retention_is_refused_by_name_and_nothing_of_it_is_stored(
    station, settings, caplog
) -> None:
    settings.TELEMETRY_RETENTION_DAYS = 60
    now = django_timezone.now()
    old, recent = now - timedelta(days=61), now - timedelta(days=1)  # months apart
    old_month = partition_name(old)
    assert old_month not in {name for name, _ in partitions_list()}

    with caplog.at_level(logging.WARNING, logger="chargepoint.telemetry"):
        outcome = telemetry_apply(
            events=[
                meter([sample(old, "Energy.Active.Import.Register", "100", "Wh")]),
                meter([sample(recent, "Energy.Active.Import.Register", "200", "Wh")]),
            ]
        )

    assert outcome.applied == 2
    stored = list(MeterReading.objects.filter(station=station).values_list("sampled_at", "energy_wh"))
    assert stored == [(recent, 200.0)]
    refusals = [r.getMessage() for r in caplog.records if "reading refused" in r.getMessage()]
    assert len(refusals) == 1
    assert "older than the retention period" in refusals[0]
    assert old.isoformat() in refusals[0]
    assert old_month not in {name for name, _ in partitions_list()}  # no partition made for it
    assert list(RollupPending.objects.filter(station=station).values_list("interval_start", flat=True)) == [
        interval_floor(recent)
    ]


# --- The rollup's pending marks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "offset", [timedelta(hours=2), timedelta(hours=5, minutes=45), timedelta(hours=-3, minutes=-30)]
)
def test_pending_marks_are_the_utc_quarter_hours_whatever_the_chargers_offset(station, offset) -> None:
    at = datetime(2026, 5, 1, 8, 22, 30, tzinfo=UTC)  # in the 08:15Z quarter
    local = at.astimezone(timezone(offset))
    telemetry_apply(events=[meter([sample(local, "Energy.Active.Import.Register", "100", "Wh")])])

    marks = list(RollupPending.objects.filter(station=station).values_list("interval_start", flat=True))
    assert marks == [datetime(2026, 5, 1, 8, 15, tzinfo=UTC)] == [interval_floor(at)]


def test_pending_marks_one_per_station_quarter_and_session_and_none_for_what_billing_ignores(station) -> None:
    session = ChargingSessionFactory(connector=station.connectors.get(), transaction_id="5", started_at=T0)
    telemetry_apply(
        events=[
            meter(
                [
                    sample(T0 + timedelta(minutes=1), "Power.Active.Import", "1000", "W"),
                    sample(T0 + timedelta(minutes=2), "Current.Import", "5", "A", phase="L1"),
                    sample(T0 + timedelta(minutes=16), "Energy.Active.Import.Register", "10", "Wh"),
                ],
                transaction_id="5",
            ),
            meter([sample(T0 + timedelta(minutes=40), "Voltage", "230", "V")], connector=None),
        ]
    )

    marks = set(RollupPending.objects.filter(station=station).values_list("interval_start", "session_id"))
    assert marks == {(T0, session.pk), (T0 + timedelta(minutes=15), session.pk)}
