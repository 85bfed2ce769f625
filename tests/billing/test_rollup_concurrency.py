"""The rollup next to concurrent writers: an ingest transaction still open, a second rollup.

What one transaction sees of another's is the point, so these tests work on committed data in
``beta``, every step in a thread of its own (its own connection, committing), and remove what
they made afterwards.
"""

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from django_tenants.utils import tenant_context

from balancing.models import Site
from billing.interval_rollup import intervals_rebuild, intervals_roll_up
from billing.models import IntervalEnergy
from chargepoint.models import ChargingStation, Connector, RollupPending
from chargepoint.telemetry import telemetry_apply
from tests.billing.readings import meter_event, readings_write

pytestmark = pytest.mark.django_db  # the test database; the test's own connection is not used
T0 = datetime(2026, 10, 6, 17, 0, tzinfo=UTC)
WAIT_S = 30


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


class Background:
    """``fn`` run in the tenant in a thread of its own; ``result()`` waits and re-raises its error."""

    def __init__(self, tenant: Any, fn: Callable[[], Any]) -> None:
        self.out: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._run, args=(tenant, fn))
        self.thread.start()

    def _run(self, tenant: Any, fn: Callable[[], Any]) -> None:
        try:
            with tenant_context(tenant):
                self.out["result"] = fn()
        except BaseException as exc:  # re-raised by result()
            self.out["error"] = exc
        finally:
            connection.close()

    def finished_within(self, seconds: float) -> bool:
        self.thread.join(seconds)
        return not self.thread.is_alive()

    def result(self) -> Any:
        assert self.finished_within(WAIT_S), "still running"
        if "error" in self.out:
            raise self.out["error"]
        return self.out.get("result")


def in_thread(tenant: Any, fn: Callable[[], Any]) -> Any:
    return Background(tenant, fn).result()


class OpenIngest:
    """``telemetry_apply`` of ``events`` inside a transaction that stays open until ``commit()``."""

    def __init__(self, tenant: Any, events: list[dict]) -> None:
        self.written = threading.Event()
        self.release = threading.Event()
        self.background = Background(tenant, lambda: self._apply(events))
        assert self.written.wait(WAIT_S), self.background.out

    def _apply(self, events: list[dict]) -> None:
        try:
            with transaction.atomic():
                telemetry_apply(events=events)
                self.written.set()
                assert self.release.wait(WAIT_S)
        finally:
            self.written.set()

    def commit(self) -> None:
        self.release.set()
        self.background.result()


@pytest.fixture
def station(other_tenant, django_db_blocker) -> Iterator[ChargingStation]:
    """A committed 7.68 kW charger on its own site in beta (readings and rollups go with it)."""

    def make() -> ChargingStation:
        site = Site.objects.create(
            slug="rollup-race", name="Rollup race", limit_a=Decimal(63), timezone="UTC", voltage_v=Decimal(240)
        )
        made = ChargingStation.objects.create(
            charge_point_id="RACE-1", site=site, max_current_a=Decimal(32), phases=1, wiring="L1"
        )
        Connector.objects.create(station=made, connector_id=1)
        return made

    def remove(site_id: int) -> None:
        IntervalEnergy.objects.filter(site_id=site_id).delete()
        for made in ChargingStation.objects.filter(site_id=site_id):
            made.delete()  # its readings (ON DELETE CASCADE), marks and connectors with it
        Site.objects.filter(pk=site_id).delete()

    with django_db_blocker.unblock():
        made = in_thread(other_tenant, make)
        try:
            yield made
        finally:
            in_thread(other_tenant, lambda: remove(made.site_id))


def intervals(tenant: Any, site_id: int) -> dict[tuple[int | None, datetime], Decimal]:
    """Every interval row of the site, station and site totals: (station, start) -> kWh."""
    return in_thread(
        tenant,
        lambda: {(r.station_id, r.start): r.energy_kwh for r in IntervalEnergy.objects.filter(site_id=site_id)},
    )


def test_a_reading_committed_late_is_still_rolled_up(other_tenant, station) -> None:
    def rolled_up() -> None:
        readings_write(station, [(at(0), {"energy_wh": 0}), (at(30), {"energy_wh": 2000})])
        intervals_roll_up()

    in_thread(other_tenant, rolled_up)
    ingest = OpenIngest(other_tenant, [meter_event("RACE-1", at(15), energy_wh=1200)])
    try:
        early = in_thread(other_tenant, intervals_roll_up)  # while the reading is not committed
    finally:
        ingest.commit()

    assert early.marks == 0
    assert intervals(other_tenant, station.site_id)[(station.pk, at(0))] == Decimal(1)
    assert in_thread(other_tenant, lambda: RollupPending.objects.filter(station=station).count()) == 1
    assert in_thread(other_tenant, intervals_roll_up).marks == 1
    assert intervals(other_tenant, station.site_id) == {
        (station.pk, at(0)): Decimal("1.2"),
        (station.pk, at(15)): Decimal("0.8"),
        (None, at(0)): Decimal("1.2"),
        (None, at(15)): Decimal("0.8"),
    }


def test_a_mark_merged_into_a_pending_one_is_not_taken_before_its_readings_commit(other_tenant, station) -> None:
    def pending() -> None:
        readings_write(station, [(at(0), {"energy_wh": 0}), (at(30), {"energy_wh": 2000})])
        intervals_roll_up()
        readings_write(station, [(at(5), {"energy_wh": 500})])  # its mark: (RACE-1, 17:00), waiting

    in_thread(other_tenant, pending)
    # The ingest's mark for 17:10 is the same (station, interval, session): the insert keeps the
    # one there. A rollup that took that mark now would read 17:00 without 17:10 and delete it.
    ingest = OpenIngest(other_tenant, [meter_event("RACE-1", at(10), energy_wh=1000)])
    try:
        during = Background(other_tenant, intervals_roll_up)
        finished_while_open = during.finished_within(5)
    finally:
        ingest.commit()
    outcome = during.result()

    assert finished_while_open  # it did not wait for the ingest either
    assert outcome.marks == 0  # the charger's mark was left for the next run
    assert in_thread(other_tenant, intervals_roll_up).marks == 1
    # 0 -> 500 -> 1000 Wh by 17:10, then 1000 Wh over 17:10-17:30.
    assert intervals(other_tenant, station.site_id)[(station.pk, at(0))] == Decimal("1.25")
    assert intervals(other_tenant, station.site_id)[(station.pk, at(15))] == Decimal("0.75")


def test_two_rollups_at_once_take_each_mark_once_and_agree_with_a_rebuild(other_tenant, station) -> None:
    def readings() -> int:
        chargers = [station] + [
            ChargingStation.objects.create(
                charge_point_id=f"RACE-{n}", site_id=station.site_id, max_current_a=Decimal(32), phases=1, wiring="L1"
            )
            for n in (2, 3, 4)
        ]
        for n, charger in enumerate(chargers, start=1):  # 1.8 kW to 7.2 kW for six hours, off the grid
            readings_write(charger, [(at(2 + 5 * k), {"energy_wh": 150 * n * k}) for k in range(72)])
        return RollupPending.objects.filter(station__site_id=station.site_id).count()

    marks = in_thread(other_tenant, readings)
    start = threading.Barrier(2)

    def one_mark_at_a_time() -> Any:
        start.wait(WAIT_S)
        return intervals_roll_up(batch_size=1)

    rollups = [Background(other_tenant, one_mark_at_a_time) for _ in range(2)]
    assert all(rollup.finished_within(WAIT_S) for rollup in rollups)
    outcomes = [rollup.result() for rollup in rollups]  # a batch that failed raises here

    assert sum(outcome.marks for outcome in outcomes) == marks == 4 * 24
    assert all(outcome.marks > 0 for outcome in outcomes)
    rolled_up = intervals(other_tenant, station.site_id)
    assert len(rolled_up) == 5 * 24  # four chargers and the site, 17:00 to 23:00
    in_thread(other_tenant, lambda: intervals_rebuild(site=station.site, start=at(-60), end=at(8 * 60)))
    assert intervals(other_tenant, station.site_id) == rolled_up
