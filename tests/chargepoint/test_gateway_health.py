"""Liveness, readiness and Prometheus metrics on the gateway's own port, without a charger id or credentials."""

import io
import json
import logging
import re
import urllib.error
import urllib.request

import pytest
from ocpp.messages import CallResult

from evplatform import logs
from tests.chargepoint.conftest import roundtrip, ws_connect

pytestmark = pytest.mark.django_db  # the session's test database (the gateway's threads read it)


def get(gateway, path: str) -> tuple[int, str, str]:
    """(status, body, content type) of a plain HTTP GET on the gateway's port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{gateway.gateway.port}{path}", timeout=10) as response:
            return response.status, response.read().decode(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode(), refused.headers.get("Content-Type", "")


def sample(metrics: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if wanted else ''} (\S+)$"
    match = re.search(pattern, metrics, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_healthz_answers_while_the_loop_runs(gateway) -> None:
    assert get(gateway, "/healthz")[:2] == (200, "ok\n")


def test_readyz_is_ready_with_redis_and_broker_and_503_while_draining(gateway) -> None:
    ready = get(gateway, "/readyz")
    gateway.gateway.draining = True
    try:
        draining = get(gateway, "/readyz")
    finally:
        gateway.gateway.draining = False

    assert ready[:2] == (200, "ready\n")
    assert draining[0] == 503
    assert "draining" in draining[1]


def test_metrics_count_connected_chargers_messages_acks_and_handshakes(gateway, gw_fleet) -> None:
    cp = gw_fleet.chargers_16[0]
    before = get(gateway, "/metrics")[1]

    async def scenario() -> tuple[str, list[object]]:
        ws = await ws_connect(gateway.url, cp)
        try:
            answers = [
                await roundtrip(ws, '[2,"h1","Heartbeat",{}]'),
                await roundtrip(ws, '[2,"h2","Heartbeat",{}]'),
                await roundtrip(
                    ws, '[2,"s1","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Available"}]'
                ),
            ]
            return await gateway.bg.loop.run_in_executor(None, get, gateway, "/metrics"), answers
        finally:
            await ws.close()

    (status, during, content_type), answers = gateway.bg.run(scenario())

    assert status == 200
    assert content_type.startswith("text/plain")
    assert all(isinstance(a, CallResult) for a in answers)
    assert sample(during, "evp_gateway_connected_chargers", protocol="ocpp1.6") >= 1
    heartbeats = "evp_gateway_messages_received_total"
    assert sample(during, heartbeats, action="Heartbeat") - sample(before, heartbeats, action="Heartbeat") == 2
    acks = "evp_gateway_ack_latency_seconds_count"
    assert sample(during, acks) - sample(before, acks) == 1  # the StatusNotification, answered once stored
    handshakes = "evp_gateway_handshakes_total"
    assert sample(during, handshakes, outcome="ok") - sample(before, handshakes, outcome="ok") == 1


def test_an_unknown_action_is_counted_as_other_not_as_its_name(gateway, gw_fleet) -> None:
    cp = gw_fleet.chargers_16[1]

    async def scenario() -> None:
        ws = await ws_connect(gateway.url, cp)
        try:
            await roundtrip(ws, '[2,"x1","MadeUpAction",{}]')
        finally:
            await ws.close()

    gateway.bg.run(scenario())
    metrics = get(gateway, "/metrics")[1]

    assert "MadeUpAction" not in metrics
    assert sample(metrics, "evp_gateway_messages_received_total", action="other") >= 1


def test_a_connections_log_lines_carry_its_tenant_site_and_charger(gateway, gw_fleet, tenant) -> None:
    cp = gw_fleet.chargers_16[1]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.json_formatter())
    gateway_logger = logging.getLogger("chargepoint.gateway")
    gateway_logger.addHandler(handler)
    try:

        async def scenario() -> None:
            ws = await ws_connect(gateway.url, cp)
            await roundtrip(ws, '[2,"h1","Heartbeat",{}]')
            await ws.close()

        gateway.bg.run(scenario())
    finally:
        gateway_logger.removeHandler(handler)

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    connected = next(line for line in lines if "connected" in str(line["event"]))
    assert (connected["charger"], connected["tenant"]) == (cp, tenant.schema_name)
    assert connected["site"]
