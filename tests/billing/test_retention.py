"""A month whose raw readings the retention period dropped keeps its report as it was.

A month of two chargers' sessions goes the real way (gateway events -> ``telemetry_apply`` ->
readings and pending marks -> rollup), the monthly task generates the month's report, the
partition upkeep drops the month's raw readings, an operator rebuilds the month from the raw
readings (``rebuild_intervals``) and the task generates the report again: the same figures and
the same interval rows, although the month was rebuilt.
"""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from billing.interval_rollup import intervals_roll_up
from billing.models import IntervalEnergy, SavingsReport
from billing.tariff_versions import tariff_import
from billing.tasks import generate_savings_report
from chargepoint.models import ChargingStation, Connector, MeterReading, RollupPending
from chargepoint.partitions import partitions_maintain
from chargepoint.telemetry import telemetry_apply
from tests.billing.conftest import LA, simple_record
from tests.billing.readings import meter_event
from tests.billing.test_reports import rows
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db
# Local October 2026 ends at 07:00 UTC on 1 November: its last evening is in November's partition.
NOV_1_UTC = datetime(2026, 11, 1, tzinfo=UTC)
READINGS = 60  # one every 5 minutes for 5 hours, 100 s after the session began (off the grid)


def day_of_sessions(day: int, chargers: list[tuple[str, int, int]], registers: dict[str, int]) -> list[dict]:
    """Each charger's session that day: (charge point, local start hour, Wh per 5 minutes)."""
    events: list[dict[str, Any]] = []
    for cp, hour, step_wh in chargers:
        start = datetime(2026, 10, day, hour, tzinfo=LA)
        stop = start + timedelta(hours=5)
        tx = f"{cp}-{day}"
        first = registers[cp]
        events.append(
            {
                "type": "start",
                "cp": cp,
                "ts": start.isoformat(),
                "connector": 1,
                "transaction_id": tx,
                "id_tag": "TAG",
                "meter_start_wh": str(first),
                "at": start.isoformat(),
            }
        )
        for k in range(READINGS):
            at = start + timedelta(seconds=100, minutes=5 * k)
            events.append(meter_event(cp, at, transaction_id=tx, energy_wh=first + step_wh * k, power_w=step_wh * 12))
        registers[cp] = first + step_wh * (READINGS - 1)
        events.append(
            {
                "type": "stop",
                "cp": cp,
                "ts": stop.isoformat(),
                "transaction_id": tx,
                "meter_stop_wh": str(registers[cp]),
                "reason": "EVDisconnected",
                "at": stop.isoformat(),
            }
        )
    return events


def interval_rows(site_id: int) -> dict[tuple[int | None, datetime], tuple[int, Decimal, int]]:
    return {
        (r.station_id, r.start): (r.pk, r.energy_kwh, r.resets) for r in IntervalEnergy.objects.filter(site_id=site_id)
    }


def figures(report: SavingsReport) -> dict[str, Any]:
    return {key: value for key, value in report.data.items() if key != "generated_at"}


def test_dropping_a_months_raw_readings_leaves_its_report_as_it_was(settings) -> None:
    site = SiteFactory(slug="retention", timezone="America/Los_Angeles", voltage_v=Decimal(240), phases=1)
    tariff_import(
        site=site,
        record=simple_record(flat_rate="10", energy_rates=("0.10", "0.30"), fixed="100"),
        valid_from=date(2026, 1, 1),
    )
    chargers = [("RET-1", 14, 600), ("RET-2", 15, 300)]  # 7.2 kW from 14:00, 3.6 kW from 15:00 local
    for cp, _, _ in chargers:
        station = ChargingStation.objects.create(
            charge_point_id=cp, site=site, max_current_a=Decimal(32), phases=1, wiring="L1"
        )
        Connector.objects.create(station=station, connector_id=1)
    registers = {"RET-1": 1_000_000, "RET-2": 2_000_000}
    for day in range(1, 32):
        outcome = telemetry_apply(events=day_of_sessions(day, chargers, registers))
        assert outcome.skipped == 0
    assert intervals_roll_up().marks > 0
    assert not RollupPending.objects.exists()

    first = SavingsReport.objects.get(pk=generate_savings_report(month="2026-10", reason="schedule"))
    before = interval_rows(site.pk)
    summary = rows(first)["retention"]
    assert summary["sessions"] == "62"
    assert summary["energy_delivered_kwh"] == "1646.100"  # (59 x 600 + 59 x 300) Wh x 31 days
    assert summary["rate_sources"] == "observed=62"  # the session draws were rolled up too

    settings.TELEMETRY_RETENTION_DAYS = (timezone.now() - datetime(2026, 11, 15, tzinfo=UTC)).days
    with connection.cursor() as cursor:  # the readings' deferred key checks, as their commit would run them
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    dropped = partitions_maintain(now=timezone.now()).dropped
    assert "chargepoint_meterreading_p2026_10" in dropped
    assert "chargepoint_meterreading_p2026_11" not in dropped
    readings = MeterReading.objects.filter(station__site=site)
    assert not readings.filter(sampled_at__lt=NOV_1_UTC).exists()
    assert readings.filter(sampled_at__gte=NOV_1_UTC).exists()  # the evening of 31 October, local

    call_command("rebuild_intervals", "--tenant", "alpha", "--month", "2026-10")
    second = SavingsReport.objects.get(pk=generate_savings_report(month="2026-10", reason="schedule"))

    assert second.version == first.version + 1
    assert figures(second) == figures(first)
    assert second.files.get(format="csv").sha256 == first.files.get(format="csv").sha256
    after = interval_rows(site.pk)
    assert {key: row[1:] for key, row in after.items()} == {key: row[1:] for key, row in before.items()}
    gone = [key for key in before if key[1] < NOV_1_UTC]  # their readings are gone: not rewritten
    assert len(gone) > 1000
    assert all(after[key][0] == before[key][0] for key in gone)
