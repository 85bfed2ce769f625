"""Resync and verification of a charger: TriggerMessage and GetCompositeSchedule through a real gateway.

The simulated chargers (OCPP 1.6 and 2.0.1) run on the gateway's loop; the session's Celery
worker handles their telemetry, so a (re)connect enqueues the ``station_resync`` task on the
balancing queue. The books a verification compares with are written inside the test's
transaction (the worker never sees them), so what the charger applies is what decides.
"""

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from balancing.models import ConnectorLimit, SiteAlert, StationFailsafe
from balancing.resync import RESYNC_DELAY_S, _throttle_key, composite_limit_a, resync_commands, station_resync
from chargepoint.models import (
    ChargerCommand,
    ChargingSession,
    ChargingStation,
    Connector,
    MeterReading,
    ReadingContext,
)
from chargepoint.simulator.charger import ChargerSpec, SimulatedCharger
from evplatform.redis import get_redis
from tenants.accounts.models import AuditEvent
from tests.chargepoint.conftest import PASSWORD, wait_until
from tests.factories import ChargingStationFactory, ConnectorFactory

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


# --- What is sent, and how an answer is read (no charger needed) ------------------------------


def test_the_resync_of_a_16_charger_triggers_status_and_meter_values_then_asks_each_connector() -> None:
    station = ChargingStation(charge_point_id="R-16", ocpp_version="1.6")
    commands = [(c.action, c.payload) for c in resync_commands(station, [1, 2])]
    assert commands == [
        ("TriggerMessage", {"requestedMessage": "StatusNotification"}),
        ("TriggerMessage", {"requestedMessage": "MeterValues"}),
        ("GetCompositeSchedule", {"connectorId": 1, "duration": 60, "chargingRateUnit": "A"}),
        ("GetCompositeSchedule", {"connectorId": 2, "duration": 60, "chargingRateUnit": "A"}),
    ]


def test_the_resync_of_a_201_station_names_each_evse() -> None:
    station = ChargingStation(charge_point_id="R-201", ocpp_version="2.0.1")
    commands = [(c.action, c.payload) for c in resync_commands(station, [1])]
    assert commands == [
        ("TriggerMessage", {"requestedMessage": "StatusNotification", "evse": {"id": 1, "connectorId": 1}}),
        ("TriggerMessage", {"requestedMessage": "MeterValues", "evse": {"id": 1}}),
        ("GetCompositeSchedule", {"evseId": 1, "duration": 60, "chargingRateUnit": "A"}),
    ]


def schedule16(periods, *, unit="A", start=NOW - timedelta(seconds=120), connector_id=1):
    return {
        "status": "Accepted",
        "connectorId": connector_id,
        "scheduleStart": start.isoformat().replace("+00:00", "Z"),
        "chargingSchedule": {"chargingRateUnit": unit, "chargingSchedulePeriod": periods},
    }


def read(payload, *, connector_id=1, phases=3):
    station = ChargingStation(charge_point_id="R", wiring="L1L2L3" if phases == 3 else "L1", phases=phases)
    return composite_limit_a(payload=payload, connector_id=connector_id, station=station, voltage_v=230.0, now=NOW)


def test_the_period_in_force_now_is_read_from_a_16_answer() -> None:
    periods = [{"startPeriod": 600, "limit": 8}, {"startPeriod": 0, "limit": 32}, {"startPeriod": 60, "limit": 16}]
    assert read(schedule16(periods)) == 16.0  # 120 s after the schedule started


def test_a_201_answer_and_a_schedule_in_watts_are_read_in_amps() -> None:
    answer = {
        "status": "Accepted",
        "schedule": {
            "evseId": 2,
            "duration": 60,
            "scheduleStart": "2026-05-01T11:59:00Z",
            "chargingRateUnit": "W",
            "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 11040}],
        },
    }
    assert read(answer, connector_id=2) == 16.0  # 11040 W over three 230 V phases
    one_phase = schedule16([{"startPeriod": 0, "limit": 7360, "numberPhases": 1}], unit="W")
    assert read(one_phase) == 32.0


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (schedule16([{"startPeriod": 0, "limit": -6}]), "chargingSchedulePeriod.limit: -6 is not a current"),
        (schedule16([{"startPeriod": 0, "limit": "32"}]), "chargingSchedulePeriod.limit: '32' is not a number"),
        (schedule16([{"startPeriod": 0, "limit": math.nan}]), "chargingSchedulePeriod.limit: nan is not a current"),
        (schedule16([{"startPeriod": 0, "limit": 5000}]), "5000 A is more than any connector carries"),
        (schedule16([{"startPeriod": 0, "limit": 16}], connector_id=2), "connectorId: 2 is not the connector asked"),
        (schedule16([]), "chargingSchedulePeriod: empty"),
        (schedule16([{"startPeriod": 0, "limit": 16}], unit="kW"), "chargingRateUnit: 'kW' is neither A nor W"),
        ({"status": "Accepted"}, "chargingSchedule: missing"),
    ],
)
def test_a_composite_schedule_that_cannot_be_true_is_rejected_naming_the_field(payload, message) -> None:
    with pytest.raises(ValueError, match=message):
        read(payload)


def test_a_resync_that_finds_the_charger_offline_does_not_hold_back_its_comeback() -> None:
    station = ChargingStationFactory(charge_point_id="R-AWAY", ocpp_version="1.6")
    ConnectorFactory(station=station, connector_id=1)
    get_redis().delete(_throttle_key(station.pk))

    first = station_resync(station_id=station.pk, timeout_s=1)
    second = station_resync(station_id=station.pk, timeout_s=1)

    assert first.offline
    assert not first.checks
    assert not second.throttled
    assert second.offline
    # Each attempt is on file with its answer.
    statuses = ChargerCommand.objects.filter(charge_point_id="R-AWAY").values_list("action", "status")
    assert sorted(statuses) == sorted(
        [("TriggerMessage", "Offline"), ("TriggerMessage", "Offline"), ("GetCompositeSchedule", "Offline")] * 2
    )
    assert not get_redis().exists(_throttle_key(station.pk))


# --- Against a real gateway and simulated chargers -------------------------------------------


@pytest.fixture(autouse=True)
def _no_earlier_resync(request) -> None:
    """Station ids repeat from one test database to the next: forget throttles of an earlier run."""
    if "gw_fleet" in request.fixturenames:
        for pk in ChargingStation.objects.filter(site_id=request.getfixturevalue("gw_fleet").site_id).values_list(
            "pk", flat=True
        ):
            get_redis().delete(_throttle_key(pk))


class Running:
    """A simulated charger on the gateway's background loop; its car never plugs in."""

    def __init__(self, bg, cp: str, url: str, *, ocpp_version: str = "1.6", rating_a: float = 32.0) -> None:
        spec = ChargerSpec(
            cp, PASSWORD, car_kw=22.0, ocpp_version=ocpp_version, rating_a=rating_a, plug_in_after_s=3600
        )
        self.bg = bg
        self.charger = SimulatedCharger(spec, url, meter_interval_s=5)
        self.stop = asyncio.Event()
        self.future = bg.spawn(self.charger.run(self.stop))

    def close(self) -> None:
        self.bg.loop.call_soon_threadsafe(self.stop.set)
        self.future.result(30)


def composite_count(cp: str) -> int:
    return ChargerCommand.objects.filter(charge_point_id=cp, action="GetCompositeSchedule").count()


def connected(sim: Running, cp: str, version: str = "1.6") -> ChargingStation:
    """Connected, and the worker has recorded it (the protocol version the resync speaks)."""
    wait_until(lambda: sim.charger.connected.is_set(), what=f"{cp} connected")
    online = ChargingStation.objects.filter(charge_point_id=cp, is_online=True, ocpp_version=version)
    return wait_until(online.first, timeout=60, what=f"{cp} online in the books")


def books(cp: str, limit_a: str) -> Connector:
    """An open session on connector 1 whose accepted TxProfile the books say is ``limit_a``."""
    connector = Connector.objects.get(station__charge_point_id=cp, connector_id=1)
    session = ChargingSession.objects.create(
        station=connector.station,
        connector=connector,
        transaction_id=f"RS-{cp}",
        started_at=timezone.now() - timedelta(minutes=5),
        meter_start_wh=Decimal(0),
    )
    ConnectorLimit.objects.update_or_create(
        connector=connector,
        defaults={
            "limit_a": Decimal(limit_a),
            "transaction_id": session.transaction_id,
            "valid_until": timezone.now() + timedelta(minutes=10),
            "confirmed_at": timezone.now(),
            "last_status": "Accepted",
        },
    )
    return connector


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_a_charger_applying_more_than_the_books_raises_an_alert_corrects_the_books_and_asks_for_a_run(
    gateway, celery_worker, gw_fleet, bg, django_capture_on_commit_callbacks, version
) -> None:
    cp = gw_fleet.chargers_16[4] if version == "1.6" else gw_fleet.chargers_201[2]
    sim = Running(bg, cp, gateway.url, ocpp_version=version)
    try:
        station = connected(sim, cp, version)
        # The fail-safe the platform sends at boot lands first (else it could land between the
        # resync and the reading below and change what the charger applies); then the charger
        # forgets its profiles, as some do on a reboot: it applies its rating, the books say 0 A.
        wait_until(
            StationFailsafe.objects.filter(station=station, confirmed_at__isnull=False).first,
            timeout=30,
            what=f"{cp} fail-safe confirmed",
        )
        sim.charger.state.profiles.profiles.clear()
        connector = books(cp, "0")  # the books say: paused at 0 A
        get_redis().delete(_throttle_key(connector.station_id))
        with django_capture_on_commit_callbacks() as callbacks:
            outcome = station_resync(station_id=connector.station_id, timeout_s=10)
        applies = sim.charger.state.offered_now()
    finally:
        sim.close()

    assert set(outcome.triggers.values()) == {"Accepted"}
    assert len(outcome.triggers) == 2
    (check,) = outcome.checks
    assert check.applied_a == round(applies, 1)
    assert check.applied_a >= 1  # its default or its rating: it would let the car draw
    assert (check.books_a, check.books_basis) == (0.0, "accepted TxProfile")
    alert = SiteAlert.objects.get(connector=connector, kind=SiteAlert.Kind.REFUSES, cleared_at__isnull=True)
    assert alert.detail.startswith(f"{cp}/1 applies {check.applied_a:g} A, books say 0 A (accepted TxProfile)")
    assert alert.vendor == "EVPlatform"
    assert alert.model == "SimCharger"
    assert AuditEvent.objects.filter(object_type="alert", action="alert", object_id=str(alert.pk)).exists()
    limit = ConnectorLimit.objects.get(connector=connector)
    assert limit.applied_a == Decimal(str(check.applied_a))
    assert limit.limit_a == limit.applied_a  # the next run sends the pause again
    assert limit.applied_checked_at is not None
    assert any("site_rebalance_request" in cb.__qualname__ for cb in callbacks)


def test_a_charger_that_applies_what_the_books_say_clears_an_earlier_composite_alert(
    gateway, celery_worker, gw_fleet, bg
) -> None:
    cp = gw_fleet.chargers_16[5]
    sim = Running(bg, cp, gateway.url, rating_a=16.0)
    try:
        connected(sim, cp)
        connector = books(cp, "16")  # its rating: whatever default it applies is within
        alert = SiteAlert.objects.create(
            site_id=gw_fleet.site_id,
            station=connector.station,
            connector=connector,
            kind=SiteAlert.Kind.REFUSES,
            detail=f"{cp}/1 applies 32 A, books say 16 A (accepted TxProfile); found with GetCompositeSchedule",
            opened_at=timezone.now() - timedelta(minutes=3),
            last_seen_at=timezone.now() - timedelta(minutes=3),
        )
        get_redis().delete(_throttle_key(connector.station_id))
        outcome = station_resync(station_id=connector.station_id, timeout_s=10)
    finally:
        sim.close()

    assert outcome.mismatches == []
    assert outcome.checks[0].applied_a is not None
    assert outcome.checks[0].applied_a <= 16
    alert.refresh_from_db()
    assert alert.cleared_at is not None
    assert ConnectorLimit.objects.get(connector=connector).limit_a == Decimal("16")  # books untouched


def test_a_reconnect_resyncs_the_charger_once_a_minute_at_most(gateway, celery_worker, gw_fleet, bg) -> None:
    cp = gw_fleet.chargers_16[6]
    triggers = ChargerCommand.objects.filter(charge_point_id=cp, action="TriggerMessage")
    pause_s = RESYNC_DELAY_S + 2  # time for a resync to be queued and run, were it asked for
    sim = Running(bg, cp, gateway.url)
    try:
        station = connected(sim, cp)
        time.sleep(pause_s)
        assert composite_count(cp) == 0  # a first connection is not a comeback

        def reconnect(after: datetime) -> datetime:
            connects = sim.charger.state.connects
            bg.run(sim.charger.drop_connection())
            wait_until(lambda: sim.charger.state.connects > connects and sim.charger.connected.is_set())
            back = ChargingStation.objects.filter(pk=station.pk, connected_at__gt=after, is_online=True)
            return wait_until(back.first, timeout=60, what="the reconnect applied by the worker").connected_at

        second = reconnect(station.connected_at)
        wait_until(lambda: composite_count(cp) == 1, timeout=60, what="the resync after the reconnect")
        wait_until(lambda: triggers.count() == 2, what="both triggers recorded")
        # The charger did what it was asked: its triggered meter values reached the books.
        wait_until(
            MeterReading.objects.filter(station=station, context=ReadingContext.TRIGGER).exists,
            timeout=60,
            what="meter values sent on the trigger",
        )

        reconnect(second)
        time.sleep(pause_s)
    finally:
        sim.close()

    assert composite_count(cp) == 1
    assert set(triggers.values_list("status", flat=True)) == {"Accepted"}
    assert ChargerCommand.objects.get(charge_point_id=cp, action="GetCompositeSchedule").status == "Accepted"


def test_a_second_resync_within_a_minute_does_nothing(gateway, celery_worker, gw_fleet, bg) -> None:
    cp = gw_fleet.chargers_16[7]
    sim = Running(bg, cp, gateway.url)
    try:
        station = connected(sim, cp)
        asked = ChargerCommand.objects.filter(charge_point_id=cp, action__in=["TriggerMessage", "GetCompositeSchedule"])
        first = station_resync(station_id=station.pk, timeout_s=10)
        recorded = asked.count()
        second = station_resync(station_id=station.pk, timeout_s=10)
    finally:
        sim.close()

    assert not first.throttled
    assert first.triggers == {"StatusNotification": "Accepted", "MeterValues": "Accepted"}
    assert first.checks[0].applied_a is not None
    assert second.throttled
    assert second.triggers == {}
    assert second.checks == []
    assert recorded == 3
    assert asked.count() == recorded
    assert 0 < get_redis().ttl(_throttle_key(station.pk)) <= 60


def test_the_resync_task_goes_to_the_balancing_queue() -> None:
    from balancing.tasks import station_resync_task
    from evplatform.celery import QUEUE_BALANCING, app, queue_name

    options = dict(station_resync_task._get_exec_options())
    routed = app.amqp.router.route(options, station_resync_task.name, (), {}, station_resync_task)

    assert routed["queue"].name == queue_name(QUEUE_BALANCING)
