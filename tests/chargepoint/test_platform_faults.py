"""Platform faults around the gateway: lost command replies, Redis away, a killed gateway.

A gateway whose Redis goes through a TCP proxy (``bench.tcpproxy``) loses Redis when the test
cuts the proxy, while the sender (this process) keeps the machine's Redis: a reply the
gateway cannot push is pushed again once Redis is back, and one lost for good is a Timeout
by the push deadline, after which the run has released its site. A ``run_gateway`` process
killed with SIGKILL has its chargers shown offline by the liveness sweep within 30 s.
"""

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from django_tenants.utils import schema_context
from websockets.asyncio.client import ClientConnection

from balancing.dispatch import site_balance
from balancing.models import BalancingRun, ProfilePush
from bench.tcpproxy import TcpProxy
from chargepoint.commands import REPLY_GRACE_S, Command, command_send
from chargepoint.gateway import keys
from chargepoint.liveness import stations_gateway_sweep, stations_offline_sweep
from chargepoint.models import ChargingSession, ChargingStation, Connector
from chargepoint.tasks import stations_gateway_sweep_all
from chargepoint.telemetry import telemetry_apply
from evplatform.redis import get_redis, redis_outage, tenant_key
from tests.chargepoint.conftest import (
    BackgroundLoop,
    GatewayProcess,
    RunningGateway,
    roundtrip,
    start_gateway,
    stop_gateway,
    wait_until,
    ws_connect,
)
from tests.conftest import forget_balancing_keys
from tests.factories import ChargingStationFactory

pytestmark = pytest.mark.django_db

BOOT_16 = '[2,"b1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]'
SET_PROFILE_16 = {
    "connectorId": 1,
    "csChargingProfiles": {
        "chargingProfileId": 7,
        "stackLevel": 1,
        "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.0}]},
    },
}
KILL_TO_OFFLINE_S = 30.0


# --- The liveness sweep and the station's gateway, in the database -----------------------------


def connected(cp: str, gateway: str, at: datetime) -> dict[str, Any]:
    return {
        "type": "connected",
        "cp": cp,
        "ts": at.isoformat(),
        "connected_at": at.isoformat(),
        "ocpp_version": "1.6",
        "gateway": gateway,
    }


def disconnected(cp: str, at: datetime, *, connected_at: datetime, reason: str) -> dict[str, Any]:
    return {
        "type": "disconnected",
        "cp": cp,
        "ts": at.isoformat(),
        "connected_at": connected_at.isoformat(),
        "reason": reason,
    }


@pytest.fixture(autouse=True)
def _redis_judged_afresh() -> Iterator[None]:
    """This process's memory of a Redis outage does not leak from one test into the next."""
    redis_outage.down_since = redis_outage.recovered_at = None
    yield
    redis_outage.down_since = redis_outage.recovered_at = None


@pytest.fixture
def instance_keys() -> Iterator[Callable[[str], None]]:
    """Announce gateway instances as alive (their heartbeat key); removed afterwards."""
    made: list[str] = []

    def alive(instance_id: str) -> None:
        get_redis().set(keys.instance_key(instance_id), "test", ex=60)
        made.append(instance_id)

    yield alive
    for instance_id in made:
        get_redis().delete(keys.instance_key(instance_id))


def test_a_connected_event_records_the_gateway_instance_and_a_disconnect_clears_it() -> None:
    station = ChargingStationFactory(charge_point_id="FAULT-GW-1")
    now = timezone.now()

    telemetry_apply(events=[connected("FAULT-GW-1", "gw-a-1", now)])
    station.refresh_from_db()
    assert (station.is_online, station.gateway_id) == (True, "gw-a-1")

    telemetry_apply(events=[disconnected("FAULT-GW-1", now + timedelta(seconds=1), connected_at=now, reason="closed")])
    station.refresh_from_db()
    assert (station.is_online, station.gateway_id) == (False, "")


def test_an_older_connections_disconnect_leaves_the_new_gateway_in_place() -> None:
    station = ChargingStationFactory(charge_point_id="FAULT-GW-2")
    first = timezone.now()
    second = first + timedelta(seconds=5)

    telemetry_apply(
        events=[
            connected("FAULT-GW-2", "gw-old", first),
            connected("FAULT-GW-2", "gw-new", second),
            disconnected(
                "FAULT-GW-2", second + timedelta(seconds=1), connected_at=first, reason="gateway shutting down"
            ),
        ]
    )

    station.refresh_from_db()
    assert (station.is_online, station.gateway_id) == (True, "gw-new")


def test_the_liveness_sweep_takes_the_chargers_of_a_gone_gateway_offline_and_rebalances_their_site(
    instance_keys, django_capture_on_commit_callbacks
) -> None:
    instance_keys("fault-gw-live")
    now = timezone.now()
    dead = ChargingStationFactory(charge_point_id="FAULT-DEAD-1")
    live = ChargingStationFactory(charge_point_id="FAULT-LIVE-1", site=dead.site)
    legacy = ChargingStationFactory(charge_point_id="FAULT-LEGACY-1", site=dead.site)  # connected before gateway ids
    telemetry_apply(
        events=[
            connected("FAULT-DEAD-1", "fault-gw-dead", now),
            connected("FAULT-LIVE-1", "fault-gw-live", now),
            connected("FAULT-LEGACY-1", "", now),
        ]
    )

    with django_capture_on_commit_callbacks() as callbacks:
        outcome = stations_gateway_sweep()

    for station in (dead, live, legacy):
        station.refresh_from_db()
    assert (dead.is_online, dead.gateway_id) == (False, "")
    assert (live.is_online, live.gateway_id) == (True, "fault-gw-live")
    assert legacy.is_online  # the stale sweep's business
    assert outcome.applied == 1
    assert outcome.rebalance == {dead.site_id: "gateway fault-gw-dead gone"}
    assert len(callbacks) == 1  # the site's rebalance request, once committed


def test_the_liveness_sweep_changes_nothing_while_redis_is_down(bg, settings) -> None:
    station = ChargingStationFactory(charge_point_id="FAULT-DEAD-2")
    telemetry_apply(events=[connected("FAULT-DEAD-2", "fault-gw-dead-2", timezone.now())])
    proxy = TcpProxy(("127.0.0.1", 6379))
    bg.run(proxy.start())
    settings.REDIS_URL = f"redis://127.0.0.1:{proxy.port}/0"
    get_redis.cache_clear()
    bg.run(proxy.cut())
    try:
        outcome = stations_gateway_sweep()
    finally:
        get_redis.cache_clear()

    station.refresh_from_db()
    assert station.is_online  # an unreachable Redis says nothing about the gateways
    assert outcome.applied == 0


def test_a_gateway_that_announces_itself_again_within_the_recheck_keeps_its_chargers() -> None:
    """Redis just came back: the live instance's next heartbeat (within a second) writes its key again."""
    station = ChargingStationFactory(charge_point_id="FAULT-BACK-1")
    telemetry_apply(events=[connected("FAULT-BACK-1", "fault-gw-back", timezone.now())])
    heartbeat = threading.Timer(0.5, lambda: get_redis().set(keys.instance_key("fault-gw-back"), "x", ex=30))
    heartbeat.start()
    try:
        outcome = stations_gateway_sweep()
    finally:
        heartbeat.join(5)
        get_redis().delete(keys.instance_key("fault-gw-back"))

    station.refresh_from_db()
    assert (station.is_online, station.gateway_id) == (True, "fault-gw-back")
    assert outcome.applied == 0


def test_the_liveness_sweep_waits_a_registry_ttl_after_redis_came_back() -> None:
    station = ChargingStationFactory(charge_point_id="FAULT-DEAD-4")
    telemetry_apply(events=[connected("FAULT-DEAD-4", "fault-gw-dead-4", timezone.now())])
    redis_outage.down_since = time.monotonic() - 30  # this worker saw Redis fail until now

    first = stations_gateway_sweep()
    station.refresh_from_db()
    assert station.is_online  # the live instances may not have re-announced yet
    assert first.applied == 0

    redis_outage.recovered_at = time.monotonic() - django_settings.GATEWAY_REGISTRY_TTL_S  # a TTL later
    later = stations_gateway_sweep()
    station.refresh_from_db()
    assert not station.is_online
    assert later.applied == 1


def test_the_liveness_sweep_waits_a_registry_ttl_after_redis_restarted(monkeypatch) -> None:
    """A freshly restarted Redis has lost every heartbeat key: the live instances have not re-announced yet."""
    station = ChargingStationFactory(charge_point_id="FAULT-DEAD-3")
    telemetry_apply(events=[connected("FAULT-DEAD-3", "fault-gw-dead-3", timezone.now())])
    monkeypatch.setattr(get_redis(), "info", lambda section=None: {"uptime_in_seconds": 3})

    outcome = stations_gateway_sweep()

    station.refresh_from_db()
    assert station.is_online
    assert outcome.applied == 0


def test_the_stale_charger_sweep_still_takes_silent_chargers_offline() -> None:
    station = ChargingStationFactory(charge_point_id="FAULT-SILENT-1")
    long_ago = timezone.now() - timedelta(hours=1)
    telemetry_apply(events=[connected("FAULT-SILENT-1", "fault-gw-alive", long_ago)])

    outcome = stations_offline_sweep(now=timezone.now(), stale_after=timedelta(minutes=12))

    station.refresh_from_db()
    assert (station.is_online, station.gateway_id) == (False, "")
    assert outcome.applied == 1


def test_beat_runs_the_liveness_sweep_every_few_seconds_and_drops_stale_ones() -> None:
    entry = next(
        e for e in django_settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == stations_gateway_sweep_all.name
    )
    assert entry["schedule"] == django_settings.GATEWAY_LIVENESS_SWEEP_S == 5.0
    assert entry["options"]["expires"] <= 2 * entry["schedule"]


def test_the_liveness_sweep_of_each_organisation_goes_to_the_balancing_queue() -> None:
    from chargepoint.tasks import stations_gateway_sweep_task
    from evplatform.celery import QUEUE_BALANCING, app, queue_name

    task = stations_gateway_sweep_task
    routed = app.amqp.router.route(dict(task._get_exec_options()), task.name, (), {}, task)

    assert routed["queue"].name == queue_name(QUEUE_BALANCING)


# --- Command replies while the gateway's Redis is away ----------------------------------------


class Published:
    """Telemetry batches the gateway would hand to Celery, kept here (no worker involved)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, schema_name: str, events: list[dict[str, Any]]) -> None:
        self.events.extend(events)


@pytest.fixture(scope="module")
def gateway_redis(bg: BackgroundLoop) -> Iterator[TcpProxy]:
    proxy = TcpProxy(("127.0.0.1", 6379))
    bg.run(proxy.start())
    yield proxy
    bg.run(proxy.cut())


@pytest.fixture(scope="module")
def published() -> Published:
    return Published()


@pytest.fixture(scope="module")
def proxied_gateway(
    bg: BackgroundLoop, gw_fleet, gateway_redis: TcpProxy, published: Published, django_db_blocker
) -> Iterator[RunningGateway]:
    """An in-process gateway whose Redis is the proxy; this process's own client is not."""
    with django_db_blocker.unblock():
        with override_settings(REDIS_URL=f"redis://127.0.0.1:{gateway_redis.port}/0"):
            running = start_gateway(bg, publish=published, queue_depth=None)
        yield running
        bg.run(gateway_redis.restore())
        stop_gateway(running)


@pytest.fixture
def redis_back(bg: BackgroundLoop, gateway_redis: TcpProxy) -> Iterator[TcpProxy]:
    """Whatever a test did to the proxy, the gateway has Redis again afterwards."""
    yield gateway_redis
    bg.run(gateway_redis.restore())


class Charger:
    """A 1.6 client that, on each platform call, runs ``before_answer`` and then accepts it."""

    def __init__(self, running: RunningGateway, cp_id: str, before_answer: Callable[[], Awaitable[None]]) -> None:
        self.running = running
        self.cp_id = cp_id
        self.before_answer = before_answer
        self.calls: list[list[Any]] = []
        self.ws: ClientConnection | None = None
        self.task: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self.ws = await ws_connect(self.running.url, self.cp_id)
        await roundtrip(self.ws, BOOT_16)
        self.task = asyncio.ensure_future(self._serve())

    async def _serve(self) -> None:
        assert self.ws is not None
        async for raw in self.ws:
            frame = json.loads(raw)
            if frame[0] != 2:
                continue
            self.calls.append(frame)
            await self.before_answer()
            await self.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.ws is not None:
            await self.ws.close()


def registered(running: RunningGateway, cp: str) -> bool:
    holder = get_redis().get(keys.charger_key(cp))
    return holder is not None and holder.decode() == running.gateway.instance_id


def test_a_lost_reply_is_retried_after_redis_returns(proxied_gateway, redis_back, gw_fleet) -> None:
    cp = gw_fleet.chargers_16[0]
    outage_s = 2.0
    restoring: list[asyncio.Future[None]] = []

    async def redis_away_for_a_while() -> None:
        await redis_back.cut()  # the answer arrives while the gateway cannot reach Redis

        async def come_back() -> None:
            await asyncio.sleep(outage_s)
            await redis_back.restore()

        restoring.append(asyncio.ensure_future(come_back()))

    charger = Charger(proxied_gateway, cp, redis_away_for_a_while)
    proxied_gateway.bg.run(charger.start())
    lost_before = proxied_gateway.gateway.lost_replies
    try:
        wait_until(lambda: registered(proxied_gateway, cp), what="registry entry")
        started = time.monotonic()
        result = command_send(command=Command(cp, "SetChargingProfile", SET_PROFILE_16), timeout_s=10)
        took_s = time.monotonic() - started
    finally:
        proxied_gateway.bg.run(charger.stop())

    assert result.status == "Accepted"  # not a Timeout: the reply was pushed again once Redis was back
    assert len(charger.calls) == 1
    assert outage_s <= took_s < 10
    assert proxied_gateway.gateway.lost_replies == lost_before


@pytest.fixture
def charging_seed_car(gw_fleet) -> Iterator[ChargingStation]:
    """The first seed charger online with a car charging (this test's transaction only)."""
    station = ChargingStation.objects.get(charge_point_id=gw_fleet.seed_chargers[0])
    station.is_online = True
    station.last_seen_at = timezone.now()
    station.save(update_fields=["is_online", "last_seen_at"])
    connector = Connector.objects.get(station=station, connector_id=1)
    connector.status = "Charging"
    connector.save(update_fields=["status"])
    ChargingSession.objects.create(
        station=station,
        connector=connector,
        transaction_id="lost-reply-1",
        started_at=timezone.now() - timedelta(minutes=2),
        meter_start_wh=0,
    )
    yield station
    forget_balancing_keys(connection.schema_name, station.site_id)


def test_a_reply_lost_for_good_is_a_timeout_by_the_push_deadline_and_the_site_is_released(
    proxied_gateway, redis_back, gw_fleet, charging_seed_car, settings, caplog
) -> None:
    settings.BALANCING_PUSH_TIMEOUT_S = 3.0
    redis_outage.down_since = None
    cp = charging_seed_car.charge_point_id

    async def redis_gone() -> None:
        await redis_back.cut()

    charger = Charger(proxied_gateway, cp, redis_gone)
    proxied_gateway.bg.run(charger.start())
    lost_before = proxied_gateway.gateway.lost_replies
    try:
        wait_until(lambda: registered(proxied_gateway, cp), what="registry entry")
        started = time.monotonic()
        run = site_balance(site_id=charging_seed_car.site_id, reason="lost reply")
        took_s = time.monotonic() - started
        # The gateway gives up on the reply at the deadline plus the grace, and says so once.
        wait_until(lambda: proxied_gateway.gateway.lost_replies > lost_before, timeout=15, what="a lost reply")
    finally:
        proxied_gateway.bg.run(charger.stop())

    assert run is not None
    assert charger.calls  # the charger got the profile and accepted it; only its answer was lost
    pushes = list(ProfilePush.objects.filter(run=run))
    assert pushes
    assert {p.status for p in pushes} == {"Timeout"}
    assert run.status == BalancingRun.Status.PARTIAL  # a lost answer is not an acceptance
    # One batch waited (the raises were held back): the push timeout plus the grace, not 30 s.
    assert took_s < 3.0 + REPLY_GRACE_S + 3.0
    # ... and the site is free again: no Redis lock, no PostgreSQL lock.
    assert not get_redis().exists(tenant_key(connection.schema_name, "balance-lock", charging_seed_car.site_id))
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
        assert cursor.fetchone()[0] == 0
    lost_logs = [r for r in caplog.records if "answer was lost" in r.getMessage()]
    assert len(lost_logs) == proxied_gateway.gateway.lost_replies - lost_before


def test_a_charger_that_connects_while_redis_is_away_is_registered_once_it_is_back(
    proxied_gateway, redis_back, gw_fleet, bg
) -> None:
    cp = gw_fleet.chargers_16[3]
    get_redis().delete(keys.charger_key(cp))
    bg.run(redis_back.cut())
    charger = Charger(proxied_gateway, cp, lambda: asyncio.sleep(0))
    proxied_gateway.bg.run(charger.start())  # admitted and booted: neither needs Redis
    try:
        time.sleep(1.5)
        assert not registered(proxied_gateway, cp)
        bg.run(redis_back.restore())
        wait_until(lambda: registered(proxied_gateway, cp), timeout=10, what="the registry entry written late")
        result = command_send(command=Command(cp, "SetChargingProfile", SET_PROFILE_16), timeout_s=10)
    finally:
        proxied_gateway.bg.run(charger.stop())

    assert result.status == "Accepted"


def test_a_live_gateway_whose_key_expired_announces_its_chargers_again(
    proxied_gateway, redis_back, gw_fleet, published
) -> None:
    cp = gw_fleet.chargers_16[1]
    charger = Charger(proxied_gateway, cp, lambda: asyncio.sleep(0))
    proxied_gateway.bg.run(charger.start())
    try:
        wait_until(lambda: registered(proxied_gateway, cp), what="registry entry")
        before = len(published.events)
        # What the workers see when an instance could not reach Redis for a TTL: its keys are gone.
        get_redis().delete(keys.instance_key(proxied_gateway.gateway.instance_id), keys.charger_key(cp))

        ttl = django_settings.GATEWAY_REGISTRY_TTL_S
        wait_until(lambda: registered(proxied_gateway, cp), timeout=ttl, what="the charger re-asserted")
        announced = wait_until(
            lambda: [e for e in published.events[before:] if e["type"] == "connected" and e["cp"] == cp],
            timeout=5,
            what="a new connected event",
        )
    finally:
        proxied_gateway.bg.run(charger.stop())

    assert get_redis().exists(keys.instance_key(proxied_gateway.gateway.instance_id))
    assert announced[0]["gateway"] == proxied_gateway.gateway.instance_id


# --- A killed gateway process -----------------------------------------------------------------


def test_chargers_of_a_killed_gateway_are_shown_offline_within_30_s(celery_worker, gw_fleet, bg, tenant) -> None:
    cp = gw_fleet.chargers_16[2]
    gateway = GatewayProcess()
    instance_id = re.search(r"gateway (\S+) listening on", gateway.log())
    assert instance_id is not None
    gateway_id = instance_id.group(1)
    ws: list[ClientConnection] = []

    async def connect() -> None:
        ws.append(await ws_connect(gateway.url(), cp))
        await roundtrip(ws[0], BOOT_16)

    try:
        bg.run(connect())

        def station() -> ChargingStation:
            return ChargingStation.objects.get(charge_point_id=cp)

        wait_until(
            lambda: station().is_online and station().gateway_id == gateway_id,
            timeout=60,
            what="the worker to record the charger online through this gateway",
        )
        killed_at = time.monotonic()
        since = timezone.now()
        gateway.kill()

        sweep_s = django_settings.GATEWAY_LIVENESS_SWEEP_S
        while time.monotonic() - killed_at < KILL_TO_OFFLINE_S + 10:  # what beat does, every sweep_s
            with schema_context("public"):
                stations_gateway_sweep_all.delay()
            sent = time.monotonic()
            while time.monotonic() - sent < sweep_s and station().is_online:
                time.sleep(0.2)
            if not station().is_online:
                break
        offline_after_s = time.monotonic() - killed_at
    finally:
        gateway.stop()
        for socket in ws:
            with contextlib.suppress(Exception):
                bg.run(socket.close(), timeout=5)

    assert not station().is_online
    assert station().gateway_id == ""
    assert offline_after_s <= KILL_TO_OFFLINE_S, f"offline {offline_after_s:.1f} s after the kill"
    run = wait_until(
        lambda: BalancingRun.objects.filter(
            site_id=station().site_id, reason=f"gateway {gateway_id} gone", started_at__gte=since
        ).first(),
        timeout=30,
        what="a run of the charger's site",
    )
    assert run.limits is not None
