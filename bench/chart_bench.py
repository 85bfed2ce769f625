"""Benchmark the portal's site chart: a month of balancing runs of one site, drawn.

Run:  .venv/bin/python bench/chart_bench.py [--sites 10] [--per-minute 1] [--days 31] [--repeat 7]

Uses its own database (``evplatform_chart_bench`` on the configured PostgreSQL server, created
and migrated here, never the dev data) and a tenant ``chartbench`` that it rebuilds each run.
``--sites`` three-phase sites get ``--per-minute`` balancing runs a minute each for ``--days``
days up to now (a sweep every minute; not timed), each with a problem and result of a
20-charger site, as the runs store them, written in time order as they would be (so one site's
runs are spread over the whole table, not packed together). Then the chart JSON of one site
for each range (``/sites/<slug>/chart.json``, the kW chart and the per-phase one) is requested
through the portal view ``--repeat`` times: median time and size. Target for the month: under
300 ms and under 1 MB. Last, the month's kW query is run under EXPLAIN (ANALYZE, BUFFERS) and its
scans and buffers printed: an index-only scan of ``run_site_chart`` reads no heap page per run.
"""

import argparse
import json
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from balancing.models import Site

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evplatform.settings.local")
BASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/evplatform")
os.environ["DATABASE_URL"] = urlunsplit(urlsplit(BASE_URL)._replace(path="/evplatform_chart_bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--per-minute", type=int, default=1)
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    from evplatform.bootstrap import ensure_database

    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command
    from django_tenants.utils import tenant_context

    from tenants.models import Tenant
    from tenants.services import tenant_create

    print("preparing database evplatform_chart_bench ...", flush=True)
    call_command("migrate_schemas", interactive=False, verbosity=0)
    old = Tenant.objects.filter(slug="chartbench").first()
    if old is not None:
        old.delete(force_drop=True)
    tenant = tenant_create(
        slug="chartbench",
        name="Chart bench",
        domain="chartbench.localhost",
        admin_email="bench@chartbench.localhost",
        admin_password="bench-admin-pass-2026",  # noqa: S106 - a throwaway tenant in the bench database
    ).obj
    with tenant_context(tenant):
        site = runs_store(args.sites, args.per_minute, args.days)
        chart_time(site, args.repeat)


def runs_store(sites: int, per_minute: int, days: int) -> "Site":
    from django.db import connection
    from django.utils import timezone

    from balancing.models import BalancingRun, Site

    template = Site.objects.create(slug="template", name="Template", limit_a=Decimal(63))
    measured = [
        Site.objects.create(slug=f"site-{n}", name=f"Site {n}", limit_a=Decimal(63), demand_cap_kw=Decimal(40))
        for n in range(sites)
    ]
    rng = random.Random(1)  # noqa: S311 - reproducible synthetic data
    evses = [{"id": f"CP-{n:02d}/1", "phases": [1, 2, 3], "min_a": 6, "max_a": 32, "priority": 1} for n in range(20)]
    problem = {"nodes": [{"id": "site", "limit_a": [63, 63, 63], "limit_kw": 40}], "evses": evses}
    now = timezone.now()
    count = days * 24 * 60 * per_minute
    step = timedelta(minutes=1) / per_minute
    print(f"storing {count:,} runs a site over {days} days for {sites} sites ...", flush=True)
    batch = []
    for n in range(count):
        drawn = rng.uniform(5, 38)
        batch.append(
            BalancingRun(
                site=template,
                reason="sweep",
                started_at=now - n * step,
                inputs_digest=f"{n:064x}",
                problem=problem,
                result={"allocations_a": {e["id"]: rng.randint(6, 32) for e in evses}, "warnings": []},
                limits={"bound_kw": "demand_cap"},
                measured_kw=drawn,
                allocated_kw=drawn + rng.uniform(0, 3),
                limit_kw=40.0,
                unmanaged_kw=drawn + rng.uniform(0, 20),
                phase_measured_a=[rng.uniform(5, 60) for _ in range(3)],
                phase_allocated_a=[rng.uniform(5, 63) for _ in range(3)],
                phase_limit_a=[63.0, 63.0, 63.0],
            )
        )
        if len(batch) == 5000:
            BalancingRun.objects.bulk_create(batch)
            batch = []
    BalancingRun.objects.bulk_create(batch)
    # Every site gets the template's runs, written interleaved in time order as sweeps write them.
    columns = [str(f.column) for f in BalancingRun._meta.concrete_fields if f.column not in ("id", "site_id")]
    names = ", ".join(columns)
    picked = ", ".join(f"r.{c}" for c in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO balancing_balancingrun (site_id, {names}) "  # noqa: S608 - the model's own columns
            f"SELECT s.id, {picked} FROM balancing_balancingrun r CROSS JOIN balancing_site s "
            "WHERE r.site_id = %s AND s.id <> %s ORDER BY r.started_at, s.id",
            [template.pk, template.pk],
        )
        BalancingRun.objects.filter(site=template).delete()
        cursor.execute("VACUUM ANALYZE balancing_balancingrun")
    return measured[sites // 2]


def chart_time(site: "Site", repeat: int) -> None:
    from django.test import RequestFactory

    from balancing.views import RANGES, site_chart
    from tenants.accounts.models import Role, User

    user = User.objects.create_user(email="viewer@chartbench.localhost", password="x" * 20, role=Role.SITE_VIEWER)
    factory = RequestFactory()
    print(f"{'range':<8} {'chart':<7} {'median ms':>10} {'min ms':>8} {'bytes':>12} {'rows':>7}")
    for name in RANGES:
        for phases in ("", "1"):
            times = []
            for _ in range(repeat):
                request = factory.get(f"/sites/{site.slug}/chart.json", {"range": name, "phases": phases})
                request.user = user
                began = time.perf_counter()
                response = site_chart(request, site.slug)
                times.append((time.perf_counter() - began) * 1000)
            rows = len(json.loads(response.content)["data"]["values"])
            kind = "phases" if phases else "kW"
            print(
                f"{name:<8} {kind:<7} {statistics.median(times):>10.0f} {min(times):>8.0f} "
                f"{len(response.content):>12,} {rows:>7,}",
                flush=True,
            )

    month_plan(site)


def month_plan(site: "Site") -> None:
    """How PostgreSQL reads the month's kW query: the plan's scan lines and its buffers."""
    from django.db import connection
    from django.utils import timezone

    from balancing.selectors import CHART_COARSE, site_load_series

    statements: list[tuple[str, Any]] = []

    def capture(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append((sql, params))
        return execute(sql, params, many, context)

    since = timezone.now() - timedelta(days=31)
    with connection.execute_wrapper(capture):
        site_load_series(site=site, since=since, step=CHART_COARSE)
    sql, params = next((sql, params) for sql, params in statements if "date_bin" in sql.lower())
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
        plan = [row[0] for row in cursor.fetchall()]
    print("the month's kW query:")
    for line in plan:
        if any(word in line for word in ("Scan", "Heap Fetches", "Buffers", "Execution Time")):
            print(f"  {line.strip()}")


if __name__ == "__main__":
    main()
