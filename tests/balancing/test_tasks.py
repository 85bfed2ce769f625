"""`balance_site` and the beat sweep through a real worker, RabbitMQ, Redis and PostgreSQL."""

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from django_tenants.utils import tenant_context

from balancing.models import BalancingRun, ConnectorLimit, Site
from balancing.tasks import balance_site, sweep_all_sites
from chargepoint.models import ChargingSession, ChargingStation, Connector

pytestmark = pytest.mark.django_db
WAIT_S = 60


@pytest.fixture(scope="module")
def committed_site(other_tenant, django_db_blocker):
    """A site in tenant beta, committed so the worker process sees it, removed afterwards.

    Module-scoped so that it is created outside the test's own (rolled back) transaction.
    """
    with django_db_blocker.unblock(), tenant_context(other_tenant):
        site = Site.objects.create(
            slug="worker-site", name="Worker site", limit_a=Decimal("63"), demand_cap_kw=Decimal("20")
        )
        station = ChargingStation.objects.create(
            charge_point_id="WORKER-CP-1", site=site, max_current_a=Decimal("32"), is_online=False
        )
        connector = Connector.objects.create(station=station, connector_id=1, status="Charging")
        ChargingSession.objects.create(
            station=station,
            connector=connector,
            transaction_id="1",
            started_at="2026-05-01T09:00:00Z",
            meter_start_wh=0,
        )
        ConnectorLimit.objects.create(
            connector=connector, limit_a=Decimal("10"), valid_until=timezone.now() + timedelta(days=1)
        )
    yield site
    with django_db_blocker.unblock(), tenant_context(other_tenant):
        BalancingRun.objects.filter(site=site).delete()
        ChargingSession.objects.filter(station__site=site).delete()
        ChargingStation.objects.filter(site=site).delete()
        site.delete()


def runs_of(tenant, site) -> list[BalancingRun]:
    """The site's finished runs: a run's row is written before it solves, its result after."""
    with tenant_context(tenant):
        return list(BalancingRun.objects.filter(site=site, finished_at__isnull=False).order_by("started_at"))


def counted(runs: list[BalancingRun]) -> int:
    """Runs that happened: each stored one and the repeats it counts (an unchanged site is stored once)."""
    return sum(1 + run.repeats for run in runs)


def wait_for_runs(tenant, site, count: int) -> list[BalancingRun]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        runs = runs_of(tenant, site)
        if counted(runs) >= count:
            return runs
        time.sleep(0.2)
    pytest.fail(f"no balancing run recorded within {WAIT_S}s")


def test_balance_site_runs_in_the_worker_in_the_sites_tenant(celery_worker, other_tenant, committed_site) -> None:
    with tenant_context(other_tenant):
        balance_site.delay(site_id=committed_site.pk, reason="test")

    run = wait_for_runs(other_tenant, committed_site, 1)[0]

    assert run.reason == "test"
    assert run.status == BalancingRun.Status.OK
    assert run.limits["reservations"][0]["evse"] == "WORKER-CP-1/1"  # offline: its 10 A stay booked
    offline = next(e for e in run.problem["evses"] if e["id"] == "WORKER-CP-1/1")
    assert offline["fixed_a"] == 10.0
    assert run.result["allocations_a"]["WORKER-CP-1/1"] == 10.0


def test_the_beat_sweep_balances_every_site(celery_worker, other_tenant, committed_site) -> None:
    before = runs_of(other_tenant, committed_site)

    sweep_all_sites.delay()

    runs = wait_for_runs(other_tenant, committed_site, counted(before) + 1)
    # Stored as a run of its own, or (nothing changed at the site) counted on the last one.
    assert runs[-1].reason == "sweep" or (len(runs) == len(before) and runs[-1].repeats > before[-1].repeats)
