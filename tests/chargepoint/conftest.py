"""Fixtures for the gateway: committed chargers, a real gateway on a background loop, clients.

The gateway and the Celery worker are other connections (threads, a process): they cannot see
rows a test writes inside its rolled-back transaction. So the chargers they work with are
written here, committed, once per test module (``gw_fleet``), and removed after it, so that
no other suite sees them.
"""

import asyncio
import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import pytest
import websockets
from django.conf import settings
from django.db import connection
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context
from ocpp.exceptions import OCPPError
from ocpp.messages import CallError, CallResult, unpack
from websockets.asyncio.client import ClientConnection

from balancing.models import Circuit, Site
from chargepoint.gateway.server import Gateway
from chargepoint.models import ChargerCommand, ChargingSession, ChargingStation, IdTag, MeterReading
from chargepoint.services import charger_register
from evplatform.redis import get_redis
from tenants.models import ChargePointIdentity
from tests.conftest import _database_url, _free_port, delete_retrying

T = TypeVar("T")
PASSWORD = "gateway-test-secret-01"
SITE_SLUG = "gw-site"
ALLOW_LIST_SITE_SLUG = "gw-closed"
CHARGERS_16 = [f"GWT16-{n}" for n in range(1, 9)]
CHARGERS_201 = [f"GWT201-{n}" for n in range(1, 5)]
SEED_CHARGERS = [f"GWSEED-{n}" for n in range(1, 5)]
CLOSED_CHARGER = "GWCLOSED-1"
SEED_SITE_SLUG = "gw-seed"
ALLOWED_TAG = "ALLOWED-TAG-1"


@dataclass
class Fleet:
    """Committed test chargers (tenant alpha) and their sites."""

    site_id: int
    seed_site_id: int
    closed_site_id: int
    password: str = PASSWORD
    chargers_16: list[str] = field(default_factory=lambda: list(CHARGERS_16))
    chargers_201: list[str] = field(default_factory=lambda: list(CHARGERS_201))
    seed_chargers: list[str] = field(default_factory=lambda: list(SEED_CHARGERS))
    closed_charger: str = CLOSED_CHARGER


# Site ids far from the small ones other suites create: the balancer's Redis keys name the
# tenant schema and the site id, and suites running at once share Redis and the schema name.
SITE_IDS = {SITE_SLUG: 910_001, SEED_SITE_SLUG: 910_002, ALLOW_LIST_SITE_SLUG: 910_003}


def _site(slug: str, **values: Any) -> Site:
    for key in get_redis().scan_iter(match=f"evp{settings.CELERY_QUEUE_PREFIX}:*:rebalance-pending:{SITE_IDS[slug]}"):
        get_redis().delete(key)
    site = Site.objects.create(pk=SITE_IDS[slug], slug=slug, name=slug, limit_a=Decimal("63"), timezone="UTC", **values)
    Circuit.objects.create(site=site, name="Panel A", kind="panel", limit_a=Decimal("63"))
    return site


@pytest.fixture(scope="module")
def gw_fleet(tenant, django_db_blocker) -> Iterator[Fleet]:
    with django_db_blocker.unblock():
        with tenant_context(tenant):
            site = _site(SITE_SLUG, demand_cap_kw=Decimal("40"))
            seed_site = _site(SEED_SITE_SLUG, demand_cap_kw=Decimal("20"))
            closed = _site(ALLOW_LIST_SITE_SLUG, free_vend=False)
            IdTag.objects.create(site=closed, id_tag=ALLOWED_TAG)
        for slug, ids in ((SITE_SLUG, CHARGERS_16 + CHARGERS_201), (SEED_SITE_SLUG, SEED_CHARGERS)):
            for cp in ids:
                charger_register(
                    tenant=tenant,
                    site_slug=slug,
                    charge_point_id=cp,
                    password=PASSWORD,
                    max_current_a=Decimal("16"),
                    circuit_name="Panel A",
                )
        charger_register(
            tenant=tenant,
            site_slug=ALLOW_LIST_SITE_SLUG,
            charge_point_id=CLOSED_CHARGER,
            password=PASSWORD,
            max_current_a=Decimal("16"),
        )
        connection.set_schema_to_public()
    yield Fleet(site.pk, seed_site.pk, closed.pk)
    with django_db_blocker.unblock():
        with tenant_context(tenant):
            _delete_fleet([site.pk, seed_site.pk, closed.pk])
        with schema_context(get_public_schema_name()):
            ChargePointIdentity.objects.filter(site_slug__in=[SITE_SLUG, SEED_SITE_SLUG, ALLOW_LIST_SITE_SLUG]).delete()
        connection.set_schema_to_public()


def _delete_fleet(site_ids: list[int]) -> None:
    """Delete the fleet's sites and everything about them, also while the worker still writes."""

    def delete() -> None:
        stations = ChargingStation.objects.filter(site__in=site_ids)
        MeterReading.objects.filter(station__in=stations).delete()
        ChargingSession.objects.filter(station__in=stations).delete()
        ChargerCommand.objects.filter(station__in=stations).delete()
        stations.delete()  # cascades to connectors and the balancer's rows about them
        IdTag.objects.filter(site__in=site_ids).delete()
        Site.objects.filter(pk__in=site_ids).delete()

    delete_retrying(delete)


class BackgroundLoop:
    """An event loop in a thread: the gateway and the test clients run there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="gw-test-loop")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> "asyncio.Future[T]":
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class RunningGateway:
    gateway: Gateway
    bg: BackgroundLoop
    stop: asyncio.Event

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway.port}/ocpp"


def start_gateway(bg: BackgroundLoop, **kwargs: Any) -> RunningGateway:
    async def create() -> tuple[Gateway, asyncio.Event]:
        return Gateway(host="127.0.0.1", port=0, **kwargs), asyncio.Event()

    gateway, stop = bg.run(create())
    bg.spawn(gateway.run(stop))
    bg.run(asyncio.wait_for(gateway.ready.wait(), 20))
    return RunningGateway(gateway, bg, stop)


def stop_gateway(running: RunningGateway) -> None:
    running.bg.loop.call_soon_threadsafe(running.stop.set)
    deadline = 40
    running.bg.run(_wait_stopped(running.gateway), timeout=deadline)


async def _wait_stopped(gateway: Gateway) -> None:
    while gateway._redis is not None and gateway.connections:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)


@pytest.fixture(scope="session")
def bg() -> Iterator[BackgroundLoop]:
    loop = BackgroundLoop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def gateway(bg: BackgroundLoop, gw_fleet: Fleet, django_db_blocker) -> Iterator[RunningGateway]:
    """A real gateway (this process, background loop) publishing to the test queues.

    Its DB threads read the committed registry; pytest-django blocks database access in every
    thread unless unblocked, so the session keeps it unblocked while the gateway runs.
    """
    with django_db_blocker.unblock():
        running = start_gateway(bg)
        yield running
        stop_gateway(running)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def ws_connect(url: str, cp_id: str, password: str = PASSWORD, subprotocol: str = "ocpp1.6") -> ClientConnection:
    return await websockets.connect(
        f"{url}/{cp_id}",
        subprotocols=[websockets.Subprotocol(subprotocol)],
        additional_headers=basic(cp_id, password),
        ping_interval=None,
        compression=None,
        open_timeout=10,
    )


async def roundtrip(ws: ClientConnection, frame: str, timeout: float = 10) -> Any:
    """Send a raw frame; the unpacked answer (CallResult/CallError)."""
    await ws.send(frame)
    answer = await asyncio.wait_for(ws.recv(), timeout)
    try:
        return unpack(answer)
    except OCPPError:
        return answer


def wait_until(condition: Callable[[], Any], *, timeout: float = 30, interval: float = 0.2, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}: last {last!r}")


__all__ = ["CallError", "CallResult"]


@pytest.fixture(autouse=True)
def _quiet_ocpp_frames(caplog) -> None:
    """Every frame at INFO drowns a failure's report; warnings and errors still show."""
    caplog.set_level("WARNING", logger="ocpp")


class GatewayProcess:
    """``manage.py run_gateway`` in a process of its own, on the test database and queues.

    For what an in-process gateway cannot show: a hard kill, its own broker URL, TLS.
    """

    def __init__(self, *, args: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.lines: list[str] = []
        self._ready = threading.Event()
        environment = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "evplatform.settings.test",
            "DATABASE_URL": _database_url(),
            "CELERY_QUEUE_PREFIX": settings.CELERY_QUEUE_PREFIX,
            "LOG_LEVEL": "INFO",
            **(env or {}),
        }
        command = [sys.executable, "manage.py", "run_gateway", "--host", "127.0.0.1", "--port", str(self.port), *args]
        self.process = subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._ready.wait(60):
            self.stop()
            raise AssertionError("run_gateway did not start:\n" + "".join(self.lines[-40:]))

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if "listening on" in line:
                self._ready.set()

    def url(self, scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/ocpp"

    def log(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
