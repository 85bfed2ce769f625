"""The migration to partitioned readings folds the old one-row-per-value samples as the ingest would.

A schema of its own, migrated to the state before (``chargepoint`` 0005), gets old-style
samples; migrated forward, its readings must be what ``telemetry_apply`` stores for the same
values: one row per station, instant and connector, typed columns, the rest in ``extra``
under the ingest's keys, nothing older than the retention period. All inside the test's
transaction: the schema goes with its rollback.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from chargepoint.models import MeterReading, ReadingContext
from chargepoint.partitions import partition_name, partitions_list
from chargepoint.readings import reading_values

pytestmark = pytest.mark.django_db

SCHEMA = "migration_fold"
BEFORE = [("chargepoint", "0005_closed_loop")]
AFTER = [("chargepoint", "0006_meter_readings_partitioned")]
T1 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
T2 = T1 + timedelta(seconds=10)
MARCH = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
LONG_AGO = datetime(2010, 1, 1, tzinfo=UTC)  # older than the test settings' ten years of retention

# (at, connector, session?, measurand, phase, location, context, value, unit)
SAMPLES: list[tuple[datetime, int | None, bool, str, str, str, str, str, str]] = [
    (T1, 1, True, "Energy.Active.Import.Register", "", "", "Sample.Periodic", "1000.5", "Wh"),
    (T1, 1, True, "Power.Active.Import", "", "", "Sample.Periodic", "7360", "W"),
    (T1, 1, True, "Current.Import", "L1", "", "Sample.Periodic", "10.5", "A"),
    (T1, 1, True, "Current.Import", "L2", "", "Sample.Periodic", "11", "A"),
    (T1, 1, True, "Current.Import", "L3", "Outlet", "Sample.Periodic", "9.25", "A"),
    (T1, 1, True, "Current.Offered", "", "", "Sample.Periodic", "16", "A"),
    (T1, 1, True, "Voltage", "", "", "Sample.Periodic", "230", "V"),
    (T1, 1, True, "SoC", "", "EV", "Sample.Periodic", "55", "Percent"),
    (T1, 1, True, "Temperature", "", "Body", "Sample.Periodic", "31.5", "Celsius"),
    (T1, 1, True, "Power.Reactive.Import", "", "", "Sample.Periodic", "100", "var"),
    (T1, 1, True, "Voltage", "L1-N", "", "Sample.Periodic", "231", "V"),
    (T1, 1, True, "Energy.Active.Import.Register", "", "Inlet", "Sample.Periodic", "999", "Wh"),
    (T1, None, False, "Current.Import", "L1", "", "", "40", "A"),
    (T2, 1, False, "Current.Import", "", "", "Trigger", "4", "A"),
    (MARCH, 1, False, "Energy.Active.Import.Register", "", "", "Sample.Clock", "500", "Wh"),
    (LONG_AGO, 1, False, "Energy.Active.Import.Register", "", "", "", "1", "Wh"),
]


def _old_samples(apps: Any) -> tuple[int, int]:
    """The stations, connector, session and samples as they were before the migration."""
    site = apps.get_model("balancing", "Site").objects.create(slug="fold", name="fold", limit_a=Decimal("63"))
    station = apps.get_model("chargepoint", "ChargingStation").objects.create(
        site=site, charge_point_id="FOLD-1", max_current_a=Decimal("32")
    )
    connector = apps.get_model("chargepoint", "Connector").objects.create(station=station, connector_id=1)
    session = apps.get_model("chargepoint", "ChargingSession").objects.create(
        station=station, connector=connector, transaction_id="1", started_at=T1, meter_start_wh=Decimal("0")
    )
    meter_sample = apps.get_model("chargepoint", "MeterSample")
    for at, number, in_session, measurand, phase, location, context, value, unit in SAMPLES:
        meter_sample.objects.create(
            station=station,
            connector=connector if number else None,
            session=session if in_session else None,
            sampled_at=at,
            measurand=measurand,
            phase=phase,
            location=location,
            context=context,
            value=Decimal(value),
            unit=unit,
        )
    return station.pk, session.pk


def _values(reading: MeterReading) -> set[tuple[Any, ...]]:
    return {(v["measurand"], v["phase"], v["location"], v["value"], v["unit"]) for v in reading_values(reading)}


def _expected(at: datetime, number: int | None) -> set[tuple[Any, ...]]:
    """What ``reading_values`` gives back for the samples of one instant: the typed ones
    without their location (the outlet's, or the car's for SoC)."""
    typed = {
        "Energy.Active.Import.Register",
        "Power.Active.Import",
        "Current.Import",
        "Current.Offered",
        "Voltage",
        "SoC",
    }
    expected = set()
    for when, connector, _, measurand, phase, location, _, value, unit in SAMPLES:
        if (when, connector) != (at, number):
            continue
        is_typed = measurand in typed and phase in ("", "L1", "L2", "L3") and (measurand != "Voltage" or not phase)
        is_typed = is_typed and (measurand == "SoC" or location in ("", "Outlet"))
        expected.add((measurand, phase, "" if is_typed else location, float(value), unit))
    return expected


def test_the_migration_folds_old_samples_into_one_row_per_instant(tenant) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA {SCHEMA}")
    connection.set_schema(SCHEMA)
    try:
        executor = MigrationExecutor(connection)
        executor.migrate(BEFORE)
        station_id, session_id = _old_samples(executor.loader.project_state(BEFORE).apps)
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # the old table is dropped in this transaction

        MigrationExecutor(connection).migrate(AFTER)

        readings = list(MeterReading.objects.order_by("sampled_at", "connector_no"))
        months = [name for name, _ in partitions_list()]
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('chargepoint_metersample')")
            old_table = cursor.fetchone()[0]
    finally:
        connection.set_tenant(tenant)

    assert old_table is None
    assert [(r.station_id, r.sampled_at, r.connector_no) for r in readings] == [
        (station_id, MARCH, 1),
        (station_id, T1, 0),
        (station_id, T1, 1),
        (station_id, T2, 1),
    ]
    march, main_meter, full, trigger = readings
    assert {partition_name(MARCH), partition_name(T1)} <= set(months)
    assert partition_name(LONG_AGO) not in months

    assert (full.energy_wh, full.power_w, full.offered_a, full.voltage_v, full.soc_pct) == (1000.5, 7360, 16, 230, 55)
    assert (full.current_l1_a, full.current_l2_a, full.current_l3_a, full.current_a) == (10.5, 11, 9.25, None)
    assert full.extra == {
        "Temperature@Body": 31.5,
        "Power.Reactive.Import#var": 100,
        "Voltage|L1-N": 231,
        "Energy.Active.Import.Register@Inlet": 999,
    }
    assert (full.session_id, full.context) == (session_id, ReadingContext.SAMPLE_PERIODIC)
    assert _values(full) == _expected(T1, 1)

    assert (main_meter.current_l1_a, main_meter.session_id, main_meter.context) == (
        40,
        None,
        ReadingContext.UNSPECIFIED,
    )
    assert _values(main_meter) == _expected(T1, None)
    assert (trigger.current_a, trigger.context, trigger.extra) == (4, ReadingContext.TRIGGER, None)
    assert (march.energy_wh, march.context) == (500, ReadingContext.SAMPLE_CLOCK)
