"""Balancing while Redis is unreachable: requests, the sweep and runs go on without it.

Redis is taken away with a TCP proxy in front of the machine's Redis (``bench.tcpproxy``) that
the test cuts: this process's client and the module's own Celery worker (``REDIS_URL`` names
the proxy) lose it together, as they would in an outage; nobody else notices. The worker is a
real ``celery -A evplatform worker`` on the test queues and database.
"""

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from django_tenants.utils import schema_context, tenant_context

from balancing.dispatch import (
    REDIS_DOWN_RETRY_S,
    RUN_LOCK_WAIT_S,
    site_advisory_lock_key,
    site_balance,
    site_rebalance_request,
)
from balancing.models import BalancingRun, ProfilePush, Site
from balancing.push import PushAnswer, PushRequest
from balancing.tasks import sweep_all_sites
from bench.tcpproxy import ThreadedTcpProxy
from chargepoint.commands import REDIS_UNREACHABLE, REPLY_GRACE_S
from chargepoint.models import ChargerCommand, ChargingSession, ChargingStation, Connector
from evplatform.redis import get_redis, redis_outage, tenant_key
from tests.conftest import delete_retrying, forget_balancing_keys, start_celery_worker, stop_celery_worker

pytestmark = pytest.mark.django_db

WAIT_S = 60
SITE_ID = 920_001  # far from other suites' sites: Redis keys name the schema and the site id
CP = "REDISDOWN-CP-1"


@pytest.fixture(scope="module")
def redis_proxy() -> Iterator[ThreadedTcpProxy]:
    proxy = ThreadedTcpProxy(("127.0.0.1", 6379))
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def worker_behind_proxy(django_db_setup, django_db_blocker, redis_proxy, tmp_path_factory) -> Iterator[Path]:
    """A worker whose Redis is the proxy: cut it, and the worker has no Redis either."""
    log_path = tmp_path_factory.mktemp("redisless-worker") / "worker.log"
    with django_db_blocker.unblock():
        worker = start_celery_worker(
            env={"REDIS_URL": f"redis://127.0.0.1:{redis_proxy.port}/0"},
            log_path=log_path,
            hostname=f"redisless-worker-{os.getpid()}@%h",
        )
    yield log_path
    stop_celery_worker(worker)


@pytest.fixture
def redis_cut(redis_proxy: ThreadedTcpProxy, settings) -> Iterator[ThreadedTcpProxy]:
    """This process's Redis client goes through the proxy, which is cut; restored afterwards."""
    settings.REDIS_URL = f"redis://127.0.0.1:{redis_proxy.port}/0"
    get_redis.cache_clear()
    redis_outage.down_since = redis_outage.recovered_at = None
    redis_proxy.cut()
    yield redis_proxy
    redis_proxy.restore()
    get_redis.cache_clear()
    redis_outage.down_since = redis_outage.recovered_at = None


@pytest.fixture(scope="module")
def committed_site(other_tenant, django_db_blocker) -> Iterator[Site]:
    """A site in tenant beta with one charging car, committed so threads and the worker see it."""
    with django_db_blocker.unblock(), tenant_context(other_tenant):
        site = Site.objects.create(
            pk=SITE_ID, slug="redis-down-site", name="Redis down", limit_a=Decimal("63"), demand_cap_kw=Decimal("20")
        )
        station = ChargingStation.objects.create(
            charge_point_id=CP, site=site, max_current_a=Decimal("32"), is_online=True, last_seen_at=timezone.now()
        )
        connector = Connector.objects.create(station=station, connector_id=1, status="Charging")
        ChargingSession.objects.create(
            station=station,
            connector=connector,
            transaction_id="rd-1",
            started_at=timezone.now() - timedelta(minutes=5),
            meter_start_wh=0,
        )
        forget_balancing_keys(other_tenant.schema_name, SITE_ID)
    yield site
    with django_db_blocker.unblock(), tenant_context(other_tenant):
        _delete_site(SITE_ID)


def _delete_site(site_id: int) -> None:
    """Delete the site and its rows, also while the worker still writes a run of it."""

    def delete() -> None:
        stations = ChargingStation.objects.filter(site_id=site_id)
        ChargerCommand.objects.filter(station__in=stations).delete()
        ChargingSession.objects.filter(station__in=stations).delete()
        stations.delete()
        Site.objects.filter(pk=site_id).delete()

    delete_retrying(delete)


def runs_with(tenant, reason: str) -> list[BalancingRun]:
    with tenant_context(tenant):
        return list(BalancingRun.objects.filter(site_id=SITE_ID, reason=reason).order_by("started_at"))


def wait_for_run(tenant, predicate, what: str) -> BalancingRun:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        with tenant_context(tenant):
            for run in BalancingRun.objects.filter(site_id=SITE_ID).order_by("started_at"):
                if predicate(run):
                    return run
        time.sleep(0.2)
    pytest.fail(f"no balancing run {what} within {WAIT_S}s")


def test_a_rebalance_request_reaches_the_worker_while_redis_is_down(
    worker_behind_proxy, redis_cut, other_tenant, committed_site, django_capture_on_commit_callbacks, caplog
) -> None:
    caplog.set_level(logging.WARNING, logger="evplatform.redis")
    with tenant_context(other_tenant), django_capture_on_commit_callbacks(execute=True):
        for n in range(3):
            site_rebalance_request(site_id=SITE_ID, reason=f"plug-in {n} while Redis is down")

    run = wait_for_run(other_tenant, lambda r: r.reason.startswith("plug-in 0"), "for the first request")

    assert redis_cut.proxy.is_cut  # the run happened while Redis was still away, for the worker too
    assert run.status in (BalancingRun.Status.OK, BalancingRun.Status.PARTIAL)
    outage_logs = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(outage_logs) == 1  # once per outage, not per request
    assert "straight to the broker" in outage_logs[0].getMessage()


def test_a_run_that_could_not_reach_the_chargers_runs_again_once_redis_is_back(
    worker_behind_proxy, redis_cut, other_tenant, committed_site, django_capture_on_commit_callbacks
) -> None:
    since = timezone.now()
    with tenant_context(other_tenant), django_capture_on_commit_callbacks(execute=True):
        site_rebalance_request(site_id=SITE_ID, reason="status while Redis is down")
    during = wait_for_run(
        other_tenant, lambda r: r.reason.startswith("status while") and r.finished_at is not None, "during the outage"
    )
    with tenant_context(other_tenant):
        assert {p.error for p in ProfilePush.objects.filter(run=during)} == {REDIS_UNREACHABLE}

    redis_cut.restore()
    back_at = timezone.now()
    after = wait_for_run(
        other_tenant,
        lambda r: r.reason == "retry: Redis unreachable" and r.started_at >= back_at and r.finished_at is not None,
        "once Redis is back",
    )

    assert (after.started_at - back_at).total_seconds() <= REDIS_DOWN_RETRY_S + 5
    assert during.started_at >= since
    with tenant_context(other_tenant):
        # The charger's gateway was looked up this time: it is simply not connected.
        assert {p.error for p in ProfilePush.objects.filter(run=after)} == {"charger not connected"}


def test_the_beat_sweep_reaches_the_worker_while_redis_is_down(
    worker_behind_proxy, redis_cut, other_tenant, committed_site
) -> None:
    since = timezone.now()
    with schema_context("public"):
        sweep_all_sites.delay()

    run = wait_for_run(
        other_tenant,
        lambda r: (
            (r.reason == "sweep" and r.started_at >= since and r.finished_at is not None)
            or (r.last_repeated_at is not None and r.last_repeated_at >= since)
        ),  # the site had not changed
        "from the sweep",
    )

    assert redis_cut.proxy.is_cut
    assert run.status in (BalancingRun.Status.OK, BalancingRun.Status.PARTIAL)


class BlockingPusher:
    """A charger double that holds the run inside its pushes until the test lets it go."""

    def __init__(self, on_enter: Any = None) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.on_enter = on_enter

    def send_many(self, requests: Sequence[PushRequest]) -> list[PushAnswer]:
        if self.on_enter is not None:
            self.on_enter()
        self.entered.set()
        self.release.wait(30)
        return [PushAnswer("Accepted") for _ in requests]


def _in_thread(tenant, fn, out: dict[str, Any], name: str) -> threading.Thread:
    def target() -> None:
        started = time.monotonic()
        try:
            with tenant_context(tenant):
                out[name] = fn()
        except Exception as exc:  # reported by the assertions below
            out[name] = exc
        finally:
            out[f"{name}_s"] = time.monotonic() - started
            connection.close()

    thread = threading.Thread(target=target, name=name)
    thread.start()
    return thread


def test_two_runs_of_a_site_never_overlap_while_redis_is_down(
    worker_behind_proxy, redis_cut, other_tenant, committed_site
) -> None:
    pusher = BlockingPusher()
    out: dict[str, Any] = {}

    first = _in_thread(other_tenant, lambda: site_balance(site_id=SITE_ID, reason="first", pusher=pusher), out, "first")
    assert pusher.entered.wait(20), f"the first run never pushed: {out}"
    second = _in_thread(
        other_tenant, lambda: site_balance(site_id=SITE_ID, reason="second", pusher=pusher), out, "second"
    )
    second.join(30)
    pusher.release.set()
    first.join(30)

    assert isinstance(out["first"], BalancingRun), out  # a run still happens without Redis
    assert out["second"] is None  # the site was locked (in PostgreSQL): no second run at once
    assert out["second_s"] >= RUN_LOCK_WAIT_S * 0.9
    # ... and its request was queued again, straight to the broker, and run by the worker: stored
    # as a run of its own, or counted on the last run when it found the site unchanged.
    first_at = out["first"].started_at
    retried = wait_for_run(
        other_tenant,
        lambda r: (
            (r.reason.startswith("retry:") and "second" in r.reason)
            or (r.last_repeated_at is not None and r.last_repeated_at > first_at)
        ),
        "retried",
    )
    assert (retried.last_repeated_at or retried.started_at) >= first_at


def test_a_run_waits_for_the_postgresql_lock_even_when_redis_answers(other_tenant, committed_site) -> None:
    """A run that locked its site in PostgreSQL only (Redis was down for it) still excludes the others."""
    key = site_advisory_lock_key(schema=other_tenant.schema_name, site_id=SITE_ID)
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_lock(%s)", [key])
                holding.set()
                done.wait(30)
                cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        with tenant_context(other_tenant):
            result = site_balance(site_id=SITE_ID, reason="locked elsewhere", pusher=BlockingPusher())
    finally:
        done.set()
        holder.join(10)

    assert result is None
    assert not get_redis().exists(tenant_key(other_tenant.schema_name, "balance-lock", SITE_ID))  # released


def test_a_run_holds_the_redis_lock_long_enough_for_its_pushes_and_releases_both_locks(other_tenant, settings) -> None:
    settings.BALANCING_PUSH_TIMEOUT_S = 20.0
    # A site of its own, in this test's transaction: the module's worker may still be running a
    # retry of the committed site that an outage test scheduled, and would hold that site's lock.
    site_id = SITE_ID + 1
    lock_key = tenant_key(other_tenant.schema_name, "balance-lock", site_id)
    ttls_s: list[float] = []
    pusher = BlockingPusher(on_enter=lambda: ttls_s.append(get_redis().pttl(lock_key) / 1000))
    pusher.release.set()
    with tenant_context(other_tenant):
        site = Site.objects.create(
            pk=site_id, slug="redis-lock-site", name="Redis lock", limit_a=Decimal("63"), demand_cap_kw=Decimal("20")
        )
        station = ChargingStation.objects.create(
            charge_point_id=f"{CP}-LOCK",
            site=site,
            max_current_a=Decimal("32"),
            is_online=True,
            last_seen_at=timezone.now(),
        )
        connector = Connector.objects.create(station=station, connector_id=1, status="Charging")
        ChargingSession.objects.create(
            station=station,
            connector=connector,
            transaction_id="rd-lock-1",
            started_at=timezone.now() - timedelta(minutes=5),
            meter_start_wh=0,
        )
        forget_balancing_keys(other_tenant.schema_name, site_id)
        run = site_balance(site_id=site_id, reason="locks", pusher=pusher)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
            advisory_held = cursor.fetchone()[0]

    assert isinstance(run, BalancingRun)
    # Two batches of pushes at their longest (the setting plus the reply grace) fit in the lock's life.
    assert ttls_s
    assert min(ttls_s) > 2 * (20.0 + REPLY_GRACE_S)
    assert advisory_held == 0
    assert not get_redis().exists(lock_key)
