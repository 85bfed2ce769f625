"""Benchmark: `balance_site` end to end for one 100-EVSE site (DB load, solve, profiles built).

Run:  .venv/bin/python bench/balance_site_bench.py [--evses 100] [--repeats 20]

Uses its own database (the configured database's name with ``_bench``, ``evplatform_bench``
by default, on the configured PostgreSQL server, created and migrated here) and a tenant
``bench``; the command path is replaced by an in-process charger that accepts every profile,
so what is timed is the platform's own work: reading the site's rows (its chargers' readings
of the last seconds among them), building the problem, solving, checking, planning and
recording pushes.
"""

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evplatform.settings.local")
BASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/evplatform")
# Named after the configured database: checkouts that each set their own never share one.
DB_NAME = f"{urlsplit(BASE_URL).path.strip('/') or 'evplatform'}_bench"
os.environ["DATABASE_URL"] = urlunsplit(urlsplit(BASE_URL)._replace(path=f"/{DB_NAME}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evses", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    from evplatform.bootstrap import ensure_database

    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone
    from django_tenants.utils import tenant_context

    from balancing.models import BalancingRun, Circuit, ConnectorLimit, Site, SiteAlert, StationFailsafe
    from balancing.push import PushAnswer, PushRequest
    from balancing.runs import site_balance_run
    from chargepoint.models import ChargingSession, ChargingStation, Connector, MeterReading
    from chargepoint.partitions import partitions_ensure
    from tenants.services import tenant_create

    print(f"preparing database {DB_NAME} with a {args.evses}-EVSE site ...", flush=True)
    call_command("migrate_schemas", interactive=False, verbosity=0)
    tenant = tenant_create(
        slug="bench",
        name="Bench",
        domain="bench.localhost",
        admin_email="bench@bench.localhost",
        admin_password="bench-admin-pass-2026",  # noqa: S106 - a throwaway tenant in the bench database
    ).obj

    class AcceptAll:
        def send_many(self, requests: Sequence[PushRequest]) -> list[PushAnswer]:
            return [PushAnswer("Accepted") for _ in requests]

    with tenant_context(tenant):
        slug = f"site-{args.evses}"
        site = Site.objects.filter(slug=slug).first()
        if site is None:
            site = Site.objects.create(
                slug=slug, name=f"{args.evses} EVSEs", limit_a=Decimal("400"), demand_cap_kw=Decimal("250")
            )
            now = timezone.now()
            panels = [
                Circuit.objects.create(site=site, name=f"Panel {p}", kind="panel", limit_a=Decimal("160"))
                for p in range(4)
            ]
            rows = [
                Circuit.objects.create(
                    site=site, name=f"Row {p}.{r}", parent=panel, limit_a=Decimal("63"), limit_kw=Decimal("40")
                )
                for p, panel in enumerate(panels)
                for r in range(5)
            ]
            for n in range(args.evses):
                single = n % 3 != 0
                station = ChargingStation.objects.create(
                    charge_point_id=f"BENCH-{args.evses}-{n:05d}",
                    site=site,
                    circuit=rows[n % len(rows)],
                    max_current_a=Decimal("32"),
                    phases=1 if single else 3,
                    wiring=("L1", "L2", "L3")[n % 3] if single else "L1L2L3",
                    ocpp_version="1.6",
                    is_online=True,
                    last_seen_at=now,
                )
                connector = Connector.objects.create(station=station, connector_id=1, status="Charging")
                ChargingSession.objects.create(
                    station=station,
                    connector=connector,
                    transaction_id=str(n),
                    started_at=now - timedelta(hours=1),
                    meter_start_wh=Decimal("0"),
                    energy_needed_kwh=Decimal("30") if n % 2 else None,
                    departure_at=now + timedelta(hours=3 + n % 5) if n % 2 else None,
                )
        # Every invocation starts where the first did: no default confirmed, no alert, and each
        # charger's draw a moment ago, one row per instant as the ingest stores it (so the runs
        # read as many recent readings as a live site has, and none counts against a default).
        stations = ChargingStation.objects.filter(site=site)
        StationFailsafe.objects.filter(station__site=site).delete()
        SiteAlert.objects.filter(site=site).delete()
        MeterReading.objects.filter(station_id__in=stations.values("pk")).delete()
        now = timezone.now()
        partitions_ensure(now, now)
        MeterReading.objects.bulk_create(
            [
                MeterReading(
                    station=station,
                    connector_no=1,
                    sampled_at=now - timedelta(seconds=5),
                    **{f"current_l{p}_a": float(6 + n % 20) for p in range(1, station.phases + 1)},
                )
                for n, station in enumerate(stations.order_by("charge_point_id"))
            ]
        )
        timings = []
        pushes = []
        for i in range(args.repeats):
            ConnectorLimit.objects.filter(connector__station__site=site).delete()  # every run pushes to every EVSE
            started = time.perf_counter()
            run = site_balance_run(site=site, reason="bench", pusher=AcceptAll(), now=timezone.now())
            timings.append((time.perf_counter() - started) * 1000)
            pushes.append(run.pushes.count())
            if i == 0:
                solve_ms = run.solve_ms
        BalancingRun.objects.filter(site=site).delete()
    print(f"balance_site end to end, {args.evses} EVSEs, {args.repeats} runs (each pushing to every EVSE):")
    print(f"  median {statistics.median(timings):.1f} ms   p90 {sorted(timings)[int(0.9 * len(timings)) - 1]:.1f} ms")
    print(f"  engine solve (first run) {solve_ms:.1f} ms; profiles per run {statistics.median(pushes):.0f}")


if __name__ == "__main__":
    main()
