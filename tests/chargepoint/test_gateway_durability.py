"""An acknowledged reading is in the tenant's database exactly once, whatever dies meanwhile.

The gateway runs as its own process (``run_gateway``) with the session's Celery worker: a
data-bearing message is answered only once RabbitMQ confirmed the batch that holds it, so a
SIGKILL right after the answer loses nothing. The broker outage is a TCP proxy in front of the
shared RabbitMQ that the test cuts and restores (the gateway's broker URL names the proxy;
other users of RabbitMQ do not notice): no CALLRESULT while it is cut, a CALLERROR
InternalError after ``GATEWAY_ACK_TIMEOUT_S`` (the charger's cue to send again), and after
the outage every reading lands once, also the one sent twice.
"""

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from bench.tcpproxy import TcpProxy
from chargepoint.models import MeterReading
from tests.chargepoint.conftest import GatewayProcess, ws_connect

pytestmark = pytest.mark.django_db

PHASES = ("L1", "L2", "L3")


def meter_values(uid: str, at: datetime, current_a: float = 16.0) -> str:
    sampled = [{"value": f"{current_a:.1f}", "measurand": "Current.Import", "phase": p, "unit": "A"} for p in PHASES]
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(
        [2, uid, "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": stamp, "sampledValue": sampled}]}]
    )


def readings(cp: str, at: datetime) -> list[tuple[Any, ...]]:
    """The rows stored at ``at``: connector, the three phase currents and anything else."""
    rows = MeterReading.objects.filter(station__charge_point_id=cp, sampled_at=at)
    return list(rows.values_list("connector_no", "current_l1_a", "current_l2_a", "current_l3_a", "extra"))


def settled(cp: str, at: datetime, timeout: float = 60) -> list[tuple[Any, ...]]:
    """Wait for the instant's row to hold every phase, then a little more: a late duplicate or
    a second row would show by then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not any(None not in row[1:4] for row in readings(cp, at)):
        time.sleep(0.2)
    time.sleep(2)
    return readings(cp, at)


# One row per instant: connector 1, the 16 A of each phase in its column, nothing else.
STORED = [(1, 16.0, 16.0, 16.0, None)]


async def answer(ws: ClientConnection, timeout: float) -> list[Any]:
    """The next CALLRESULT or CALLERROR; the platform's own calls (the fail-safe profile at
    connect) are accepted on the way."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame[0] != 2:
                return frame
            await ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))


@pytest.fixture
def proxy(bg) -> Any:
    relay = TcpProxy(("127.0.0.1", 5672))
    bg.run(relay.start())
    yield relay
    bg.run(relay.cut())


def test_readings_answered_just_before_the_gateway_is_killed_are_in_the_tenant_database(
    celery_worker, gw_fleet, bg
) -> None:
    cp = gw_fleet.chargers_16[5]
    at = datetime(2026, 2, 1, 12, 0, 0, tzinfo=UTC)
    gateway = GatewayProcess()

    async def send_and_kill() -> list[Any]:
        ws = await ws_connect(gateway.url(), cp)
        await ws.send(meter_values("kill-1", at))
        reply = await answer(ws, 10)
        gateway.kill()  # SIGKILL at once: no drain, no goodbye
        return reply

    try:
        reply = bg.run(send_and_kill())
    finally:
        gateway.stop()

    assert reply == [3, "kill-1", {}]
    assert settled(cp, at) == STORED


def test_during_a_broker_outage_nothing_is_acknowledged_and_afterwards_every_reading_lands_once(
    celery_worker, gw_fleet, bg, proxy
) -> None:
    patient = gw_fleet.chargers_16[6]
    before = datetime(2026, 2, 2, 12, 0, 0, tzinfo=UTC)
    during = before + timedelta(minutes=1)
    ack_timeout_s = 6
    broker_url = f"amqp://guest:guest@127.0.0.1:{proxy.port}//"
    gateway = GatewayProcess(env={"CELERY_BROKER_URL": broker_url, "GATEWAY_ACK_TIMEOUT_S": str(ack_timeout_s)})

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        ws16 = await ws_connect(gateway.url(), patient)
        await ws16.send(meter_values("warm-1", before))
        seen["before"] = await answer(ws16, 10)  # the gateway's broker connection runs through the proxy
        await proxy.cut()
        await ws16.send(meter_values("cut-1", during))
        try:
            seen["while_cut"] = await answer(ws16, ack_timeout_s - 1.5)
        except TimeoutError:
            seen["while_cut"] = None
        # After GATEWAY_ACK_TIMEOUT_S the charger hears InternalError and, as OCPP asks of
        # transaction-related messages, sends the same reading again.
        seen["error"] = await answer(ws16, ack_timeout_s + 5)
        await ws16.send(meter_values("cut-1-again", during))
        with contextlib.suppress(TimeoutError):
            seen["retry_while_cut"] = await answer(ws16, 1)
        await proxy.restore()
        restored = time.monotonic()
        seen["after"] = await answer(ws16, 30)
        seen["answered_after_s"] = time.monotonic() - restored
        await ws16.close()
        return seen

    try:
        seen = bg.run(scenario(), timeout=90)
    finally:
        gateway.stop()

    assert seen["before"] == [3, "warm-1", {}]
    assert seen["while_cut"] is None  # no acknowledgement while the broker is out of reach
    assert seen["error"][:3] == [4, "cut-1", "InternalError"]
    assert "retry_while_cut" not in seen
    assert seen["after"] == [3, "cut-1-again", {}]
    assert settled(patient, before) == STORED
    assert settled(patient, during) == STORED  # sent twice, stored once
    assert "telemetry events of alpha failed" in gateway.log()
