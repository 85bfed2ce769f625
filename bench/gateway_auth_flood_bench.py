"""Benchmark: a wrong-password handshake flood against one organisation, another one's charger timed.

Run:  .venv/bin/python bench/gateway_auth_flood_bench.py [--flood 300] [--calls 20]

A real gateway (``manage.py run_gateway``, production password hashing: PBKDF2) and two
organisations. Tenant B's charger is connected and booted. Then ``--flood`` handshakes with
wrong passwords for tenant A's charger ids (half registered ids, half unknown ids, every
password different, from 30 loopback source addresses) are launched at once by another
process, and while they
are in flight tenant B's charger sends StartTransactions (each with a new idTag and start, so
each needs the tenant reads: idTag status and a transactionId from the tenant's sequence) and
Heartbeats, one after the other; their answer times are the figures. Three chargers of tenant B
that are not connected yet (each its own password, nothing cached) connect 0.5, 1 and 2 s into
the flood, from another address, coming back when Retry-After says if refused: the time to
their open connections is the other figure.

Uses its own database (the configured database's name with ``_authflood``), organisations
``afa``/``afb`` and queue/Redis prefix ``<CELERY_QUEUE_PREFIX>authflood.`` (purged at the end).
"""

import argparse
import asyncio
import base64
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "evplatform.settings.local"  # PBKDF2, as in production
BASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/evplatform")
DB_NAME = f"{urlsplit(BASE_URL).path.strip('/') or 'evplatform'}_authflood"
os.environ["DATABASE_URL"] = urlunsplit(urlsplit(BASE_URL)._replace(path=f"/{DB_NAME}"))
PREFIX = f"{os.environ.get('CELERY_QUEUE_PREFIX', '')}authflood."
os.environ["CELERY_QUEUE_PREFIX"] = PREFIX
os.environ.setdefault("LOG_LEVEL", "WARNING")

HOST = "127.0.0.1"
PASSWORD_A = "tenant-a-charger-secret-2026"  # noqa: S105 - the bench database's throwaway chargers
PASSWORD_B = "tenant-b-charger-secret-2026"  # noqa: S105
A_CHARGERS = [f"AFA-{n}" for n in range(1, 41)]
B_CHARGER = "AFB-1"
B_FRESH = [f"AFB-{n}" for n in range(2, 5)]  # each with a password of its own: nothing cached
ATTACK_ADDRESSES = [f"127.0.1.{n}" for n in range(1, 31)]
LEGIT_ADDRESS = "127.0.0.2"
FRESH_AFTER_S = (0.5, 1.0, 2.0)  # when the newcomers connect, after the flood began


def basic(cp: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{cp}:{password}".encode()).decode()}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


def prepare() -> None:
    from evplatform.bootstrap import ensure_database

    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from decimal import Decimal

    from django.contrib.auth.hashers import make_password
    from django.core.management import call_command
    from django.utils import timezone
    from django_tenants.utils import schema_context, tenant_context

    from balancing.models import Site
    from chargepoint.models import ChargingSession, ChargingStation, Connector
    from tenants.models import ChargePointIdentity, Tenant
    from tenants.services import tenant_create

    print(f"preparing database {DB_NAME} ...", flush=True)
    call_command("migrate_schemas", interactive=False, verbosity=0)
    hashes = {PASSWORD_A: make_password(PASSWORD_A), PASSWORD_B: make_password(PASSWORD_B)}
    wanted = {"afa": {cp: PASSWORD_A for cp in A_CHARGERS}, "afb": {B_CHARGER: PASSWORD_B}}
    wanted["afb"].update({cp: f"{PASSWORD_B}-{cp}" for cp in B_FRESH})
    for slug, chargers in wanted.items():
        if not Tenant.objects.filter(slug=slug).exists():
            tenant_create(
                slug=slug,
                name=f"Auth flood {slug}",
                domain=f"{slug}.localhost",
                admin_email=f"bench@{slug}.localhost",
                admin_password="authflood-admin-pass-2026",  # noqa: S106 - a throwaway tenant
            )
        tenant = Tenant.objects.get(slug=slug)
        with tenant_context(tenant):
            site, _ = Site.objects.get_or_create(
                slug="flood", defaults={"name": "flood", "limit_a": Decimal(1000), "timezone": "UTC"}
            )
            ChargingSession.objects.all().delete()
            for cp in chargers:
                station, _ = ChargingStation.objects.get_or_create(
                    charge_point_id=cp, defaults={"site": site, "max_current_a": Decimal(32)}
                )
                Connector.objects.get_or_create(station=station, connector_id=1)
        with schema_context("public"):
            for cp, password in chargers.items():
                ChargePointIdentity.objects.update_or_create(
                    charge_point_id=cp,
                    defaults={
                        "tenant": tenant,
                        "site_slug": "flood",
                        "password_hash": hashes.get(password) or make_password(password),
                        "password_changed_at": timezone.now(),
                        "is_active": True,
                    },
                )
    from evplatform.celery import app

    with app.connection_for_write() as connection:
        for queue in app.conf.task_queues:
            queue.bind(connection.default_channel).declare()


def purge() -> None:
    from evplatform.celery import app
    from evplatform.redis import get_redis

    with app.connection_for_write() as connection:
        for queue in app.conf.task_queues:
            queue.bind(connection.default_channel).purge()
    redis = get_redis()
    for key in redis.scan_iter(match=f"evp{PREFIX}*"):
        redis.delete(key)


class GatewayProcess:
    def __init__(self, port: int) -> None:
        # No worker drains the telemetry queue here: the batch window must not stretch for one.
        env = {**os.environ, "GATEWAY_RATE_PER_S": "1000", "GATEWAY_RATE_BURST": "1000"}
        env["GATEWAY_BATCH_WINDOW_MAX_S"] = "0"
        self.proc = subprocess.Popen(  # noqa: S603 - our own command
            [sys.executable, "manage.py", "run_gateway", "--host", "0.0.0.0", "--port", str(port)],  # noqa: S104
            cwd=ROOT,
            env={**env, "LOG_LEVEL": "INFO"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        if self.proc.stdout is None:
            raise SystemExit("the gateway has no output pipe")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit("the gateway exited before it was ready")
            if "listening on" in line:
                break
        log_path = Path(tempfile.gettempdir()) / "gateway-auth-flood-bench.log"

        def drain() -> None:
            with log_path.open("w") as log:
                for line in self.proc.stdout or []:
                    log.write(line)

        threading.Thread(target=drain, daemon=True).start()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def connect(port: int, cp: str, password: str, address: str) -> Any:
    import websockets

    return await websockets.connect(
        f"ws://{HOST}:{port}/ocpp/{cp}",
        subprotocols=[websockets.Subprotocol("ocpp1.6")],
        additional_headers=basic(cp, password),
        compression=None,
        ping_interval=None,
        open_timeout=120,
        local_addr=(address, 0),
    )


async def connect_retrying(port: int, cp: str, password: str, address: str, refused: Counter[str]) -> Any:
    """As a charger does: after a 503/429 it comes back when Retry-After says, unanswered at once."""
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    while True:
        try:
            return await connect(port, cp, password, address)
        except InvalidStatus as exc:
            if exc.response.status_code not in (429, 503):
                raise
            refused[str(exc.response.status_code)] += 1
            await asyncio.sleep(float(exc.response.headers.get("Retry-After", "1")))
        except InvalidHandshake:  # the gateway's open timeout closed it unanswered
            refused["unanswered"] += 1


async def attempt(port: int, cp: str, address: str) -> tuple[str, float]:
    """One wrong-password handshake: its HTTP status and how long the answer took."""
    from websockets.exceptions import InvalidHandshake, InvalidStatus

    started = time.perf_counter()
    try:
        ws = await connect(port, cp, f"guess-{random.random()}", address)  # noqa: S311 - not a secret
    except InvalidStatus as refused:
        return str(refused.response.status_code), time.perf_counter() - started
    except InvalidHandshake:  # the gateway's open timeout closed it unanswered
        return "dropped", time.perf_counter() - started
    except (OSError, TimeoutError) as exc:
        return type(exc).__name__, time.perf_counter() - started
    await ws.close()
    return "101", time.perf_counter() - started


async def call(ws: Any, frame: list[Any]) -> float:
    started = time.perf_counter()
    await ws.send(json.dumps(frame))
    answer = json.loads(await asyncio.wait_for(ws.recv(), 120))
    if answer[0] != 3:
        raise SystemExit(f"tenant B's charger got {answer}")
    return time.perf_counter() - started


async def scenario(port: int, flood: int, calls: int) -> dict[str, Any]:
    ws = await connect(port, B_CHARGER, PASSWORD_B, LEGIT_ADDRESS)
    await call(ws, [2, "boot", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}])
    await call(ws, [2, "st0", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Available"}])
    idle_starts: list[float] = []
    for n in range(calls):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{n:03d}Z"
        start = {"connectorId": 1, "idTag": f"IDLE-{n}-{random.randrange(10**9)}", "meterStart": n, "timestamp": stamp}  # noqa: S311
        idle_starts.append(await call(ws, [2, f"i{n}", "StartTransaction", start]))
        await asyncio.sleep(0.01)
    await asyncio.sleep(1.1)  # a new second: the timed starts below are new starts
    started = time.perf_counter()
    attacker = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--attack", str(flood), "--port", str(port), stdout=asyncio.subprocess.PIPE
    )
    if attacker.stdout is None or b"launched" not in await attacker.stdout.readline():
        raise SystemExit("the attacking process did not start")
    fresh: list[float] = []
    refused: Counter[str] = Counter()

    async def legitimate(cp: str, after_s: float) -> None:
        await asyncio.sleep(after_s)
        t0 = time.perf_counter()
        other = await connect_retrying(port, cp, f"{PASSWORD_B}-{cp}", LEGIT_ADDRESS, refused)
        fresh.append(time.perf_counter() - t0)
        await other.close()

    newcomers = [asyncio.ensure_future(legitimate(cp, FRESH_AFTER_S[n])) for n, cp in enumerate(B_FRESH)]
    await asyncio.sleep(0.3)  # the flood is in: every hash thread has work queued
    starts: list[float] = []
    beats: list[float] = []
    for n in range(calls):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{n:03d}Z"
        start = {"connectorId": 1, "idTag": f"TAG-{n}-{random.randrange(10**9)}", "meterStart": n, "timestamp": stamp}  # noqa: S311
        starts.append(await call(ws, [2, f"s{n}", "StartTransaction", start]))
        beats.append(await call(ws, [2, f"h{n}", "Heartbeat", {}]))
    in_flight = attacker.returncode is None
    await asyncio.gather(*newcomers)
    results = json.loads((await attacker.communicate())[0])
    flood_s = time.perf_counter() - started
    await ws.close()
    return {
        "starts": starts,
        "idle_starts": idle_starts,
        "beats": beats,
        "fresh": fresh,
        "fresh_refused": refused,
        "flood_in_flight_after_calls": in_flight,
        "flood_s": flood_s,
        "statuses": Counter(status for status, _ in results),
        "refusal_s": [t for _, t in results],
    }


async def attack(port: int, flood: int) -> None:
    """The attacking process: every handshake at once; their (status, seconds) as JSON on stdout."""
    ids = [A_CHARGERS[n % len(A_CHARGERS)] if n % 2 == 0 else f"AFX-{n}" for n in range(flood)]
    random.shuffle(ids)
    attempts = [
        asyncio.ensure_future(attempt(port, cp, ATTACK_ADDRESSES[n % len(ATTACK_ADDRESSES)]))
        for n, cp in enumerate(ids)
    ]
    print("launched", flush=True)
    print(json.dumps(await asyncio.gather(*attempts)), flush=True)


def ms(values: list[float]) -> str:
    return (
        f"p50 {pct(values, 50) * 1000:7.1f} ms  p95 {pct(values, 95) * 1000:7.1f} ms  max {max(values) * 1000:7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flood", type=int, default=300, help="wrong-password handshakes launched at once")
    parser.add_argument("--calls", type=int, default=20, help="StartTransactions (and Heartbeats) timed")
    parser.add_argument("--port", type=int, default=9311)
    parser.add_argument("--attack", type=int, default=0, help=argparse.SUPPRESS)  # the attacking process
    args = parser.parse_args()
    if args.attack:
        asyncio.run(attack(args.port, args.attack))
        return
    prepare()
    gateway = GatewayProcess(args.port)
    try:
        figures = asyncio.run(scenario(args.port, args.flood, args.calls))
    finally:
        gateway.stop()
        purge()
    print(f"\n{args.flood} wrong-password handshakes at once (tenant A, half unknown ids, 30 source addresses)")
    print(f"  tenant B StartTransaction, no flood ({args.calls}): {ms(figures['idle_starts'])}")
    print(f"  tenant B StartTransaction ({args.calls}): {ms(figures['starts'])}")
    print(f"  tenant B Heartbeat        ({args.calls}): {ms(figures['beats'])}")
    print(f"  legitimate fresh handshake ({len(figures['fresh'])}): {ms(figures['fresh'])}")
    print(f"    (retrying after Retry-After; refusals on the way: {dict(figures['fresh_refused']) or 'none'})")
    still = "still in flight" if figures["flood_in_flight_after_calls"] else "over"
    print(f"  flood answered after {figures['flood_s']:.1f} s ({still} after the timed calls)")
    print(f"  its answers: {dict(sorted(figures['statuses'].items()))}")
    print(f"  refusal time: {ms(figures['refusal_s'])}")


if __name__ == "__main__":
    main()
