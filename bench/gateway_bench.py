"""Benchmark the OCPP gateway on this machine (load to 127.0.0.1 only, bounded in count and time).

Run:  .venv/bin/python bench/gateway_bench.py [--only throughput,connections,plugin] [--chargers 5000]

1. throughput: the most MeterValues per second one gateway process answers, side by side with
   a bare ``ocpp``-library server that only acknowledges (bench/gateway_bare_server.py), same
   load generator, same connections.
2. connections: N chargers held by one gateway process, each sending MeterValues every
   ``--meter-interval`` s; round-trip p50/p99 in the steady state, gateway RSS and CPU. The
   gateway answers MeterValues once RabbitMQ confirmed their batch, so the round trip holds
   the batch window (10 ms) and a confirmed publish.
3. plugin: 1,000 chargers over 100 sites (10 each, 9 charging); the 10th car of each site
   plugs in; time from its StatusNotification(Preparing) until the site is rebalanced: every
   charger whose limit changes has its SetChargingProfile (the lowerings first, break before
   make, then the newcomer's). Through telemetry worker, balancer and command path: needs the
   balancing glue (balance_site) and runs a real Celery worker.

Uses its own database (the configured database's name with ``_gwbench``, ``evplatform_gwbench``
by default; created and migrated here), tenant ``gwbench``, and queue/Redis prefix
``<CELERY_QUEUE_PREFIX>gwbench.`` (purged at the end), so it disturbs no other run.
"""

import argparse
import asyncio
import base64
import gc
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evplatform.settings.local")
BASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/evplatform")
# Named after the configured database and queue prefix: checkouts that each set their own never
# share one.
DB_NAME = f"{urlsplit(BASE_URL).path.strip('/') or 'evplatform'}_gwbench"
os.environ["DATABASE_URL"] = urlunsplit(urlsplit(BASE_URL)._replace(path=f"/{DB_NAME}"))
PREFIX = f"{os.environ.get('CELERY_QUEUE_PREFIX', '')}gwbench."
os.environ["CELERY_QUEUE_PREFIX"] = PREFIX
os.environ.setdefault("LOG_LEVEL", "WARNING")

PASSWORD = "gateway-bench-secret-2026"  # noqa: S105 - the bench database's throwaway chargers
TENANT = "gwbench"
CONN_SITE = "conn"
CONN_PREFIX = "GWB-C"
PLUG_PREFIX = "GWB-S"
HOST = "127.0.0.1"
BARE_PORT, GATEWAY_PORT = 9301, 9302


def meter_frame(uid: str, current_a: float = 16.0) -> str:
    values = [
        {"value": f"{current_a:.1f}", "measurand": "Current.Import", "phase": p, "unit": "A"}
        for p in ("L1", "L2", "L3")
    ]
    values.append({"value": "12345.6", "measurand": "Energy.Active.Import.Register", "unit": "Wh"})
    values.append({"value": f"{current_a * 0.69:.3f}", "measurand": "Power.Active.Import", "unit": "kW"})
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return json.dumps(
        [2, uid, "MeterValues", {"connectorId": 1, "meterValue": [{"timestamp": stamp, "sampledValue": values}]}]
    )


def auth(cp: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{cp}:{PASSWORD}".encode()).decode()}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


# -- setup ------------------------------------------------------------------------------------


def prepare(conn_chargers: int, sites: int, per_site: int) -> None:
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
    from chargepoint.models import ChargingStation, Connector
    from tenants.models import ChargePointIdentity
    from tenants.services import tenant_create

    print(f"preparing database {DB_NAME} ...", flush=True)
    call_command("migrate_schemas", interactive=False, verbosity=0)
    tenant = tenant_create(
        slug=TENANT,
        name="Gateway bench",
        domain="gwbench.localhost",
        admin_email="bench@gwbench.localhost",
        admin_password="gwbench-admin-pass-2026",  # noqa: S106 - a throwaway tenant in the bench database
    ).obj
    password_hash = make_password(PASSWORD)  # one hash for all: the gateway verifies it once
    wanted: dict[str, list[str]] = {CONN_SITE: [f"{CONN_PREFIX}{n}" for n in range(1, conn_chargers + 1)]}
    for s in range(1, sites + 1):
        wanted[f"plug-{s}"] = [f"{PLUG_PREFIX}{s}-{c}" for c in range(1, per_site + 1)]
    with tenant_context(tenant):
        existing = set(ChargingStation.objects.values_list("charge_point_id", flat=True))
        for slug, ids in wanted.items():
            site, _ = Site.objects.get_or_create(
                slug=slug,
                defaults={
                    "name": slug,
                    "limit_a": Decimal("100000") if slug == CONN_SITE else Decimal("63"),
                    "timezone": "UTC",
                },
            )
            new = [cp for cp in ids if cp not in existing]
            stations = ChargingStation.objects.bulk_create(
                [ChargingStation(charge_point_id=cp, site=site, max_current_a=Decimal(16)) for cp in new],
                batch_size=1000,
            )
            Connector.objects.bulk_create([Connector(station=st, connector_id=1) for st in stations], batch_size=1000)
    with schema_context("public"):
        known = set(ChargePointIdentity.objects.filter(tenant=tenant).values_list("charge_point_id", flat=True))
        ChargePointIdentity.objects.filter(tenant=tenant).update(password_hash=password_hash)
        ChargePointIdentity.objects.bulk_create(
            [
                ChargePointIdentity(
                    charge_point_id=cp,
                    tenant=tenant,
                    site_slug=slug,
                    password_hash=password_hash,
                    password_changed_at=timezone.now(),
                )
                for slug, ids in wanted.items()
                for cp in ids
                if cp not in known
            ],
            batch_size=1000,
        )
    declare_queues(purge=True)


def declare_queues(*, purge: bool) -> None:
    from evplatform.celery import app

    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in app.conf.task_queues:
            bound = queue.bind(channel)
            bound.declare()
            if purge:
                bound.purge()


def reset_sessions() -> None:
    """Every plug-in run starts from idle chargers (no sessions, no limits left from before)."""
    from django_tenants.utils import tenant_context

    from balancing.models import BalancingRun, ConnectorLimit
    from chargepoint.models import ChargerCommand, ChargingSession, ChargingStation, Connector, MeterReading
    from tenants.models import Tenant

    with tenant_context(Tenant.objects.get(slug=TENANT)):
        MeterReading.objects.all().delete()
        ChargingSession.objects.all().delete()
        ChargerCommand.objects.all().delete()
        BalancingRun.objects.all().delete()
        ConnectorLimit.objects.all().delete()
        Connector.objects.update(status="Unknown", status_changed_at=None)
        ChargingStation.objects.update(is_online=False, connected_at=None)
    from evplatform.redis import get_redis

    redis = get_redis()
    for key in redis.scan_iter(match=f"evp{PREFIX}:{TENANT}:*"):
        redis.delete(key)


# -- processes ----------------------------------------------------------------------------------


@contextmanager
def process(args: list[str], ready: str | None, name: str, env: dict[str, str] | None = None) -> Iterator[Any]:
    import psutil

    proc = subprocess.Popen(  # noqa: S603 - our own scripts
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        if ready:
            deadline = time.monotonic() + 60
            if proc.stdout is None:
                raise SystemExit(f"{name}: no output pipe")
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    raise SystemExit(f"{name} exited before it was ready")
                if ready in line:
                    break
        else:
            time.sleep(3)
        # Keep reading its output, or a chatty process blocks on a full pipe.
        log_path = Path(tempfile.gettempdir()) / f"gateway-bench-{name.replace(' ', '-')}.log"

        def drain() -> None:
            with log_path.open("w") as log:
                for line in proc.stdout or []:
                    log.write(line)

        threading.Thread(target=drain, daemon=True).start()
        yield psutil.Process(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def gateway_process(*, workers: bool = False) -> Any:
    """The gateway. Without workers the telemetry queue only grows, and the gateway would
    stretch its batch window for workers that are not there: it stays at its 10 ms then,
    as with workers that keep up."""
    env = {"LOG_LEVEL": "INFO", "GATEWAY_RATE_PER_S": "1000", "GATEWAY_RATE_BURST": "1000"}
    if not workers:
        env["GATEWAY_BATCH_WINDOW_MAX_S"] = "0"
    return process(
        ["manage.py", "run_gateway", "--host", HOST, "--port", str(GATEWAY_PORT)], "listening on", "gateway", env
    )


# -- load generators ----------------------------------------------------------------------------


async def connect(port: int, cp: str, with_auth: bool) -> Any:
    import websockets

    return await websockets.connect(
        f"ws://{HOST}:{port}/ocpp/{cp}",
        subprotocols=[websockets.Subprotocol("ocpp1.6")],
        additional_headers=auth(cp) if with_auth else {},
        compression=None,
        ping_interval=None,
        open_timeout=60,
        max_queue=None,
    )


async def throughput(port: int, *, with_auth: bool, connections: int, seconds: float) -> float:
    """MeterValues answered per second with ``connections`` chargers sending back to back."""
    sockets = await asyncio.gather(*[connect(port, f"{CONN_PREFIX}{n}", with_auth) for n in range(1, connections + 1)])
    done = 0
    counting = False
    stop = time.monotonic() + seconds + 2

    async def pump(ws: Any, n: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            i += 1
            await ws.send(meter_frame(f"{n}-{i}"))
            await ws.recv()
            if counting:
                done += 1

    tasks = [asyncio.ensure_future(pump(ws, n)) for n, ws in enumerate(sockets)]
    await asyncio.sleep(2)  # warm-up
    counting = True
    started = time.monotonic()
    await asyncio.gather(*tasks)
    rate = done / (time.monotonic() - started)
    await asyncio.gather(*[ws.close() for ws in sockets])
    return rate


def run_throughput(args: argparse.Namespace) -> dict[str, float]:
    results: dict[str, list[float]] = {"bare": [], "gateway": []}
    for _ in range(args.rounds):
        with process(["bench/gateway_bare_server.py", str(BARE_PORT)], "ready", "bare server"):
            results["bare"].append(
                asyncio.run(throughput(BARE_PORT, with_auth=False, connections=args.conns, seconds=args.seconds))
            )
        with gateway_process():
            results["gateway"].append(
                asyncio.run(throughput(GATEWAY_PORT, with_auth=True, connections=args.conns, seconds=args.seconds))
            )
        print(f"  round: bare {results['bare'][-1]:.0f}/s, gateway {results['gateway'][-1]:.0f}/s", flush=True)
    bare, ours = statistics.median(results["bare"]), statistics.median(results["gateway"])
    print(
        f"throughput ({args.conns} connections, {args.seconds:g}s, median of {args.rounds}): "
        f"bare ocpp server {bare:.0f} MeterValues/s, gateway {ours:.0f}/s = {100 * ours / bare:.0f}% of bare",
        flush=True,
    )
    return {"bare_per_s": bare, "gateway_per_s": ours}


async def hold_connections(args: argparse.Namespace, gw: Any) -> dict[str, float]:
    import psutil

    n = args.chargers
    sem = asyncio.Semaphore(200)
    sockets: list[Any] = []
    failures = 0
    t0 = time.monotonic()

    async def open_one(i: int) -> None:
        nonlocal failures
        async with sem:
            try:
                sockets.append(await connect(GATEWAY_PORT, f"{CONN_PREFIX}{i}", True))
            except Exception:  # a refused or timed-out connection is counted, not fatal
                failures += 1

    await asyncio.gather(*[open_one(i) for i in range(1, n + 1)])
    ramp_s = time.monotonic() - t0
    gc.freeze()  # the load generator's own GC pauses are not the gateway's latency

    async def keep_frozen() -> None:  # each charger's waiting coroutines live ~10 s: freeze them too
        while True:
            await asyncio.sleep(1)
            gc.freeze()

    freezer = asyncio.ensure_future(keep_frozen())
    print(f"  {len(sockets)} connected in {ramp_s:.1f}s ({failures} failed)", flush=True)
    rtts: list[float] = []
    errors = 0
    error_samples: list[str] = []
    me = psutil.Process()
    end = time.monotonic() + args.hold
    measure_from = time.monotonic() + args.meter_interval  # one full interval of warm-up

    async def charger(ws: Any, i: int) -> None:
        nonlocal errors
        await asyncio.sleep(random.uniform(0, args.meter_interval))  # noqa: S311 - spread the load
        k = 0
        while time.monotonic() < end:
            k += 1
            sent = time.monotonic()
            try:
                await ws.send(meter_frame(f"{i}-{k}"))
                answer = await asyncio.wait_for(ws.recv(), 30)
            except Exception as exc:
                errors += 1
                if len(error_samples) < 5:
                    error_samples.append(repr(exc)[:200])
                return
            if not answer.startswith("[3,"):
                errors += 1
                if len(error_samples) < 5:
                    error_samples.append(answer[:200])
            if sent >= measure_from:
                rtts.append((time.monotonic() - sent) * 1000)
            await asyncio.sleep(max(0.0, args.meter_interval - (time.monotonic() - sent)))

    cpu_before = gw.cpu_times()
    my_before = me.cpu_times()
    wall_before = time.monotonic()
    await asyncio.gather(*[charger(ws, i) for i, ws in enumerate(sockets)])
    freezer.cancel()
    cpu = gw.cpu_times()
    mine = me.cpu_times()
    wall = time.monotonic() - wall_before
    cpu_pct = 100 * ((cpu.user + cpu.system) - (cpu_before.user + cpu_before.system)) / wall
    load_pct = 100 * ((mine.user + mine.system) - (my_before.user + my_before.system)) / wall
    for sample in error_samples:
        print(f"  error: {sample}", flush=True)
    rss_mb = gw.memory_info().rss / 2**20
    await asyncio.gather(*[ws.close() for ws in sockets], return_exceptions=True)
    result = {
        "connected": float(len(sockets)),
        "failed": float(failures),
        "rate_per_s": len(sockets) / args.meter_interval,
        "p50_ms": pct(rtts, 50),
        "p99_ms": pct(rtts, 99),
        "max_ms": max(rtts, default=float("nan")),
        "errors": float(errors),
        "gateway_cpu_pct": cpu_pct,
        "gateway_rss_mb": rss_mb,
        "load_generator_cpu_pct": load_pct,
    }
    print(
        f"connections: {len(sockets)} held ({failures} failed), MeterValues every {args.meter_interval:g}s "
        f"({result['rate_per_s']:.0f}/s): round trip p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
        f"max {result['max_ms']:.0f} ms, {errors} errors; gateway CPU {cpu_pct:.0f}% of a core, RSS {rss_mb:.0f} MB "
        f"(load generator {load_pct:.0f}%)",
        flush=True,
    )
    return result


def run_connections(args: argparse.Namespace) -> dict[str, float]:
    with gateway_process() as gw:
        return asyncio.run(hold_connections(args, gw))


class PlugCharger:
    """A light 1.6 client: answers every platform call Accepted and notes SetChargingProfile times."""

    def __init__(self, cp: str) -> None:
        self.cp = cp
        self.ws: Any = None
        self.profiles: list[float] = []
        self.pending: dict[str, asyncio.Future[Any]] = {}
        self.n = 0

    async def start(self) -> None:
        self.ws = await connect(GATEWAY_PORT, self.cp, True)
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            if frame[0] == 2:
                if frame[2] == "SetChargingProfile":
                    self.profiles.append(time.monotonic())
                await self.ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
            elif frame[1] in self.pending:
                self.pending.pop(frame[1]).set_result(frame)

    async def call(self, action: str, payload: dict[str, Any]) -> Any:
        self.n += 1
        uid = f"{self.cp}-{self.n}"
        future = asyncio.get_running_loop().create_future()
        self.pending[uid] = future
        await self.ws.send(json.dumps([2, uid, action, payload]))
        return await asyncio.wait_for(future, 30)

    async def status(self, status: str) -> None:
        await self.call("StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": status})

    async def plug_in(self) -> None:
        await self.status("Preparing")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        await self.call("StartTransaction", {"connectorId": 1, "idTag": "BENCH", "meterStart": 0, "timestamp": stamp})
        await self.status("Charging")

    async def meter(self, current_a: float) -> None:
        frame = json.loads(meter_frame("x", current_a))
        await self.call("MeterValues", frame[3])


async def plugin_latency(args: argparse.Namespace) -> dict[str, float]:
    sites = {
        s: [PlugCharger(f"{PLUG_PREFIX}{s}-{c}") for c in range(1, args.per_site + 1)] for s in range(1, args.sites + 1)
    }
    everyone = [c for group in sites.values() for c in group]
    sem = asyncio.Semaphore(100)

    async def bring_up(c: PlugCharger, charging: bool) -> None:
        async with sem:
            await c.start()
            await c.call("BootNotification", {"chargePointVendor": "Bench", "chargePointModel": "B1"})
            await c.status("Available")
            if charging:
                await c.plug_in()
                await c.meter(10.0)

    await asyncio.gather(*[bring_up(c, i % args.per_site != args.per_site - 1) for i, c in enumerate(everyone)])
    print(
        f"  {len(everyone)} chargers up, {args.per_site - 1} of {args.per_site} charging per site; settling ...",
        flush=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # quiet: no profile for 5 s
        last = max((p for c in everyone for p in c.profiles), default=0.0)
        if last and time.monotonic() - last > 5:
            break
        await asyncio.sleep(1)
    latencies: list[float] = []  # plug-in -> the newcomer's profile (made after every lowering)
    settled: list[float] = []  # plug-in -> the site's last profile of that rebalance
    missing = 0

    async def plug_site(s: int, delay: float) -> None:
        nonlocal missing
        await asyncio.sleep(delay)
        group = sites[s]
        newcomer = group[-1]
        before = len(newcomer.profiles)
        t0 = time.monotonic()
        await newcomer.plug_in()
        end = t0 + 30
        while time.monotonic() < end and len(newcomer.profiles) == before:
            await asyncio.sleep(0.01)
        if len(newcomer.profiles) == before:
            missing += 1
            return
        latencies.append(newcomer.profiles[before] - t0)
        await asyncio.sleep(3)  # anything else of this rebalance arrives meanwhile
        last = max(p for c in group for p in c.profiles if p <= newcomer.profiles[before] + 3)
        settled.append(last - t0)

    order = list(sites)
    random.shuffle(order)
    await asyncio.gather(*[plug_site(s, i * args.spread / len(order)) for i, s in enumerate(order)])
    for c in everyone:
        c.reader.cancel()
    await asyncio.gather(*[c.ws.close() for c in everyone], return_exceptions=True)
    result = {
        "sites": float(len(latencies)),
        "missing": float(missing),
        "p50_s": pct(latencies, 50),
        "p95_s": pct(latencies, 95),
        "max_s": max(latencies, default=float("nan")),
        "settled_p95_s": pct(settled, 95),
    }
    print(
        f"plug-in: {len(everyone)} chargers over {args.sites} sites, plug-ins spread over {args.spread:g}s: "
        f"plug-in to the site rebalanced (lowerings accepted, then the newcomer's SetChargingProfile) "
        f"p50 {result['p50_s']:.2f}s, p95 {result['p95_s']:.2f}s, max {result['max_s']:.2f}s "
        f"(last profile of the run p95 {result['settled_p95_s']:.2f}s); {missing} sites without a profile in 30s",
        flush=True,
    )
    return result


def run_plugin(args: argparse.Namespace) -> dict[str, float]:
    """The production layout: telemetry and reports on a prefork worker; balancing, which
    mostly waits for chargers' answers, on its own thread-pool worker (``--balancing-threads``;
    0 puts balancing on the one prefork worker too)."""
    reset_sessions()
    base = ["-m", "celery", "-A", "evplatform", "worker", "--loglevel=INFO", "--without-gossip", "--without-mingle"]
    env = {"BALANCING_COALESCE_SECONDS": str(args.coalesce_s)}
    prefix = os.environ["CELERY_QUEUE_PREFIX"]
    if args.balancing_threads:
        main = [
            *base,
            f"--concurrency={args.worker_concurrency}",
            f"-Q{prefix}telemetry,{prefix}reports",
            f"--hostname=gwbench-{os.getpid()}@%h",
        ]
        balancer = [
            *base,
            "-P",
            "threads",
            f"--concurrency={args.balancing_threads}",
            f"-Q{prefix}balancing",
            f"--hostname=gwbench-bal-{os.getpid()}@%h",
        ]
        with (
            process(main, None, "worker", env),
            process(balancer, None, "balancer", env),
            gateway_process(workers=True),
        ):
            time.sleep(3)  # the workers connect to the broker
            return asyncio.run(plugin_latency(args))
    worker = [*base, f"--concurrency={args.worker_concurrency}", f"--hostname=gwbench-{os.getpid()}@%h"]
    with process(worker, None, "worker", env), gateway_process(workers=True):
        time.sleep(3)
        return asyncio.run(plugin_latency(args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="throughput,connections,plugin")
    parser.add_argument("--chargers", type=int, default=5000, help="connections bench: chargers held")
    parser.add_argument("--meter-interval", type=float, default=10.0)
    parser.add_argument("--hold", type=float, default=60.0, help="connections bench: seconds of steady load")
    parser.add_argument("--conns", type=int, default=50, help="throughput bench: connections")
    parser.add_argument("--seconds", type=float, default=10.0, help="throughput bench: seconds measured")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--per-site", type=int, default=10)
    parser.add_argument("--spread", type=float, default=10.0, help="plug-in bench: seconds over which sites plug in")
    parser.add_argument("--worker-concurrency", type=int, default=2)
    parser.add_argument("--balancing-threads", type=int, default=16, help="plug-in bench: 0 = no separate worker")
    parser.add_argument("--coalesce-s", type=float, default=0.3, help="plug-in bench: BALANCING_COALESCE_SECONDS")
    args = parser.parse_args()
    only = set(args.only.split(","))
    prepare(max(args.chargers, args.conns), args.sites, args.per_site)
    report: dict[str, Any] = {}
    try:
        if "throughput" in only:
            report["throughput"] = run_throughput(args)
        if "connections" in only:
            report["connections"] = run_connections(args)
        if "plugin" in only:
            report["plugin"] = run_plugin(args)
    finally:
        declare_queues(purge=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
