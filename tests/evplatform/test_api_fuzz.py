"""A schema-driven fuzz run (schemathesis, every check) against a live server: the schema tells the truth.

Every operation gets valid and invalid requests (examples, coverage and fuzzing phases), then
chains of them along the links schemathesis infers between operations (stateful phase: create,
read, delete, read again), all in deterministic mode: none may answer 5xx, an undocumented
status, content type or body, accept what the schema forbids or refuse what it allows (bar the
few rules tests/evplatform/schemathesis.toml names, which a schema cannot state). Each list
holds real rows, so their bodies are checked too.

One check does not run: object_level_authorization needs two users owning different objects,
and this run has one, an admin of the whole organisation. Who sees which object is by site:
tests/evplatform/test_site_scope.py walks every API URL with a token limited to a site group and
checks that a row of a site outside it is a 404 and that no list shows it (the write tests check
writes the same way: tests/balancing/test_api_writes.py, tests/chargepoint/test_api_writes.py,
tests/billing/test_api_tariffs.py); isolation between organisations is tested in
tests/tenants/test_cross_tenant.py.
"""

import os
import re
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from django_tenants.utils import schema_context, tenant_context

from balancing.models import BalancingRun, Circuit, LimitOverride, Site, SiteLimitSchedule, SiteMeterReading
from billing.models import SavingsReport, Tariff
from billing.savings_reports import savings_report_generate
from chargepoint.models import ChargingSession, ChargingStation, Connector, MeterReading
from tenants.accounts.models import ApiToken, Role, User
from tenants.accounts.tokens import api_token_create
from tenants.models import ChargePointIdentity
from tests.conftest import ALPHA

pytestmark = pytest.mark.django_db
EXAMPLES_PER_OPERATION = 8
WRITTEN = (Site, Circuit, ChargingStation, LimitOverride, Tariff)
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.fixture(scope="module")
def admin_token(tenant, django_db_blocker):
    """A committed admin with a token, and a site with a row of every kind the API lists."""
    with django_db_blocker.unblock(), tenant_context(tenant):
        now = timezone.now()
        reports_before = set(SavingsReport.objects.values_list("pk", flat=True))
        # What the run's writes may add (chargers, circuits, sites by import, ...) is removed afterwards.
        before = {model: set(model.objects.values_list("pk", flat=True)) for model in WRITTEN}
        with schema_context("public"):
            identities_before = set(ChargePointIdentity.objects.values_list("pk", flat=True))
        user = User.objects.create_user(email="fuzz@alpha.localhost", password="fuzz-pass-2026-x", role=Role.ADMIN)
        _, raw = api_token_create(user=user, name="fuzz")
        site = Site.objects.create(slug="fuzz-site", name="Fuzz site", limit_a=63, demand_cap_kw=20)
        main = Circuit.objects.create(site=site, name="Main", limit_a=Decimal("63"))  # no parent: null
        Circuit.objects.create(site=site, name="Bay", parent=main, limit_a=Decimal("32"))
        station = ChargingStation.objects.create(charge_point_id="FUZZ-CP1", site=site, max_current_a=Decimal("32"))
        connector = Connector.objects.create(station=station, connector_id=1)
        ChargingSession.objects.create(
            station=station,
            connector=connector,
            transaction_id="1",
            started_at=now - timedelta(hours=2),
            stopped_at=now - timedelta(hours=1),
            meter_start_wh=Decimal("1000"),
            meter_stop_wh=Decimal("9000"),
        )
        MeterReading.objects.create(
            station=station, connector_no=1, sampled_at=now - timedelta(minutes=10), energy_wh=1234.5
        )
        BalancingRun.objects.create(
            site=site, reason="fuzz", started_at=now - timedelta(minutes=5), inputs_digest="", problem={}
        )
        SiteLimitSchedule.objects.create(
            site=site, name="Peak", weekdays="01234", start_time="16:00", end_time="21:00", limit_kw=Decimal("12")
        )
        SiteMeterReading.objects.create(
            site=site,
            measured_at=now - timedelta(minutes=3),
            source=SiteMeterReading.Source.API,
            current_a=[10, 11, 12],
        )
        month = (now.replace(day=1) - timedelta(days=1)).date()
        savings_report_generate(year=month.year, month=month.month, reason="request")
    yield raw
    with django_db_blocker.unblock(), tenant_context(tenant):
        # The run's report requests stored new versions too: later tests expect the reports they made.
        SavingsReport.objects.exclude(pk__in=reports_before).delete()
        Tariff.objects.exclude(pk__in=before[Tariff]).delete()
        LimitOverride.objects.exclude(pk__in=before[LimitOverride]).delete()
        ChargingSession.objects.filter(station=station).delete()
        MeterReading.objects.filter(station=station).delete()
        station.delete()
        ChargingStation.objects.exclude(pk__in=before[ChargingStation]).delete()
        with schema_context("public"):
            ChargePointIdentity.objects.exclude(pk__in=identities_before).delete()
        added = Circuit.objects.exclude(pk__in=before[Circuit])
        while added.filter(children__isnull=True).delete()[0]:  # leaves first: a parent is protected
            pass
        Circuit.objects.filter(site=site, parent__isnull=False).delete()
        site.limit_schedules.all().delete()
        site.delete()
        Site.objects.exclude(pk__in=before[Site]).delete()
        ApiToken.objects.filter(user=user).delete()
        user.delete()


def test_the_schema_tells_the_truth_under_every_check(web_server, admin_token) -> None:
    base = f"http://127.0.0.1:{web_server}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(CONFIG),
            "run",
            f"{base}/api/schema/?format=json",
            "--url",
            base,
            "-H",
            f"Host: {ALPHA.domain}",
            "-H",
            f"Authorization: Bearer {admin_token}",
            # No --checks: all of them run, and the config file can turn one off for one operation.
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--generation-deterministic",
            "--request-timeout",
            "30",
            # Under the API's per-user rate (1200/minute by default), so that no operation is left
            # answering only 429.
            "--rate-limit",
            "1000/m",
            "--phases",
            "examples,coverage,fuzzing,stateful",
        ],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    report = result.stdout[-12000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert "✅ Fuzzing" in result.stdout
    assert "✅ Stateful" in result.stdout
    operations = int(re.search(r"Operations:\s+(\d+) selected", result.stdout).group(1))
    assert operations >= 25  # every endpoint of the schema was exercised
    assert f"{operations} passed" in result.stdout
