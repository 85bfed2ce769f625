"""Rollup and report tasks through a real worker (RabbitMQ, PostgreSQL) in the tenant's schema."""

import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context, tenant_context

from balancing.models import Site
from billing.models import (
    IntervalEnergy,
    SavingsReport,
    SessionDraw,
    SimulationCheckpoint,
    SiteMonthDemand,
    Tariff,
)
from billing.tariff_versions import tariff_import
from billing.tasks import (
    generate_savings_report,
    month_closed_everywhere,
    monthly_reports_tenants,
    report_start_delay_s,
    roll_up_intervals,
    simulation_checkpoints,
)
from chargepoint.models import ChargingSession, ChargingStation, Connector, RollupPending
from tests.billing.conftest import simple_record
from tests.billing.readings import readings_write

pytestmark = pytest.mark.django_db
WAIT_S = 60
START = datetime(2026, 9, 14, 16, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def committed_site(other_tenant, django_db_blocker):
    """A site in beta with 2 hours of register readings at 6 kW (and their pending marks), committed
    for the worker."""
    with django_db_blocker.unblock(), tenant_context(other_tenant):
        site = Site.objects.create(slug="billing-worker", name="Billing worker", limit_a=Decimal(63), timezone="UTC")
        tariff_import(site=site, record=simple_record(flat_rate="10"), valid_from=date(2026, 1, 1))
        station = ChargingStation.objects.create(charge_point_id="BILL-W-1", site=site, max_current_a=Decimal(16))
        Connector.objects.create(station=station, connector_id=1)
        readings_write(station, [(START + timedelta(minutes=5 * i), {"energy_wh": 500 * i}) for i in range(25)])
    yield site
    with django_db_blocker.unblock(), tenant_context(other_tenant):
        SavingsReport.objects.all().delete()
        SiteMonthDemand.objects.filter(site=site).delete()
        IntervalEnergy.objects.filter(site=site).delete()
        SessionDraw.objects.filter(session__station__site=site).delete()
        ChargingSession.objects.filter(station__site=site).delete()
        RollupPending.objects.filter(station__site=site).delete()
        ChargingStation.objects.filter(site=site).delete()  # its readings with it (ON DELETE CASCADE)
        Tariff.objects.filter(site=site).delete()
        site.delete()


def wait_for(check, what: str):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen within {WAIT_S}s")


def test_the_rollup_task_fills_the_sites_intervals_in_its_tenant(celery_worker, tenant, other_tenant, committed_site):
    with tenant_context(other_tenant):
        roll_up_intervals.delay()

    def site_rows():
        with tenant_context(other_tenant):
            return list(IntervalEnergy.objects.filter(site=committed_site, station__isnull=True).order_by("start"))

    rows = wait_for(lambda: len(site_rows()) == 8 and site_rows(), "the rollup")
    assert [r.energy_kwh for r in rows] == [Decimal("1.5")] * 8  # 6 kW for 2 hours
    with tenant_context(other_tenant):
        assert not RollupPending.objects.filter(station__site=committed_site).exists()  # taken with them
    assert not IntervalEnergy.objects.exists()  # alpha (active here) got nothing


def test_the_report_task_stores_a_version_in_the_tenant_that_sent_it(celery_worker, other_tenant, committed_site):
    with tenant_context(other_tenant):
        generate_savings_report.delay(month="2026-09", reason="request", requested_by="test")

    def stored():
        with tenant_context(other_tenant):
            return SavingsReport.objects.filter(month=date(2026, 9, 1)).first()

    report = wait_for(stored, "the report")
    with tenant_context(other_tenant):
        assert sorted(report.files.values_list("format", flat=True)) == ["csv", "pdf", "xlsx"]
        site = report.data["sites"][0]
        assert site["slug"] == "billing-worker"
        assert site["actual"]["demand_charge"].startswith("60")  # 6 kW x $10
    assert not SavingsReport.objects.exists()


def test_the_month_to_report_is_the_last_one_closed_in_every_sites_zone(other_tenant, committed_site):
    with tenant_context(other_tenant):
        Site.objects.create(slug="honolulu", name="Honolulu", limit_a=Decimal(63), timezone="Pacific/Honolulu")
        # 1 Oct 05:00 UTC: September closed in UTC, but it is still 30 Sep 19:00 in Honolulu.
        assert month_closed_everywhere(datetime(2026, 10, 1, 5, tzinfo=UTC)) == "2026-08"
        assert month_closed_everywhere(datetime(2026, 10, 1, 11, tzinfo=UTC)) == "2026-09"


# --- Month-close reports, staggered per tenant ------------------------------------------------


def test_a_tenants_report_start_delay_is_fixed_and_tenants_spread_over_the_window(settings) -> None:
    schemas = [f"org_{n}" for n in range(200)]
    delays = [report_start_delay_s(s) for s in schemas]

    assert delays == [report_start_delay_s(s) for s in schemas]  # the same every month, on every host
    assert all(0 <= d < settings.BILLING_REPORT_SPREAD_S == 3600 for d in delays)
    per_quarter_hour = [sum(1 for d in delays if q * 900 <= d < (q + 1) * 900) for q in range(4)]
    assert min(per_quarter_hour) >= 30  # 50 each if perfectly even
    assert len(set(delays)) >= 180  # hardly two tenants start in the same second
    settings.BILLING_REPORT_SPREAD_S = 0
    assert report_start_delay_s("org_1") == 0


def test_the_months_report_is_sent_once_with_the_tenants_own_countdown(tenant, monkeypatch) -> None:
    from django.core.cache import cache
    from django.db import connection

    Site.objects.create(slug="stagger", name="Stagger", limit_a=Decimal(63), timezone="UTC")
    sent: list[dict] = []
    monkeypatch.setattr(
        generate_savings_report, "apply_async", lambda **options: sent.append({**options, "in": connection.schema_name})
    )
    month = month_closed_everywhere(timezone.now())
    cache.delete(f"billing:report-sent:{month}")
    try:
        with schema_context("public"):
            first = monthly_reports_tenants(schemas=[tenant.schema_name])
            again = monthly_reports_tenants(schemas=[tenant.schema_name])  # the next hour's beat
    finally:
        cache.delete(f"billing:report-sent:{month}")

    assert (first, again) == (1, 0)
    assert sent == [
        {
            "kwargs": {"month": month, "reason": "schedule"},
            "countdown": report_start_delay_s(tenant.schema_name),
            "in": tenant.schema_name,
        }
    ]


def test_no_report_is_sent_for_a_month_that_has_one(tenant, monkeypatch) -> None:
    from django.core.cache import cache

    Site.objects.create(slug="stagger-done", name="Done", limit_a=Decimal(63), timezone="UTC")
    month = month_closed_everywhere(timezone.now())
    year, number = (int(p) for p in month.split("-"))
    SavingsReport.objects.create(
        month=date(year, number, 1), version=1, reason="schedule", generated_at=timezone.now(), tariffs={}, data={}
    )
    monkeypatch.setattr(generate_savings_report, "apply_async", lambda **options: pytest.fail("sent again"))
    cache.delete(f"billing:report-sent:{month}")

    with schema_context("public"):
        assert monthly_reports_tenants(schemas=[tenant.schema_name]) == 0


@pytest.fixture(scope="module")
def site_with_yesterdays_session(other_tenant, django_db_blocker):
    """A UTC site in beta with one closed session yesterday 10:00-12:00 (8 kWh at 32 A), committed."""
    yesterday = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    with django_db_blocker.unblock(), tenant_context(other_tenant):
        site = Site.objects.create(slug="checkpoint-worker", name="Checkpoints", limit_a=Decimal(63), timezone="UTC")
        tariff_import(site=site, record=simple_record(flat_rate="10"), valid_from=date(2026, 1, 1))
        station = ChargingStation.objects.create(charge_point_id="CKPT-W-1", site=site, max_current_a=Decimal(32))
        connector = Connector.objects.create(station=station, connector_id=1)
        ChargingSession.objects.create(
            station=station,
            connector=connector,
            transaction_id="1",
            started_at=yesterday + timedelta(hours=10),
            stopped_at=yesterday + timedelta(hours=12),
            meter_start_wh=Decimal(0),
            meter_stop_wh=Decimal(8000),
            energy_kwh=Decimal(8),
            ev_max_current_a=Decimal(32),
        )
    yield site
    with django_db_blocker.unblock(), tenant_context(other_tenant):
        SimulationCheckpoint.objects.filter(site=site).delete()
        ChargingSession.objects.filter(station__site=site).delete()
        ChargingStation.objects.filter(site=site).delete()
        Tariff.objects.filter(site=site).delete()
        site.delete()


def test_the_checkpoint_task_replays_the_month_to_last_midnight_in_its_tenant(
    celery_worker, tenant, other_tenant, site_with_yesterdays_session
):
    with tenant_context(other_tenant):
        simulation_checkpoints.delay()

    def stored():
        with tenant_context(other_tenant):
            return SimulationCheckpoint.objects.filter(site=site_with_yesterdays_session).first()

    checkpoint = wait_for(stored, "the checkpoint")
    assert checkpoint.policy == "cost_aware"
    assert checkpoint.cut == timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    assert sum(Decimal(kwh) for kwh in checkpoint.state["intervals"].values()) == pytest.approx(Decimal(8))
    assert not SimulationCheckpoint.objects.exists()  # alpha (active here) got nothing
