"""Micro-benchmark of the 5-minute billing rollup, on the database the scale benchmark kept.

Run:  .venv/bin/python bench/scale_bench.py --only rollup --keep-db     # once: the history (~4 min)
      .venv/bin/python bench/rollup_bench.py [--repeats 10] [--profile] [--explain]

Works in the scale benchmark's database (the configured database's name and ``_scalebench``)
and its organisation ``scale``: the 20-charger site ``s20``, every charger in an open session,
weeks of readings and pushes behind them. Its readings are first brought up to 5 minutes ago
through the ingest (``telemetry_apply``: each charger's last reading continued, 10 s apart) and
rolled up (not timed); then the last 5 minutes (20 chargers x 30 instants) are sent and
``intervals_roll_up`` is timed, ``--repeats`` times (the same instants sent again each time,
which marks the same intervals and sessions again, as in the scale benchmark).

Prints each run's milliseconds and statements (``SET search_path`` included) and the median;
``--profile`` a cProfile of one more run (by cumulative time), ``--explain`` the statements of
one more run by time and EXPLAIN (ANALYZE, BUFFERS) of the slowest reads.
"""

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
BASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/evplatform")
DB_NAME = f"{urlsplit(BASE_URL).path.strip('/') or 'evplatform'}_scalebench"
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "evplatform.settings.local",
        "DATABASE_URL": urlunsplit(urlsplit(BASE_URL)._replace(path=f"/{DB_NAME}")),
        "DEBUG": "False",
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
    }
)
STEP_S = 10
NEW_S = 300  # 5 minutes of new readings
SITE = "s20"


class StatementCount:
    """``connection.execute_wrapper`` counting statements (and keeping their SQL and ms if asked)."""

    def __init__(self, keep: bool = False) -> None:
        self.count = 0
        self.keep = keep
        self.statements: list[tuple[float, str, Any]] = []

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.count += 1
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            if self.keep:
                self.statements.append(((time.perf_counter() - began) * 1000, sql, params))


def last_readings() -> dict[int, tuple[datetime, float, float, float, int | None]]:
    """Each charger of the site: its last reading (time, Wh, W, A per phase, session)."""
    from django.db import connection

    from chargepoint.models import ChargingStation

    stations = list(ChargingStation.objects.filter(site__slug=SITE).values_list("pk", flat=True))
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT s.id, r.sampled_at, r.energy_wh, r.power_w, r.current_l1_a, r.session_id
            FROM unnest(%s::bigint[]) AS s(id)
            CROSS JOIN LATERAL (
                SELECT * FROM chargepoint_meterreading m WHERE m.station_id = s.id AND m.connector_no = 1
                  AND m.sampled_at > now() - interval '30 days'
                ORDER BY m.sampled_at DESC LIMIT 1
            ) r
            """,
            [stations],
        )
        return {row[0]: tuple(row[1:]) for row in cursor.fetchall()}


def sample(stamp: str, measurand: str, value: object, unit: str, phase: str = "") -> dict[str, str]:
    return {
        "at": stamp,
        "measurand": measurand,
        "phase": phase,
        "location": "Outlet",
        "context": "Sample.Periodic",
        "value": str(value),
        "unit": unit,
    }


def events_at(t: datetime, last: dict[int, tuple[Any, ...]], chargers: dict[int, tuple[str, str]]) -> list[dict]:
    """One MeterValues event per charger at ``t``: its register grown at its power since its last reading."""
    events = []
    for pk, (at, wh, w, a, _) in last.items():
        cp, tx = chargers[pk]
        stamp = t.isoformat()
        energy = wh + w * (t - at).total_seconds() / 3600
        samples = [
            sample(stamp, "Energy.Active.Import.Register", f"{energy:.1f}", "Wh"),
            sample(stamp, "Power.Active.Import", w, "W"),
            *(sample(stamp, "Current.Import", a, "A", phase) for phase in ("L1", "L2", "L3")),
        ]
        events.append(
            {"type": "meter", "cp": cp, "ts": stamp, "connector": 1, "transaction_id": tx, "samples": samples}
        )
    return events


def ingest(lo: datetime, hi: datetime, last: dict[int, tuple[Any, ...]], chargers: dict[int, tuple[str, str]]) -> int:
    from chargepoint.telemetry import telemetry_apply

    sent = 0
    t = lo
    while t < hi:
        telemetry_apply(events=events_at(t, last, chargers))
        sent += len(last)
        t += timedelta(seconds=STEP_S)
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="cProfile one more run")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE the slowest reads of one more run")
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection, transaction
    from django_tenants.utils import tenant_context

    from billing.interval_rollup import intervals_roll_up
    from chargepoint.models import ChargingSession
    from tenants.models import Tenant

    tenant = Tenant.objects.get(slug="scale")
    with tenant_context(tenant):
        last = last_readings()
        open_sessions = {
            s.station_id: s
            for s in ChargingSession.objects.filter(station_id__in=list(last), stopped_at__isnull=True).select_related(
                "station"
            )
        }
        chargers = {pk: (s.station.charge_point_id, s.transaction_id) for pk, s in open_sessions.items()}
        last = {pk: row for pk, row in last.items() if pk in chargers}
        oldest = min(s.started_at for s in open_sessions.values())
        now = datetime.fromtimestamp(time.time() // STEP_S * STEP_S, UTC)
        lo = now - timedelta(seconds=NEW_S - STEP_S)
        latest = max(row[0] for row in last.values())
        if latest + timedelta(seconds=STEP_S) < lo:
            began = time.perf_counter()
            sent = ingest(latest + timedelta(seconds=STEP_S), lo, last, chargers)
            print(f"caught up: {sent:,} readings through telemetry_apply in {time.perf_counter() - began:.1f} s")
        began = time.perf_counter()
        outcome = intervals_roll_up()
        print(f"rollup of what was pending (not timed): {outcome.marks} marks in {time.perf_counter() - began:.1f} s")
        print(
            f"{len(chargers)} chargers of {SITE}, open sessions {(now - oldest).total_seconds() / 3600:.1f} h old; "
            f"load average {os.getloadavg()[0]:.1f}"
        )

        def one(counter: StatementCount) -> tuple[float, Any]:
            ingest(lo, now + timedelta(seconds=STEP_S), last, chargers)
            with connection.execute_wrapper(counter):
                began = time.perf_counter()
                outcome = intervals_roll_up()
                return (time.perf_counter() - began) * 1000, outcome

        timings = []
        for _ in range(args.repeats):
            counter = StatementCount()
            ms, outcome = one(counter)
            timings.append(ms)
            print(
                f"  {ms:7.1f} ms  {counter.count:4d} statements  {outcome.marks} marks, "
                f"{outcome.stations} stations, {outcome.sessions} sessions, {outcome.intervals} intervals"
            )
        print(
            f"rollup, {len(chargers)} chargers x {NEW_S // STEP_S} instants: "
            f"median {statistics.median(timings):.1f} ms, min {min(timings):.1f} ms, max {max(timings):.1f} ms "
            f"({args.repeats} runs)"
        )

        if args.profile:
            profiler = cProfile.Profile()
            ingest(lo, now + timedelta(seconds=STEP_S), last, chargers)
            profiler.enable()
            intervals_roll_up()
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(os.environ.get("PROFILE_SORT", "cumulative")).print_stats(30)
            print(out.getvalue())

        if args.explain:
            counter = StatementCount(keep=True)
            one(counter)
            slowest = sorted(counter.statements, key=lambda s: -s[0])
            print("statements of one run, slowest first:")
            for ms, sql, _ in slowest[:12]:
                print(f"  {ms:6.1f} ms  {' '.join(sql.split())[:150]}")
            with transaction.atomic(), connection.cursor() as cursor:
                for ms, sql, params in slowest[:6]:
                    if not sql.lstrip().upper().startswith("SELECT") or "FOR UPDATE" in sql:
                        continue
                    cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                    print(f"\n-- {ms:.1f} ms: {' '.join(sql.split())[:150]}")
                    print("\n".join(row[0] for row in cursor.fetchall()))
                transaction.set_rollback(True)


if __name__ == "__main__":
    main()
