"""Benchmark: how many balancing-run rows (and bytes) a quiet site stores in an hour of sweeps.

Run:  .venv/bin/python bench/runs_bench.py [--minutes 60]

Uses its own database (the configured one's name with ``_bench`` appended, on the same
PostgreSQL server, created and migrated here) and a tenant ``bench``. Two copies of the demo
garage (63 A three-phase grid connection, 20 kW cap, four 16 A chargers on one panel), each
balanced by ``site_balance_run`` once a simulated minute, as the beat sweep does, with an
in-process charger that accepts every profile:

- ``idle``: four chargers online, no car: after the first run nothing changes at all;
- ``parked``: four cars plugged in that have finished (SuspendedEV, no draw): their
  TxProfiles are renewed every ``BALANCING_TX_PROFILE_VALIDITY_S - BALANCING_TX_RENEW_BEFORE_S``
  (about 10 minutes), in between nothing changes.

Printed per site: rows stored during the hour (after a first run that sends the fail-safe
defaults), the runs they stand for, and their size (``pg_column_size`` of the rows, pushes
counted separately) and, once runs are counted as repeats, how many of those updates were HOT.

``--prune-days 150`` then times the daily prune (``balancing.retention``) on a site with that
many days of one-minute runs (small rows, an accepted push every tenth run): a dry run, then
the prune of everything older than ``RETENTION_RUNS_DAYS``.
"""

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evplatform.settings.local")
BASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/evplatform")
BASE_PARTS = urlsplit(BASE_URL)
BENCH_DB = f"{BASE_PARTS.path.lstrip('/') or 'evplatform'}_bench"
os.environ["DATABASE_URL"] = urlunsplit(BASE_PARTS._replace(path=f"/{BENCH_DB}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60, help="simulated minutes of sweeps (one run each)")
    parser.add_argument("--prune-days", type=int, default=0, help="then time the prune of this many days of runs")
    args = parser.parse_args()

    from evplatform.bootstrap import ensure_database

    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone
    from django_tenants.utils import tenant_context

    from balancing.models import BalancingRun, Circuit, ProfilePush, Site, StationFailsafe
    from balancing.push import PushAnswer, PushRequest
    from balancing.runs import site_balance_run
    from chargepoint.models import ChargingSession, ChargingStation, Connector
    from tenants.services import tenant_create

    print(f"preparing database {BENCH_DB} ...", flush=True)
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

    def garage(slug: str, *, parked: bool, start: datetime) -> Site:
        site = Site.objects.filter(slug=slug).first()
        if site is not None:  # a re-run: start from a clean site
            BalancingRun.objects.filter(site=site).delete()
            ChargingSession.objects.filter(station__site=site).delete()
            StationFailsafe.objects.filter(station__site=site).delete()
            Connector.objects.filter(station__site=site).delete()
            ChargingStation.objects.filter(site=site).delete()
            Circuit.objects.filter(site=site).delete()
            site.delete()
        site = Site.objects.create(
            slug=slug, name=slug, limit_a=Decimal("63"), demand_cap_kw=Decimal("20"), timezone="UTC"
        )
        panel = Circuit.objects.create(site=site, name="Panel A", kind="panel", limit_a=Decimal("63"))
        for n in range(1, 5):
            station = ChargingStation.objects.create(
                charge_point_id=f"BENCH-{slug.upper()}-{n}",
                site=site,
                circuit=panel,
                max_current_a=Decimal("16"),
                ocpp_version="1.6",
                is_online=True,
                last_seen_at=start,
            )
            connector = Connector.objects.create(
                station=station, connector_id=1, status="SuspendedEV" if parked else "Available"
            )
            if parked:
                ChargingSession.objects.create(
                    station=station,
                    connector=connector,
                    transaction_id=f"{slug}-{n}",
                    started_at=start - timedelta(hours=2),
                    meter_start_wh=Decimal("0"),
                    energy_kwh=Decimal("30"),
                )
        return site

    def stored(site: Site) -> tuple[int, int, int, int]:
        """Rows and bytes of the site's runs, rows and bytes of their pushes."""
        runs, pushes = BalancingRun._meta.db_table, ProfilePush._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT count(*), coalesce(sum(pg_column_size(r.*)), 0) FROM {runs} r WHERE site_id = %s",  # noqa: S608
                [site.pk],
            )
            run_rows, run_bytes = cursor.fetchone()
            cursor.execute(
                f"SELECT count(*), coalesce(sum(pg_column_size(p.*)), 0) FROM {pushes} p "  # noqa: S608
                f"JOIN {runs} r ON r.id = p.run_id WHERE r.site_id = %s",
                [site.pk],
            )
            push_rows, push_bytes = cursor.fetchone()
        return run_rows, run_bytes, push_rows, push_bytes

    def updates_of_runs() -> tuple[int, int]:
        """Updates of the runs table so far, and how many were HOT (PostgreSQL's statistics)."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_force_next_flush()")
            cursor.execute(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relid = %s::regclass",
                [BalancingRun._meta.db_table],
            )
            updates, hot = cursor.fetchone()
        return updates, hot

    repeats_counted = hasattr(BalancingRun, "repeats")
    start = timezone.now().replace(microsecond=0)
    print(f"{args.minutes} simulated minutes of sweeps (one run a minute) after a first run:")
    with tenant_context(tenant):
        updates_before = updates_of_runs()
        for slug, parked in (("idle", False), ("parked", True)):
            site = garage(slug, parked=parked, start=start)
            site_balance_run(site=site, reason="first", pusher=AcceptAll(), now=start)
            before = stored(site)
            for minute in range(1, args.minutes + 1):
                site_balance_run(site=site, reason="sweep", pusher=AcceptAll(), now=start + timedelta(minutes=minute))
            after = stored(site)
            rows = after[0] - before[0]
            run_bytes = after[1] - before[1]
            pushes = after[2] - before[2]
            runs_stood_for = rows
            if repeats_counted:
                total = sum(BalancingRun.objects.filter(site=site).values_list("repeats", flat=True))
                runs_stood_for = rows + total
            print(
                f"  {slug:<7} rows stored {rows:>3} for {runs_stood_for} runs; "
                f"{run_bytes:,} bytes of runs ({run_bytes / max(rows, 1):,.0f} a row), "
                f"{pushes} pushes ({after[3] - before[3]:,} bytes)"
            )
        if repeats_counted:
            updates, hot = (after - before for after, before in zip(updates_of_runs(), updates_before, strict=True))
            print(f"  repeats counted by {updates} updates of the runs table, {hot} of them HOT (no index entries)")
    if args.prune_days:
        prune_bench(tenant, args.prune_days)


def prune_bench(tenant: object, days: int) -> None:
    """Time ``history_prune`` on ``days`` of one-minute runs of one site."""
    import time

    from django.conf import settings
    from django.db import connection
    from django.utils import timezone
    from django_tenants.utils import tenant_context

    from balancing.models import BalancingRun, ProfilePush, Site
    from balancing.retention import history_prune
    from chargepoint.models import ChargingStation, Connector

    with tenant_context(tenant):
        site = Site.objects.get_or_create(slug="history", defaults={"name": "history", "limit_a": Decimal("63")})[0]
        station = ChargingStation.objects.get_or_create(
            charge_point_id="BENCH-HISTORY-1", defaults={"site": site, "max_current_a": Decimal("16")}
        )[0]
        connector = Connector.objects.get_or_create(station=station, connector_id=1)[0]
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {ProfilePush._meta.db_table} WHERE station_id = %s", [station.pk])  # noqa: S608
            cursor.execute(f"DELETE FROM {BalancingRun._meta.db_table} WHERE site_id = %s", [site.pk])  # noqa: S608
        now = timezone.now()
        runs = BalancingRun.objects.bulk_create(
            (
                BalancingRun(
                    site=site,
                    reason="sweep",
                    started_at=now - timedelta(minutes=i),
                    finished_at=now - timedelta(minutes=i),
                    inputs_digest="0" * 64,
                    problem={"minute": i},
                )
                for i in range(days * 1440)
            ),
            batch_size=5000,
        )
        ProfilePush.objects.bulk_create(
            (
                ProfilePush(
                    run=run,
                    station=station,
                    connector=connector,
                    kind=ProfilePush.Kind.LOWER,
                    new_limit_a=Decimal(10),
                    payload={},
                    status="Accepted",
                    sent_at=run.started_at,
                )
                for run in runs[::10]
            ),
            batch_size=5000,
        )
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {BalancingRun._meta.db_table}")
            cursor.execute(f"ANALYZE {ProfilePush._meta.db_table}")
        print(f"prune of {len(runs):,} runs ({days} days) of one site, {settings.RETENTION_RUNS_DAYS} days kept:")
        for dry_run in (True, False):
            started = time.perf_counter()
            counts = history_prune(now=now, dry_run=dry_run)
            seconds = time.perf_counter() - started
            label = "dry run" if dry_run else "prune"
            print(f"  {label:<8} {counts.runs:,} runs, {counts.pushes:,} pushes: {seconds:.1f} s")


if __name__ == "__main__":
    main()
