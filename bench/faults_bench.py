"""Fault benchmark: does the site limit hold when chargers, cars and the platform misbehave? (issue 11)

Run:  .venv/bin/python bench/faults_bench.py [--scenario ignore,redis_cut] [--protocol 1.6,2.0.1]
                                              [--sizes 4,20,40] [--quick] [--keep-db]

Starts its own platform: database ``<configured name>_faultbench`` (``evplatform_faultbench``
by default; created, migrated and dropped at the end), queue and Redis prefix
``<CELERY_QUEUE_PREFIX>faultbench.``, one ``run_gateway`` process, one Celery worker
for every queue and a beat process, each with its REDIS_URL and CELERY_BROKER_URL through TCP
proxies of its own (bench/tcpproxy.py) that the benchmark cuts; the machine's services are never
stopped. Timings a deployment would set to minutes are shortened (printed in the header) so a
run takes about half an hour. Sites are single-phase 230 V with a 20 kW cap, of 4 (the seed's
size), 20 and 40 chargers rated 32 A, in OCPP 1.6 and 2.0.1, all six at once; they are created
with the onboarding services.

The truth is the simulators' own draw: the sum over a site's simulated chargers of what each
really draws, sampled every 0.5 s, never the platform's readings. For each scenario and site it
prints one row: seconds, max kW and kWh above the cap (from the fault on); the share of the cap
the chargers that behave used over the last 30 s (their draw / min(cap - what the misbehaving
ones drew, what their cars would take)); time to detect (fault -> the platform's first reaction:
an alert, a lowering profile, a run that books the charger, or for a platform fault its first
run); time to recover (fault -> under the cap for good); for the gateway kill, the time until
the site's chargers are shown offline. The rows also go to bench/results/faults-<date>.json.
"""

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/evplatform")
# Named after the configured database and queue prefix: checkouts that each set their own never
# share (or drop) another's.
DB_NAME = f"{urlsplit(BASE_URL).path.strip('/') or 'evplatform'}_faultbench"
DATABASE_URL = urlunsplit(urlsplit(BASE_URL)._replace(path=f"/{DB_NAME}"))
PREFIX = f"{os.environ.get('CELERY_QUEUE_PREFIX', '')}faultbench."
REDIS_UPSTREAM = ("127.0.0.1", 6379)
BROKER_UPSTREAM = ("127.0.0.1", 5672)
METER_INTERVAL_S = 5.0
# Deployment timings that would make a run take hours, shortened for the benchmark.
BENCH_SETTINGS = {
    "BALANCING_TX_PROFILE_VALIDITY_S": "120",
    "BALANCING_TX_RENEW_BEFORE_S": "40",
    "BALANCING_SWEEP_SECONDS": "15",
}
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "bench.faults_settings",
        "DATABASE_URL": DATABASE_URL,
        "CELERY_QUEUE_PREFIX": PREFIX,
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
        **BENCH_SETTINGS,
    }
)

TENANT = "faultbench"
PASSWORD = "fault-bench-secret-2026"  # noqa: S105 - the bench database's throwaway chargers
CAP_KW = 20.0
SITE_LIMIT_A = 100
RATING_A = 32
CAR_KW = (7.2, 7.0, 7.36, 6.9)  # any three want more than the cap
SAMPLE_S = 0.5
WORKER_ARGS = ["-m", "celery", "-A", "evplatform", "worker", "--loglevel=INFO", "-P", "threads", "-c", "8"]
WORKER_ARGS += ["--without-gossip", "--without-mingle"]
SHARE_WINDOW_S = 30.0
PROTOCOLS = ("1.6", "2.0.1")
SIZES = (4, 20, 40)


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


# -- the bench's platform ---------------------------------------------------------------------


class PlatformProcess:
    """One platform process with its output in a log file; started, killed and restarted at will."""

    def __init__(self, name: str, args: list[str], ready: str, env: dict[str, str], log_dir: Path) -> None:
        self.name, self.args, self.ready_text, self.env = name, args, ready, env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[str] | None = None
        self.starts = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 120) -> None:
        ready = threading.Event()
        self.starts += 1
        self.proc = subprocess.Popen(  # noqa: S603 - our own processes
            [sys.executable, *self.args],
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        proc = self.proc

        def pump() -> None:
            with self.log_path.open("a") as out:
                out.write(f"--- start {self.starts} at {datetime.now(UTC).isoformat()}\n")
                for line in proc.stdout or []:
                    out.write(line)
                    if self.ready_text in line:
                        ready.set()
                        out.flush()

        threading.Thread(target=pump, daemon=True, name=f"{self.name}-log").start()
        if not ready.wait(timeout_s):
            self.stop()
            raise SystemExit(f"{self.name} did not start in {timeout_s:g}s; see {self.log_path}")

    def kill(self) -> None:
        if self.alive and self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive and self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class Platform:
    """Gateway, worker and beat, each reaching Redis and RabbitMQ through proxies of its own."""

    NAMES = ("gateway", "worker", "beat")

    def __init__(self, log_dir: Path) -> None:
        from bench.tcpproxy import TcpProxy, free_port

        self.gateway_port = free_port()
        self.proxies = {
            (name, service): TcpProxy(REDIS_UPSTREAM if service == "redis" else BROKER_UPSTREAM)
            for name in self.NAMES
            for service in ("redis", "broker")
        }
        hostname = f"faultbench-{os.getpid()}@%h"
        commands = {
            "gateway": (
                ["manage.py", "run_gateway", "--host", "127.0.0.1", "--port", str(self.gateway_port)],
                "listening on",
            ),
            "worker": (
                [*WORKER_ARGS, f"--hostname={hostname}"],
                " ready.",
            ),
            "beat": (
                ["-m", "celery", "-A", "evplatform", "beat", "--loglevel=INFO", "-s", str(log_dir / "beat-schedule")],
                "Starting",
            ),
        }
        self.processes = {
            name: PlatformProcess(name, args, ready, self._env(name), log_dir)
            for name, (args, ready) in commands.items()
        }

    def _env(self, name: str) -> dict[str, str]:
        redis_port = self.proxies[(name, "redis")].port
        broker_port = self.proxies[(name, "broker")].port
        return {
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "CELERY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{broker_port}//",
            "LOG_LEVEL": "INFO",
            "DEBUG": "false",
        }

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway_port}/ocpp"

    async def cut(self, service: str) -> None:
        for (_, svc), proxy in self.proxies.items():
            if svc == service:
                await proxy.cut()

    async def restore(self, service: str) -> None:
        for (_, svc), proxy in self.proxies.items():
            if svc == service:
                await proxy.restore()

    async def ensure_running(self) -> None:
        """Every proxy listening and every process up (a scenario may have cut or killed them)."""
        for proxy in self.proxies.values():
            await proxy.start()
        for process in self.processes.values():
            if not process.alive:
                log(f"  starting {process.name} ...")
                await asyncio.to_thread(process.start)

    async def kill(self, *names: str) -> None:
        for name in names:
            await asyncio.to_thread(self.processes[name].kill)

    async def start(self, *names: str) -> None:
        for name in names:
            await asyncio.to_thread(self.processes[name].start)

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.stop()


# -- database: the bench's organisation, sites and chargers -------------------------------------


def site_slug(protocol: str, size: int) -> str:
    return f"fb{protocol.replace('.', '')}-{size}"


def charger_ids(protocol: str, size: int) -> list[str]:
    return [f"FB{protocol.replace('.', '')}-{size}-{n}" for n in range(1, size + 1)]


def prepare(protocols: list[str], sizes: list[int]) -> None:
    from evplatform.bootstrap import ensure_database

    ensure_database(DATABASE_URL)
    import django

    django.setup()
    from decimal import Decimal

    from django.core.management import call_command
    from django_tenants.utils import tenant_context

    from balancing.services import site_create_or_update
    from chargepoint.services import charger_register
    from tenants.services import tenant_create

    log(f"preparing database {DB_NAME} (migrations, organisation, sites, chargers) ...")
    call_command("migrate_schemas", interactive=False, verbosity=0)
    tenant = tenant_create(
        slug=TENANT,
        name="Fault bench",
        domain="faultbench.localhost",
        admin_email="bench@faultbench.localhost",
        admin_password="faultbench-admin-pass-2026",  # noqa: S106 - a throwaway tenant
    ).obj
    for protocol in protocols:
        for size in sizes:
            slug = site_slug(protocol, size)
            with tenant_context(tenant):
                site_create_or_update(
                    slug=slug,
                    name=f"Fault bench {protocol} x{size}",
                    limit_a=Decimal(SITE_LIMIT_A),
                    phases=1,
                    demand_cap_kw=Decimal(str(CAP_KW)),
                    actor="system:faults_bench",
                )
            for cp in charger_ids(protocol, size):
                charger_register(
                    tenant=tenant,
                    site_slug=slug,
                    charge_point_id=cp,
                    password=PASSWORD,
                    max_current_a=Decimal(RATING_A),
                    phases=1,
                )
    purge_queues()


def purge_queues() -> None:
    from evplatform.celery import app

    with app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in app.conf.task_queues:
            bound = queue.bind(channel)
            bound.declare()
            bound.purge()


def reset_state() -> None:
    """Every scenario starts from idle, unknown chargers: no sessions, limits, runs or alerts."""
    from django.db import IntegrityError, transaction
    from django.db.models import ProtectedError
    from django_tenants.utils import tenant_context

    from balancing.models import (
        BalancingRun,
        ChargerModelCompliance,
        ConnectorLimit,
        SiteAlert,
        SiteMeterReading,
        StationFailsafe,
    )
    from chargepoint.models import ChargerCommand, ChargingSession, ChargingStation, Connector, MeterReading
    from evplatform.redis import get_redis
    from tenants.models import Tenant

    with tenant_context(Tenant.objects.get(slug=TENANT)):
        for attempt in range(20):
            try:
                with transaction.atomic():
                    MeterReading.objects.all().delete()
                    ChargingSession.objects.all().delete()
                    ChargerCommand.objects.all().delete()
                    BalancingRun.objects.all().delete()
                    ConnectorLimit.objects.all().delete()
                    StationFailsafe.objects.all().delete()
                    SiteAlert.objects.all().delete()
                    SiteMeterReading.objects.all().delete()
                    ChargerModelCompliance.objects.all().delete()
                    Connector.objects.update(status="Unknown", status_changed_at=None)
                    ChargingStation.objects.update(is_online=False, connected_at=None)
                break
            except (IntegrityError, ProtectedError):
                if attempt == 19:
                    raise
                time.sleep(0.5)
    redis = get_redis()
    for key in redis.scan_iter(match=f"evp{PREFIX}:{TENANT}:*"):
        redis.delete(key)


def drop_database() -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    admin_url = urlunsplit(urlsplit(BASE_URL)._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


# -- what the platform did (read from its database after a scenario) ----------------------------


def platform_reaction(*, slug: str, since: datetime, misbehaving: list[str], platform_fault: bool) -> datetime | None:
    """When the platform first reacted after ``since``: an alert, a lowering, a run booking the charger.

    For a platform fault (nothing wrong with a charger): the first balancing run after ``since``.
    """
    from django_tenants.utils import tenant_context

    from balancing.models import BalancingRun, ProfilePush, SiteAlert
    from tenants.models import Tenant

    with tenant_context(Tenant.objects.get(slug=TENANT)):
        runs = BalancingRun.objects.filter(site__slug=slug, started_at__gte=since).order_by("started_at")
        if platform_fault:
            first = runs.first()
            return first.started_at if first else None
        times: list[datetime] = []
        alert = SiteAlert.objects.filter(site__slug=slug, opened_at__gte=since).order_by("opened_at").first()
        if alert is not None:
            times.append(alert.opened_at)
        lowering = (
            ProfilePush.objects.filter(run__site__slug=slug, kind=ProfilePush.Kind.LOWER, sent_at__gte=since)
            .exclude(station__charge_point_id__in=misbehaving)
            .order_by("sent_at")
            .first()
        )
        if lowering is not None:
            times.append(lowering.sent_at)
        wanted = {f"{cp}/1" for cp in misbehaving}
        for run in runs.only("started_at", "problem")[:200]:
            evses = (run.problem or {}).get("evses", [])
            if any(e.get("id") in wanted and e.get("fixed_a") is not None for e in evses):
                times.append(run.started_at)
                break
        return min(times) if times else None


def online_count(slug: str) -> int:
    from django_tenants.utils import tenant_context

    from chargepoint.models import ChargingStation
    from tenants.models import Tenant

    with tenant_context(Tenant.objects.get(slug=TENANT)):
        return ChargingStation.objects.filter(site__slug=slug, is_online=True).count()


# -- simulated sites ------------------------------------------------------------------------------


@dataclass
class SimSite:
    protocol: str
    size: int
    chargers: list[Any]
    stops: list[asyncio.Event]
    misbehaving: list[str] = field(default_factory=list)
    samples: list[Any] = field(default_factory=list)
    fault_at_s: float | None = None
    fault_wall: datetime | None = None
    offline_s: float | None = None
    note: str = ""

    @property
    def slug(self) -> str:
        return site_slug(self.protocol, self.size)


@dataclass
class Row:
    scenario: str
    protocol: str
    chargers: int
    seconds_above: float
    max_kw_above: float
    kwh_above: float
    behaving_share: float | None
    detect_s: float | None
    recover_s: float | None
    offline_s: float | None = None
    note: str = ""


class Bench:
    """One scenario's run: the sites' simulators on this loop, the sampler, the platform."""

    def __init__(self, platform: Platform, protocols: list[str], sizes: list[int], quick: bool) -> None:
        self.platform = platform
        self.protocols = protocols
        self.sizes = sizes
        self.quick = quick
        self.sites: list[SimSite] = []
        self.started = 0.0
        self.tasks: list[asyncio.Future[Any]] = []

    def seconds(self, full: float) -> float:
        """A scenario's wait, halved in --quick runs."""
        return full / 2 if self.quick else full

    def now_s(self) -> float:
        return asyncio.get_running_loop().time() - self.started

    async def start_sites(self, make_spec: Callable[[int, str, float], Any]) -> None:
        """Start every site's simulators; ``make_spec(index, cp, car_kw)`` gives each its ChargerSpec."""
        from chargepoint.simulator.charger import SimulatedCharger

        self.started = asyncio.get_running_loop().time()
        for protocol in self.protocols:
            for size in self.sizes:
                chargers, stops = [], []
                for i, cp in enumerate(charger_ids(protocol, size)):
                    spec = make_spec(i, cp, CAR_KW[i % len(CAR_KW)])
                    spec.ocpp_version = protocol
                    charger = SimulatedCharger(spec, self.platform.url, meter_interval_s=METER_INTERVAL_S)
                    stop = asyncio.Event()
                    chargers.append(charger)
                    stops.append(stop)
                    self.tasks.append(asyncio.ensure_future(charger.run(stop)))
                self.sites.append(SimSite(protocol, size, chargers, stops))
        self.tasks.append(asyncio.ensure_future(self._sample()))

    async def _sample(self) -> None:
        from chargepoint.simulator.fleet import site_truth

        next_print = 0.0
        while True:
            t = self.now_s()
            for site in self.sites:
                site.samples.append(site_truth(site.chargers, t_s=t, misbehaving=site.misbehaving))
            if t >= next_print:
                next_print = t + 15
                totals = ", ".join(f"{s.slug} {s.samples[-1].total_kw:5.2f}" for s in self.sites)
                log(f"    t={t:5.0f}s site totals (kW, cap {CAP_KW:g}): {totals}")
            await asyncio.sleep(SAMPLE_S)

    def charger_0_misbehaves(self) -> None:
        """Charger 0 of every site is the one that misbehaves: the share is of the others."""
        for site in self.sites:
            site.misbehaving = [site.chargers[0].spec.charge_point_id]

    def mark_fault(self) -> None:
        """The fault starts now, at every site."""
        for site in self.sites:
            site.fault_at_s = self.now_s()
            site.fault_wall = datetime.now(UTC)

    async def wait_sessions(self, timeout_s: float = 90) -> None:
        """Until every plugged-in car has a session and a profile (or ``timeout_s``)."""
        deadline = self.now_s() + timeout_s
        while self.now_s() < deadline:
            pending = [
                c
                for s in self.sites
                for c in s.chargers
                if c.state.plugged
                and (c.state.transaction_id is None or not c.state.profiles_received)
                and not c.state.fault.mode
            ]
            if not pending:
                return
            await asyncio.sleep(1)
        log(f"    (still waiting for {len(pending)} sessions or profiles after {timeout_s:g}s; going on)")

    async def wait_balanced(self, hold_s: float = 5.0, timeout_s: float = 90) -> None:
        """Until every site's true total held under its cap for ``hold_s`` (or ``timeout_s``: noted)."""
        from chargepoint.simulator.fleet import CAP_TOLERANCE_KW

        deadline = self.now_s() + timeout_s
        good_since: float | None = None
        while self.now_s() < deadline:
            over = [s for s in self.sites if s.samples and s.samples[-1].total_kw > CAP_KW + CAP_TOLERANCE_KW]
            if over:
                good_since = None
            elif good_since is None:
                good_since = self.now_s()
            elif self.now_s() - good_since >= hold_s:
                return
            await asyncio.sleep(SAMPLE_S)
        for site in self.sites:
            if site.samples and site.samples[-1].total_kw > CAP_KW + CAP_TOLERANCE_KW:
                site.note = f"over the cap before the fault ({site.samples[-1].total_kw:.2f} kW)"
                log(f"    {site.slug}: {site.note}")

    async def stop(self) -> None:
        for site in self.sites:
            for stop in site.stops:
                stop.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def rows(self, scenario: str, *, platform_fault: bool) -> list[Row]:
        from chargepoint.simulator.fleet import fault_metrics

        rows = []
        for site in self.sites:
            if site.fault_at_s is None or site.fault_wall is None:
                continue
            end = site.samples[-1].t_s if site.samples else site.fault_at_s
            metrics = fault_metrics(
                site.samples,
                cap_kw=CAP_KW,
                fault_at_s=site.fault_at_s,
                steady_from_s=max(site.fault_at_s, end - SHARE_WINDOW_S),
            )
            reacted = await asyncio.to_thread(
                platform_reaction,
                slug=site.slug,
                since=site.fault_wall,
                misbehaving=site.misbehaving,
                platform_fault=platform_fault,
            )
            rows.append(
                Row(
                    scenario=scenario,
                    protocol=site.protocol,
                    chargers=site.size,
                    seconds_above=round(metrics.seconds_above, 1),
                    max_kw_above=round(metrics.max_kw_above, 2),
                    kwh_above=round(metrics.kwh_above, 4),
                    behaving_share=None if metrics.behaving_share is None else round(metrics.behaving_share, 3),
                    detect_s=None if reacted is None else round((reacted - site.fault_wall).total_seconds(), 1),
                    recover_s=None if metrics.recover_s is None else round(metrics.recover_s, 1),
                    offline_s=site.offline_s,
                    note=site.note,
                )
            )
        return rows


# -- scenarios ------------------------------------------------------------------------------------


def plain_spec(
    *, plug_at: Callable[[int], float | None] | None = None, fault_model: str = "", from_boot: bool = False
) -> Any:
    """ChargerSpecs of cars plugging in soon after start; charger 0 reports ``fault_model`` as its model
    and, ``from_boot``, misbehaves that way from the start."""
    from chargepoint.simulator.charger import ChargerSpec
    from chargepoint.simulator.model import NO_FAULT, Fault

    def make(i: int, cp: str, car_kw: float) -> Any:
        return ChargerSpec(
            cp,
            PASSWORD,
            car_kw,
            rating_a=RATING_A,
            phases=1,
            plug_in_after_s=(1.0 + 0.2 * i) if plug_at is None else plug_at(i),
            fault=Fault(fault_model) if (i == 0 and from_boot) else NO_FAULT,
            model=("Sim-" + fault_model)[:20] if (i == 0 and fault_model) else "SimCharger",
        )

    return make


def car_0_held_back(i: int) -> float | None:
    """``plug_at`` of sites whose charger 0 gets its car only when the scenario says."""
    return None if i == 0 else 1.0 + 0.2 * i


async def warm_up(bench: Bench) -> None:
    """Until every plugged-in car charges and every site is under its cap (a settled start)."""
    await bench.wait_sessions()
    await bench.wait_balanced()
    await asyncio.sleep(bench.seconds(20))


async def scenario_switch_fault(bench: Bench, mode: str, text: str, observe_s: float = 90) -> None:
    """Charger 0 of each site starts misbehaving mid-session (``mode``) once the sites are balanced."""
    from chargepoint.simulator.model import parse_fault

    await bench.start_sites(plain_spec(fault_model=mode))
    await warm_up(bench)
    log(f"  fault: charger 0 of each site switches to {text}")
    fault = parse_fault(text)
    for site in bench.sites:
        site.chargers[0].state.set_fault(fault)
    bench.charger_0_misbehaves()
    bench.mark_fault()
    await asyncio.sleep(bench.seconds(observe_s))


async def scenario_ignore(bench: Bench) -> None:
    await scenario_switch_fault(bench, "ignore_profiles", "ignore_profiles")


async def scenario_ignore_tx(bench: Bench) -> None:
    await scenario_switch_fault(bench, "ignore_tx_profiles", "ignore_tx_profiles")


async def scenario_drop_reconnect(bench: Bench) -> None:
    await scenario_switch_fault(bench, "drop_reconnect", "drop_reconnect:20:5")


async def scenario_sleeping_car(bench: Bench) -> None:
    """Charger 0's car falls asleep (stops drawing, does not resume by itself).

    Watched for 150 s: telling a sleeping car from a paused or tapering one takes the platform
    about a minute, and the share is taken over the last 30 s.
    """
    await scenario_switch_fault(bench, "sleeping_car", "sleeping_car:0", observe_s=150)


async def scenario_reject_join(bench: Bench) -> None:
    """A charger that rejects every profile (from boot) gets its car once the site is full."""
    await bench.start_sites(plain_spec(plug_at=car_0_held_back, fault_model="reject_profiles", from_boot=True))
    bench.charger_0_misbehaves()
    await warm_up(bench)
    log("  fault: the rejecting charger's car plugs in on the full site")
    for site in bench.sites:
        site.chargers[0].state.plugged = True
    bench.mark_fault()
    await asyncio.sleep(bench.seconds(90))


async def scenario_reject_boot(bench: Bench) -> None:
    """A charger rejects every profile from boot; every car plugs in at once (fault: its plug-in)."""
    await bench.start_sites(plain_spec(fault_model="reject_profiles", from_boot=True))  # charger 0's car at 1 s
    bench.charger_0_misbehaves()
    await asyncio.sleep(1.0)
    bench.mark_fault()
    await asyncio.sleep(bench.seconds(100))


async def scenario_plugins(bench: Bench) -> None:
    """Every charger idle and booted; the cars plug in at random over 20 s (transients)."""
    await bench.start_sites(plain_spec(plug_at=lambda i: None))
    await asyncio.sleep(bench.seconds(20))  # booted, fail-safe defaults installed
    log("  fault: every site's cars plug in at random over 20 s")
    bench.mark_fault()
    rng = random.Random(11)  # noqa: S311 - a simulation
    for site in bench.sites:
        for charger in site.chargers:
            asyncio.get_running_loop().call_later(rng.uniform(0, 20), _plug, charger)
    await asyncio.sleep(20 + bench.seconds(60))


def _plug(charger: Any) -> None:
    charger.state.plugged = True


async def _platform_outage(
    bench: Bench, what: str, cut: Callable[[], Awaitable[None]], restore: Callable[[], Awaitable[None]], outage_s: float
) -> None:
    """One car per site held back; the outage starts, the car plugs in 10 s later, the platform returns."""
    await bench.start_sites(plain_spec(plug_at=car_0_held_back))
    await warm_up(bench)
    log(f"  fault: {what} for {outage_s:g}s; a car plugs in at every site 10 s in")
    bench.mark_fault()
    await cut()
    await asyncio.sleep(10)
    for site in bench.sites:
        site.chargers[0].state.plugged = True
    await asyncio.sleep(outage_s - 10)
    log(f"  {what}: over, restoring")
    await restore()
    await asyncio.sleep(bench.seconds(60))


async def scenario_redis_cut(bench: Bench) -> None:
    p = bench.platform
    await _platform_outage(bench, "Redis cut", lambda: p.cut("redis"), lambda: p.restore("redis"), 60)


async def scenario_broker_cut(bench: Bench) -> None:
    p = bench.platform
    await _platform_outage(bench, "RabbitMQ cut", lambda: p.cut("broker"), lambda: p.restore("broker"), 60)


async def scenario_worker_kill(bench: Bench) -> None:
    p = bench.platform
    await _platform_outage(bench, "worker SIGKILLed", lambda: p.kill("worker"), lambda: p.start("worker"), 30)


async def scenario_platform_silent(bench: Bench) -> None:
    """Gateway, worker and beat gone for longer than the TxProfile validity (chargers fall back)."""
    p = bench.platform
    validity = float(BENCH_SETTINGS["BALANCING_TX_PROFILE_VALIDITY_S"])
    await bench.start_sites(plain_spec())
    await warm_up(bench)
    outage = validity + 30
    log(f"  fault: gateway, worker and beat killed for {outage:g}s (TxProfile validity {validity:g}s)")
    bench.mark_fault()
    await p.kill("gateway", "worker", "beat")
    await asyncio.sleep(outage)
    log("  platform back")
    await p.start("gateway", "worker", "beat")
    await asyncio.sleep(bench.seconds(60))


async def scenario_gateway_kill(bench: Bench) -> None:
    """The gateway SIGKILLed: how long until its chargers are shown offline; restarted after."""
    p = bench.platform
    await bench.start_sites(plain_spec())
    await warm_up(bench)
    log("  fault: gateway SIGKILLed")
    bench.mark_fault()
    await p.kill("gateway")
    killed = bench.now_s()
    pending = list(bench.sites)
    while pending and bench.now_s() - killed < 90:
        await asyncio.sleep(1)
        for site in list(pending):
            if await asyncio.to_thread(online_count, site.slug) == 0:
                site.offline_s = round(bench.now_s() - killed, 1)
                pending.remove(site)
    for site in pending:
        site.note = f"still shown online {bench.now_s() - killed:.0f} s after the kill"
    log(f"  gateway back after {bench.now_s() - killed:.0f}s")
    await p.start("gateway")
    await asyncio.sleep(bench.seconds(60))


async def scenario_offline_no_session(bench: Bench) -> None:
    """Charger 0's car leaves, then the charger goes offline for good (its reservation must go)."""
    await bench.start_sites(plain_spec())
    await warm_up(bench)
    log("  fault: charger 0 of each site: car unplugged, then the charger goes offline")
    for site in bench.sites:
        site.chargers[0].state.plugged = False
    await asyncio.sleep(METER_INTERVAL_S)
    for site in bench.sites:
        site.stops[0].set()
    bench.mark_fault()
    await asyncio.sleep(bench.seconds(90))


SCENARIOS: dict[str, tuple[str, Callable[[Bench], Awaitable[None]], bool]] = {
    # name: (title, run, platform fault?)
    "ignore": ("a charger ignores every profile (Accepted)", scenario_ignore, False),
    "ignore_tx": ("a charger ignores TxProfiles, obeys a station maximum", scenario_ignore_tx, False),
    "reject_join": ("a charger rejecting profiles joins a full site", scenario_reject_join, False),
    "reject_boot": ("a charger rejects every profile from boot", scenario_reject_boot, False),
    "redis_cut": ("Redis cut for 60 s while a car plugs in", scenario_redis_cut, True),
    "platform_silent": ("the platform silent longer than the TxProfile validity", scenario_platform_silent, True),
    "plugins": ("every car plugs in (transients)", scenario_plugins, True),
    "gateway_kill": ("the gateway SIGKILLed and restarted", scenario_gateway_kill, True),
    "sleeping_car": ("a car falls asleep and does not resume", scenario_sleeping_car, False),
    "offline_no_session": ("a charger goes offline with no session", scenario_offline_no_session, False),
    "worker_kill": ("the worker SIGKILLed for 30 s while a car plugs in", scenario_worker_kill, True),
    "broker_cut": ("RabbitMQ cut for 60 s while a car plugs in", scenario_broker_cut, True),
    "drop_reconnect": ("a charger drops every 20 s, back after 5 s", scenario_drop_reconnect, False),
}


def fmt(value: float | None, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def print_rows(rows: list[Row]) -> None:
    print(
        f"{'scenario':<19} {'ocpp':<6} {'CPs':>3} {'s above':>8} {'max kW+':>8} {'kWh above':>10} "
        f"{'share':>6} {'detect s':>8} {'recover s':>9} {'offline s':>9}",
        flush=True,
    )
    for r in rows:
        share = None if r.behaving_share is None else 100 * r.behaving_share
        print(
            f"{r.scenario:<19} {r.protocol:<6} {r.chargers:>3} {r.seconds_above:>8.1f} {r.max_kw_above:>8.2f} "
            f"{r.kwh_above:>10.4f} {fmt(share, '5.0f'):>5}% {fmt(r.detect_s, '8.1f'):>8} "
            f"{fmt(r.recover_s, '9.1f', 'never'):>9} {fmt(r.offline_s, '9.1f'):>9}  {r.note}",
            flush=True,
        )


def markdown_summary(rows: list[Row]) -> str:
    """One line per scenario, the worst figure over its sites (sizes and protocols), for the READMEs."""
    lines = [
        "| fault | s above | max kW above | kWh above | behaving share (min) | detect s (max) | recover s (max) "
        "| offline s (max) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in dict.fromkeys(r.scenario for r in rows):
        group = [r for r in rows if r.scenario == name]
        shares = [r.behaving_share for r in group if r.behaving_share is not None]
        detects = [r.detect_s for r in group if r.detect_s is not None]
        recovers = [r.recover_s for r in group]
        offline = [r.offline_s for r in group]
        recover = "never" if None in recovers else f"{max(x for x in recovers if x is not None):.1f}"
        off = "" if name != "gateway_kill" else ("> 90" if None in offline else f"{max(x for x in offline if x):.1f}")
        lines.append(
            f"| {SCENARIOS[name][0] if name in SCENARIOS else name} | {max(r.seconds_above for r in group):.1f} "
            f"| {max(r.max_kw_above for r in group):.2f} | {max(r.kwh_above for r in group):.4f} "
            f"| {f'{100 * min(shares):.0f} %' if shares else '-'} | {f'{max(detects):.1f}' if detects else '-'} "
            f"| {recover} | {off} |"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace, names: list[str], log_dir: Path) -> list[Row]:
    platform = Platform(log_dir)
    rows: list[Row] = []
    try:
        for n, name in enumerate(names, 1):
            title, scenario, platform_fault = SCENARIOS[name]
            log(f"[{n}/{len(names)}] {name}: {title}")
            await asyncio.to_thread(reset_state)
            await platform.ensure_running()
            bench = Bench(platform, args.protocols, args.sizes, args.quick)
            try:
                await asyncio.wait_for(scenario(bench), timeout=900)
            except TimeoutError:
                log(f"  {name}: did not finish in 900 s; its rows are what was measured until then")
            finally:
                await bench.stop()
            await platform.restore("redis")
            await platform.restore("broker")
            new = await bench.rows(name, platform_fault=platform_fault)
            print_rows(new)
            rows.extend(new)
            await asyncio.sleep(3)  # the disconnects reach the worker before the next reset
    finally:
        await asyncio.to_thread(platform.stop_all)
        for proxy in platform.proxies.values():
            await proxy.cut()
    return rows


def main() -> None:
    import logging

    logging.getLogger("ocpp").setLevel(logging.ERROR)  # a charger's CALLERRORs during an outage are expected
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="all", help=f"comma-separated, of: {', '.join(SCENARIOS)}")
    parser.add_argument("--protocol", default=",".join(PROTOCOLS), help="1.6, 2.0.1 or both")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="chargers per site, e.g. 4,20,40")
    parser.add_argument("--quick", action="store_true", help="half the waits (outages keep their length)")
    parser.add_argument("--keep-db", action="store_true", help=f"keep {DB_NAME} afterwards")
    parser.add_argument("--json", help="where to write the rows (default bench/results/faults-<date>.json)")
    parser.add_argument("--summary-from", metavar="JSON", help="only print the markdown summary of a saved run")
    args = parser.parse_args()
    if args.summary_from:
        saved = json.loads(Path(args.summary_from).read_text())
        print(markdown_summary([Row(**r) for r in saved["rows"]]))
        return
    names = list(SCENARIOS) if args.scenario == "all" else [s.strip() for s in args.scenario.split(",")]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"--scenario: unknown {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.protocols = [p.strip() for p in args.protocol.split(",")]
    if any(p not in PROTOCOLS for p in args.protocols):
        parser.error(f"--protocol: {args.protocol!r}; use 1.6, 2.0.1 or both")
    try:
        args.sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes: {args.sizes!r} is not a list of charger counts")
    if any(not 1 <= s <= 200 for s in args.sizes):
        parser.error("--sizes: each between 1 and 200 chargers")
    log_dir = Path(tempfile.mkdtemp(prefix="faultbench-"))
    print(
        f"fault benchmark: {len(names)} scenarios x sites of {args.sizes} chargers x OCPP {args.protocols}, "
        f"single-phase 230 V, {RATING_A} A chargers, cap {CAP_KW:g} kW (grid {SITE_LIMIT_A} A)\n"
        f"  bench settings: {', '.join(f'{k}={v}' for k, v in BENCH_SETTINGS.items())}, "
        f"meter interval {METER_INTERVAL_S:g} s, truth sampled every {SAMPLE_S:g} s, "
        f"share over the last {SHARE_WINDOW_S:g} s{', quick' if args.quick else ''}\n"
        f"  platform logs in {log_dir}",
        flush=True,
    )
    started = time.monotonic()
    prepare(args.protocols, args.sizes)
    rows: list[Row] = []
    try:
        rows = asyncio.run(run(args, names, log_dir))
    finally:
        with contextlib.suppress(Exception):
            purge_queues()
        if not args.keep_db:
            drop_database()
    print(f"\nall rows ({(time.monotonic() - started) / 60:.1f} min):", flush=True)
    print_rows(rows)
    out = Path(args.json) if args.json else ROOT / "bench" / "results" / f"faults-{datetime.now(UTC):%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "settings": BENCH_SETTINGS,
        "meter_interval_s": METER_INTERVAL_S,
        "cap_kw": CAP_KW,
        "sizes": args.sizes,
        "protocols": args.protocols,
        "quick": args.quick,
        "measured_at": datetime.now(UTC).isoformat(),
    }
    out.write_text(json.dumps({"header": header, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    print(f"rows written to {out}\n\n{markdown_summary(rows)}", flush=True)


if __name__ == "__main__":
    main()
