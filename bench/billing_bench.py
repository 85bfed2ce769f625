"""Benchmark billing: rollup throughput, the monthly report of a large tenant, a year of what-if.

Run:  .venv/bin/python bench/billing_bench.py [--sites 50] [--chargers 20] [--rollup-chargers 20]
      [--rollup-hours 48] [--whatif-chargers 50]

Uses its own database (the configured database's name and ``_bench``, ``evplatform_bench`` by
default, on the same PostgreSQL server, created and migrated here, never the dev data) and a
tenant ``billbench`` that it rebuilds each run.

1. Rollup: ``--rollup-chargers`` chargers with 1-minute register readings for ``--rollup-hours``
   hours are stored as the ingest stores them, one row per instant with the rollup's pending
   marks (not timed), then ``intervals_roll_up`` is timed: readings per second; then five runs
   of what the beat does every 5 minutes (5 minutes of new readings on top of that history).
2. Report: ``--sites`` sites x ``--chargers`` chargers with a month (October 2026) of interval
   rollups as 1-minute readings would give them (per station and per site, COPYed in, not
   timed) and about 1.5 sessions per charger and day with their draw estimates; then
   ``savings_report_generate`` (figures, CSV, XLSX and PDF, stored) is timed. Target < 10 s.
   Then as the month goes by: the hourly task's simulation checkpoints moved to Oct 30 and to
   Oct 31 (the first from nothing, the second one day on) are timed, and the report again, now
   resuming each site's simulated cost-aware month there (its totals must equal the first's).
3. What-if: a year of sessions of one ``--whatif-chargers`` site (a workplace: most chargers
   used every weekday, some at weekends) replayed through the engine under a B-19 style tariff.
   Target < 30 s.
"""

import argparse
import io
import json
import os
import random
import sys
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evplatform.settings.local")
BASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/evplatform")
BENCH_DATABASE = f"{urlsplit(BASE_URL).path.strip('/') or 'evplatform'}_bench"
os.environ["DATABASE_URL"] = urlunsplit(urlsplit(BASE_URL)._replace(path=f"/{BENCH_DATABASE}"))

ROOT = Path(__file__).resolve().parent.parent
B19 = ROOT / "tests" / "billing" / "fixtures" / "pge_b19_secondary.json"
TZ_NAME = "America/Los_Angeles"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sites", type=int, default=50)
    parser.add_argument("--chargers", type=int, default=20)
    parser.add_argument("--rollup-chargers", type=int, default=20)
    parser.add_argument("--rollup-hours", type=int, default=48)
    parser.add_argument("--whatif-chargers", type=int, default=50)
    parser.add_argument("--skip", choices=["rollup", "report", "whatif"], action="append", default=[])
    args = parser.parse_args()

    from evplatform.bootstrap import ensure_database

    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command
    from django_tenants.utils import tenant_context

    from tenants.models import Tenant
    from tenants.services import tenant_create

    print(f"preparing database {BENCH_DATABASE} ...", flush=True)
    call_command("migrate_schemas", interactive=False, verbosity=0)
    old = Tenant.objects.filter(slug="billbench").first()
    if old is not None:
        old.delete(force_drop=True)
    tenant = tenant_create(
        slug="billbench",
        name="Billing bench",
        domain="billbench.localhost",
        admin_email="bench@billbench.localhost",
        admin_password="bench-admin-pass-2026",  # noqa: S106 - a throwaway tenant in the bench database
    ).obj
    with tenant_context(tenant):
        if "rollup" not in args.skip:
            bench_rollup(args.rollup_chargers, args.rollup_hours)
        if "report" not in args.skip:
            bench_report(args.sites, args.chargers, tenant.schema_name)
    if "whatif" not in args.skip:
        bench_whatif(args.whatif_chargers)


def bench_rollup(chargers: int, hours: int) -> None:
    from balancing.models import Site
    from billing.interval_rollup import intervals_roll_up
    from billing.models import IntervalEnergy
    from chargepoint.models import ChargingStation, Connector, RollupPending
    from chargepoint.readings import REGISTER, ReadingRows, readings_store

    site = Site.objects.create(slug="rollup", name="Rollup", limit_a=Decimal(400), timezone=TZ_NAME)
    start = datetime(2026, 10, 5, 7, tzinfo=UTC)
    rng = random.Random(1)  # noqa: S311 - reproducible synthetic data
    stations = []
    registers = []
    for n in range(chargers):
        station = ChargingStation.objects.create(
            charge_point_id=f"RB-{n:04d}", site=site, max_current_a=Decimal(32), phases=3
        )
        Connector.objects.create(station=station, connector_id=1)
        stations.append(station)
        registers.append(float(rng.randint(0, 10**6)))

    def store(first_minute: int, minutes: int) -> None:
        """One-minute register readings of every charger, stored as the ingest stores them (with marks)."""
        batch = ReadingRows()
        for n, station in enumerate(stations):
            for minute in range(first_minute, first_minute + minutes):
                registers[n] += rng.choice((0, 0, 60, 110, 180))
                batch.add(
                    station_id=station.pk,
                    connector_no=1,
                    at=start + timedelta(minutes=minute),
                    session_id=None,
                    measurand=REGISTER,
                    phase="",
                    location="",
                    context="",
                    unit="Wh",
                    value=registers[n],
                )
        readings_store(batch)

    store(0, hours * 60)
    readings = chargers * hours * 60
    began = time.perf_counter()
    outcome = intervals_roll_up()
    seconds = time.perf_counter() - began
    rows = IntervalEnergy.objects.filter(site=site).count()
    print(
        f"rollup: {readings:,} one-minute register readings of {chargers} chargers in {seconds:.2f} s "
        f"= {readings / seconds:,.0f} readings/s ({outcome.marks:,} pending marks, {rows:,} interval rows written)"
    )
    # What the beat does every 5 minutes: the new readings on top of the history just rolled up
    # (its statistics gathered first, as autovacuum would have done over those two days).
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE chargepoint_meterreading")
    timings = []
    for run in range(5):
        store(hours * 60 + 5 * run, 5)
        began = time.perf_counter()
        outcome = intervals_roll_up()
        timings.append(time.perf_counter() - began)
    print(
        f"rollup, every 5 minutes after that: {chargers * 5} new readings ({outcome.marks} marks, "
        f"{RollupPending.objects.count()} left) in "
        f"{1000 * min(timings):.0f}-{1000 * max(timings):.0f} ms ({hours} h of history before them)"
    )


def bench_report(sites: int, chargers: int, schema: str) -> None:
    from django.db import connection

    from balancing.models import Site
    from billing.intervals import spread_energy
    from billing.models import SessionDraw
    from billing.savings_reports import savings_report_generate
    from billing.tariff_versions import tariff_import
    from billing.tariffs import month_bounds
    from chargepoint.models import ChargingSession, ChargingStation, Connector

    print(f"report: building {sites} sites x {chargers} chargers with October 2026 rollups ...", flush=True)
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(TZ_NAME)
    month_start, month_end = month_bounds(2026, 10, tz)
    record = json.loads(B19.read_text())
    rng = random.Random(2)  # noqa: S311 - reproducible synthetic data
    buffer = io.StringIO()
    sessions_total = 0
    now = datetime.now(tz=UTC).isoformat()
    for s in range(sites):
        site = Site.objects.create(
            slug=f"site-{s:02d}", name=f"Site {s:02d}", limit_a=Decimal(250), timezone=TZ_NAME, voltage_v=Decimal(230)
        )
        tariff_import(site=site, record=record, valid_from=date(2026, 1, 1))
        site_energy: dict[datetime, Decimal] = {}
        for c in range(chargers):
            station = ChargingStation.objects.create(
                charge_point_id=f"S{s:02d}-C{c:02d}", site=site, max_current_a=Decimal(16), phases=3
            )
            connector = Connector.objects.create(station=station, connector_id=1)
            station_energy: dict[datetime, Decimal] = {}
            sessions = []
            day = datetime(2026, 10, 1, tzinfo=tz)
            tx = 0
            while day.month == 10:
                for first in (True, False):
                    if not first and rng.random() > 0.5:
                        continue
                    hour = rng.uniform(7, 10) if first else rng.uniform(12, 17)
                    arrive = (day + timedelta(hours=hour)).astimezone(UTC)
                    energy = Decimal(rng.randint(5, 30))
                    managed_kw = Decimal(rng.choice(("3.7", "5.5", "7.4")))
                    hours = energy / managed_kw
                    stop = arrive + timedelta(hours=float(hours) + rng.uniform(0.2, 2))
                    spread_energy(station_energy, arrive, arrive + timedelta(hours=float(hours)), energy)
                    tx += 1
                    sessions.append(
                        ChargingSession(
                            station=station,
                            connector=connector,
                            transaction_id=str(tx),
                            started_at=arrive,
                            stopped_at=stop,
                            meter_start_wh=Decimal(0),
                            meter_stop_wh=energy * 1000,
                            energy_kwh=energy,
                            ev_max_current_a=Decimal(rng.choice((16, 32))) if rng.random() < 0.3 else None,
                        )
                    )
                day = (day + timedelta(days=1, hours=3)).replace(hour=0)
            created = ChargingSession.objects.bulk_create(sessions, batch_size=2000)
            SessionDraw.objects.bulk_create(
                [
                    SessionDraw(session=sess, observed_max_kw=Decimal(rng.choice(("7.4", "11.0"))))
                    for sess in created
                    if rng.random() < 0.6
                ]
            )
            sessions_total += len(sessions)
            for at, kwh in station_energy.items():
                if month_start <= at < month_end:
                    buffer.write(f"{site.pk}\t{station.pk}\t{at.isoformat()}\t15\t{kwh:.6f}\t0\t{now}\n")
                    site_energy[at] = site_energy.get(at, Decimal(0)) + kwh
        for at, kwh in site_energy.items():
            buffer.write(f"{site.pk}\t\\N\t{at.isoformat()}\t15\t{kwh:.6f}\t0\t{now}\n")
    # rows where energy was drawn, as the rollup of a month of 1-minute readings writes them
    buffer.seek(0)
    with connection.cursor() as cursor:
        with cursor.cursor.copy(
            f'COPY "{schema}".billing_intervalenergy (site_id, station_id, start, minutes, energy_kwh, resets, '
            "updated_at) FROM STDIN"
        ) as copy:
            while chunk := buffer.read(1 << 20):
                copy.write(chunk)
        # as autovacuum would have done over a month of rollups (sets hint bits, statistics)
        for table in ("billing_intervalenergy", "chargepoint_chargingsession", "billing_sessiondraw"):
            cursor.execute(f'VACUUM ANALYZE "{schema}".{table}')
        cursor.execute(f'SELECT count(*) FROM "{schema}".billing_intervalenergy')  # noqa: S608 - our schema
        rows = cursor.fetchone()[0]
    print(f"report: {rows:,} interval rows, {sessions_total:,} sessions; generating ...", flush=True)
    timings = []
    for _ in range(2):
        began = time.perf_counter()
        report = savings_report_generate(year=2026, month=10, reason="request", requested_by="bench")
        timings.append(time.perf_counter() - began)
    sizes = ", ".join(f"{f.format} {f.size_bytes / 1024:.0f} KiB" for f in report.files.all())
    print(
        f"report: {sites} sites x {chargers} chargers, one month, from rollups: {timings[0]:.2f} s "
        f"(regenerated as version {report.version}: {timings[1]:.2f} s; figures, CSV, XLSX and PDF computed "
        f"and stored: {sizes}); savings total ${Decimal(report.data['total']['savings']['total']):,.2f}"
    )
    # As the month goes by: the hourly task keeps each site's simulated cost-aware month replayed up
    # to the last local midnight; the report at the month's close resumes from there.
    from billing.reports.checkpoints import simulation_checkpoints_advance

    steps = []
    for when in (datetime(2026, 10, 30, 1, tzinfo=tz), datetime(2026, 10, 31, 1, tzinfo=tz)):
        began = time.perf_counter()
        moved = simulation_checkpoints_advance(now=when)
        steps.append((when, moved, time.perf_counter() - began))
    for when, moved, seconds in steps:
        print(f"report: checkpoints moved to {when:%b %d} 00:00 at {moved} sites: {seconds:.2f} s", flush=True)
    began = time.perf_counter()
    resumed = savings_report_generate(year=2026, month=10, reason="request", requested_by="bench")
    seconds = time.perf_counter() - began
    same = resumed.data["total"] == report.data["total"]
    print(
        f"report: with the checkpoints (the month's last day replayed): {seconds:.2f} s; "
        f"totals {'the same as' if same else 'DIFFERENT from'} without",
        flush=True,
    )


def bench_whatif(chargers: int) -> None:
    from zoneinfo import ZoneInfo

    from billing.tariffs import tariff_from_urdb
    from billing.whatif import PlannedSession, what_if

    tz = ZoneInfo(TZ_NAME)
    rng = random.Random(3)  # noqa: S311 - reproducible synthetic data
    sessions = []
    day = datetime(2025, 1, 1, tzinfo=tz)
    row = 2
    while day.year == 2025:
        weekend = day.weekday() >= 5
        for c in range(chargers):
            if rng.random() > (0.25 if weekend else 0.9):
                continue
            arrive = day + timedelta(hours=rng.uniform(7, 10))
            stay = timedelta(hours=rng.uniform(3, 9))
            sessions.append(
                PlannedSession(
                    row, f"CP-{c:02d}", arrive, arrive + stay, rng.uniform(5, 35), rng.choice((7.2, 7.2, 11.5, 6.6))
                )
            )
            row += 1
        day = (day + timedelta(days=1, hours=3)).replace(hour=0)
    spec = tariff_from_urdb(json.loads(B19.read_text()))
    limit_kw = chargers * 7.2 * 0.4
    began = time.perf_counter()
    result = what_if(sessions, limit_kw=limit_kw, spec=spec, tz=tz)
    seconds = time.perf_counter() - began
    print(
        f"what-if: {len(sessions):,} sessions over 2025 at a {chargers}-charger site, limit {limit_kw:.0f} kW, "
        f"15-min steps: {seconds:.2f} s ({result['assumptions']['engine_solves']:,} engine solves); "
        f"peak {result['unmanaged_peak_kw']} -> {result['managed_peak_kw']} kW, "
        f"delivered {result['energy_delivered_kwh']:,.0f} of {result['energy_requested_kwh']:,.0f} kWh, "
        f"savings ${result['savings_total']:,.2f}"
    )


if __name__ == "__main__":
    main()
