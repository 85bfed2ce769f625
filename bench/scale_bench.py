"""Scale benchmark: does the platform's cost grow with the telemetry history it keeps?

Run:  .venv/bin/python bench/scale_bench.py [--json PATH] [--days 7,28] [--runs 20] [--tenants 200]
                                            [--report-sites 50] [--ingest-minutes 60] [--keep-db]
                                            [--only rollup,rebuild,...]

Uses its own database (the configured database's name and ``_scalebench``, e.g.
``evplatform_scalebench``, on the configured PostgreSQL server: created, migrated and dropped at
the end), queue and Redis prefix ``scalebench.`` after the configured one, DEBUG off. Nothing
runs in the background: every measured call is made in this process, pushes go to an
in-process charger that accepts every profile (as in ``bench/balance_site_bench.py``).

The same measurements are taken three times: on an EMPTY database (only the last minutes of
readings that balancing needs), after 1 WEEK and after 4 WEEKS of history. History is what
four weeks of operation leave behind, up to "now": 120 three-phase chargers (a 20- and a
100-charger site, all online with an open session) sending a MeterValues message every 10 s
with 7 values (energy register, power, current L1/L2/L3, offered current, SoC), their daily
sessions, the rollups (interval energy and session draws), a balancing run per site and
minute, and a charging profile per charger in a session every 10 minutes. The last hour of
readings (``--ingest-minutes``) goes through the real ingest (``telemetry_apply``, which also
writes the rollup's pending marks); the rest is COPYed in the same shape (time order, the same
values, three sessions on consecutive time ranges), with the foreign-key triggers off while
loading, then VACUUM ANALYZE as autovacuum would have done, and a CHECKPOINT so the load's
writes do not land in the measurements.

Measured (median and p95 where repeated):

- ``site_balance_run`` of the 20- and the 100-charger site (chargers drawing, fresh
  readings; the booked limits are cleared before each run so every run pushes to every
  charger, as in balance_site_bench). Target at 4 weeks: within 1.2x of empty. The machine is
  shared, so the same runs are also made, interleaved run by run, on a control organisation
  with the same sites and sessions but no history: that ratio is what history costs;
- ``intervals_roll_up`` after 5 minutes of new readings of 20 chargers (30 instants) stored by
  ``telemetry_apply``. Target < 100 ms;
- ``savings_report_generate`` of a second organisation with ``--report-sites`` sites x 20
  chargers (a month of 15-minute rollups where energy was drawn, ~1.5 sessions per charger
  and day with their draws, a B-19 tariff per site); its history grows with the phases by the
  rollups and sessions of the week(s) before the reported month. Target < 10 s. The monthly
  task first rebuilds the month from the raw readings (``intervals_rebuild_month``): that is
  timed for one day of the 20-charger site and scaled to the report's size;
- the readings API (``GET /api/v1/readings/``, a real API token): one charger's page 1, a
  later page through the cursor, the whole organisation's last day page 1. Target < 100 ms;
- the portal's site chart over its longest range (``chart.json?range=month``): time and JSON
  size. Target < 300 ms and < 1 MB;
- storage: bytes per reading row (instant) and per value, indexes included, over the
  partitions of ``chargepoint_meterreading``; a charger-month at 10 s; a balancing run row.
  Target <= 80 bytes per value.

Then, once: ``migrate_schemas`` with nothing to do and one beat sweep (``sweep_all_sites``,
until every site's request is published) with ``--tenants`` organisations of 5 sites. The
first is created by the normal path (timed); the others are copies of its schema (pg_dump of
the schema, renamed, restored; Tenant and Domain rows inserted), which is what a migrated
schema is.

Prints progress lines and a results table; the figures go to ``--json`` (default
``bench/results/scale-<date>.json``). About 12-14 minutes on the 2-core development machine
while other work runs on it (half of it loading the history).
"""

import argparse
import contextlib
import io
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BASE_URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/evplatform")
DB_NAME = f"{urlsplit(BASE_URL).path.strip('/') or 'evplatform'}_scalebench"
DATABASE_URL = urlunsplit(urlsplit(BASE_URL)._replace(path=f"/{DB_NAME}"))
PREFIX = f"{os.environ.get('CELERY_QUEUE_PREFIX', '')}scalebench."
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "evplatform.settings.local",
        "DATABASE_URL": DATABASE_URL,
        "CELERY_QUEUE_PREFIX": PREFIX,
        "CACHE_KEY_PREFIX": PREFIX.rstrip("."),
        "DEBUG": "False",  # no query log, as in production
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
    }
)

B19 = ROOT / "tests" / "billing" / "fixtures" / "pge_b19_secondary.json"
REPORT_TZ = "America/Los_Angeles"
PASSWORD = "scale-bench-pass-2026"  # noqa: S105 - throwaway users of the bench database
STEP_S = 10  # a MeterValues message every 10 s
VALUES_PER_READING = 7
DAY_S = 86400
SLOT_S = 900  # the rollup's 15-minute grid
VOLTAGE = 230
RATING_A = 32
OPEN_SESSION_S = 2 * 3600  # the open sessions started this long before the first phase
ROLLUP_NEW_S = 300  # the rollup measurement: 5 minutes of new readings
ROLLUP_REPEATS = 3
API_REPEATS = 10
CHART_REPEATS = 3
LATER_PAGE = 30
PUSH_EVERY_S = 600  # a charging profile per charger in a session every 10 minutes (renewals)
COPY_COLUMNS = (
    "station_id, sampled_at, connector_no, session_id, context, energy_wh, power_w, "
    "current_l1_a, current_l2_a, current_l3_a, offered_a, soc_pct"
)
BALANCE_SITES = (("s20", 20, Decimal(160), Decimal(80)), ("s100", 100, Decimal(400), Decimal(250)))

started_clock = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - started_clock:6.0f} s] {message}", flush=True)


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def floor_to(epoch: float, step: int) -> int:
    return int(epoch // step * step)


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    began = time.perf_counter()
    out = call()
    return (time.perf_counter() - began) * 1000, out


# -- results ------------------------------------------------------------------------------------


@dataclass
class Measure:
    """One row of the results table: a figure per phase, its target and whether it is met."""

    key: str
    label: str
    unit: str
    target: str = ""
    limit: float | None = None  # absolute target at the last phase (lower is better)
    ratio_limit: float | None = None  # last phase / empty
    values: dict[str, float | None] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    def ratio(self, first: str, last: str) -> float | None:
        a, b = self.values.get(first), self.values.get(last)
        return None if not a or b is None else b / a

    def met(self, first: str, last: str) -> bool | None:
        value = self.values.get(last)
        if value is None:
            return None
        ok = True
        if self.limit is not None:
            ok = ok and value <= self.limit
        if self.ratio_limit is not None:
            ratio = self.ratio(first, last)
            ok = ok and ratio is not None and ratio <= self.ratio_limit
        return ok if (self.limit is not None or self.ratio_limit is not None) else None


class Results:
    def __init__(self, phases: list[str]) -> None:
        self.phases = phases
        self.rows: dict[str, Measure] = {}
        self.once: dict[str, Any] = {}

    def add(self, key: str, label: str, unit: str, **kw: Any) -> Measure:
        if key not in self.rows:
            self.rows[key] = Measure(key, label, unit, **kw)
        return self.rows[key]

    def set(self, key: str, phase: str, value: float | None, **detail: Any) -> None:
        row = self.rows[key]
        row.values[phase] = value
        if detail:
            row.detail[phase] = detail

    def table(self) -> str:
        first, last = self.phases[0], self.phases[-1]
        head = ["measurement", *self.phases, f"{last} / {first}", "target", "met"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.rows.values():
            cells = [f"{row.label} ({row.unit})"]
            for phase in self.phases:
                cells.append(_fmt(row.values.get(phase)))
            ratio = row.ratio(first, last)
            met = row.met(first, last)
            cells += [
                "-" if ratio is None else f"{ratio:.2f}x",
                row.target or "-",
                "-" if met is None else ("yes" if met else "**NO**"),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def once_table(self) -> str:
        lines = ["| measurement | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in self.once.items()]
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


# -- the chargers with history and what they report ---------------------------------------------


@dataclass
class Charger:
    """One charger of a balancing site and its reading at any instant (a pure function of time).

    In a session it draws ``current_a`` on each phase; its daily session runs from ``h0`` to
    ``h1`` seconds after UTC midnight, until ``cut`` (after which only the open session
    counts, from ``open_start`` on). The energy register is ``base_wh`` + ``step_wh`` per
    10-s instant in a session, so every path computes the same float for the same instant.
    """

    n: int
    cp: str
    pk: int
    connector_pk: int
    site_slug: str
    open_pk: int = 0
    open_tx: str = ""
    current_a: int = 0
    power_w: int = 0
    step_wh: float = 0.0
    base_wh: float = 0.0
    h0: int = 0
    h1: int = 0

    @classmethod
    def make(cls, n: int, cp: str, pk: int, connector_pk: int, site_slug: str) -> "Charger":
        current = 6 + n % 20
        power = current * 3 * VOLTAGE
        return cls(
            n=n,
            cp=cp,
            pk=pk,
            connector_pk=connector_pk,
            site_slug=site_slug,
            current_a=current,
            power_w=power,
            step_wh=round(power * STEP_S / 3600, 1),
            base_wh=float(1_000_000 + n * 12_345),
            h0=(6 + (7 * n) % 10) * 3600,
            h1=(6 + (7 * n) % 10 + 3 + n % 6) * 3600,
        )


class Fleet:
    """The 120 chargers with history, their schedule and the sessions made so far."""

    def __init__(self, chargers: list[Charger], origin: int, open_start: int) -> None:
        self.chargers = chargers
        self.origin = origin  # UTC midnight before all history
        self.open_start = open_start
        self.cut = open_start - 3600  # the last daily session ends by then
        self.sessions: dict[tuple[int, int], tuple[int, str]] = {}  # (n, day) -> (pk, transaction id)
        # Stored readings per site: [first, last] instants (None: nothing yet).
        self.stored: dict[str, list[int] | None] = {slug: None for slug, *_ in BALANCE_SITES}

    def of(self, slug: str) -> list[Charger]:
        return [c for c in self.chargers if c.site_slug == slug]

    def window(self, c: Charger, day: int) -> tuple[int, int]:
        """The instants [start, end) of the charger's daily session of ``day`` (empty if none)."""
        start = self.origin + day * DAY_S + c.h0
        end = min(self.origin + day * DAY_S + c.h1, self.cut)
        return start, max(start, end)

    def session_at(self, c: Charger, t: int) -> tuple[int, str, int] | None:
        """(session pk, transaction id, session start) of the session ``t`` is in, or None."""
        if t >= self.open_start:
            return c.open_pk, c.open_tx, self.open_start
        if t >= self.cut:
            return None
        day, second = divmod(t - self.origin, DAY_S)
        if c.h0 <= second < c.h1:
            pk, tx = self.sessions[(c.n, day)]
            return pk, tx, self.origin + day * DAY_S + c.h0
        return None

    def steps(self, c: Charger, t: int) -> int:
        """In-session instants in (origin, t]: the register's count of steps at ``t``."""
        count = 0
        daily_to = min(t, self.cut - STEP_S)
        if daily_to > self.origin:
            days, second = divmod(daily_to - self.origin, DAY_S)
            count += days * ((c.h1 - c.h0) // STEP_S)
            if second >= c.h0:
                count += (min(c.h1 - STEP_S, second) - c.h0) // STEP_S + 1
        if t >= self.open_start:
            count += (t - self.open_start) // STEP_S + 1
        return count

    def energy_wh(self, c: Charger, steps: int) -> str:
        return f"{c.base_wh + steps * c.step_wh:.1f}"

    def values(self, c: Charger, t: int) -> tuple[tuple[int, str, int] | None, str, int, int, int]:
        """(session, register Wh, power W, current A, SoC %) at instant ``t``."""
        session = self.session_at(c, t)
        energy = self.energy_wh(c, self.steps(c, t))
        if session is None:
            return None, energy, 0, 0, 0
        return session, energy, c.power_w, c.current_a, 20 + min(70, (t - session[2]) // 120)


def sessions_ensure(fleet: Fleet, lo: int, hi: int) -> list[tuple[int, Charger, int, int]]:
    """The daily sessions touching [lo, hi) exist as closed sessions; returns those made (pk, c, start, end)."""
    from chargepoint.models import ChargingSession

    made: list[tuple[Charger, int, int, int]] = []
    rows = []
    for c in fleet.chargers:
        for day in range((lo - fleet.origin) // DAY_S - 1, (hi - fleet.origin) // DAY_S + 1):
            start, end = fleet.window(c, day)
            if start >= end or end <= lo or start >= hi or (c.n, day) in fleet.sessions:
                continue
            start_wh = Decimal(fleet.energy_wh(c, fleet.steps(c, start - STEP_S)))
            stop_wh = Decimal(fleet.energy_wh(c, fleet.steps(c, end - STEP_S)))
            made.append((c, day, start, end))
            rows.append(
                ChargingSession(
                    station_id=c.pk,
                    connector_id=c.connector_pk,
                    transaction_id=f"h{day}",
                    id_tag="BENCH",
                    started_at=at(start),
                    stopped_at=at(end),
                    meter_start_wh=start_wh,
                    meter_stop_wh=stop_wh,
                    energy_kwh=((stop_wh - start_wh) / 1000).quantize(Decimal("0.001")),
                    stop_reason="EVDisconnected",
                )
            )
    created = ChargingSession.objects.bulk_create(rows, batch_size=2000)
    out = []
    for (c, day, start, end), session in zip(made, created, strict=True):
        fleet.sessions[(c.n, day)] = (session.pk, session.transaction_id)
        out.append((session.pk, c, start, end))
    return out


def copy_lines(
    schema: str, table_columns: str, lines: Iterator[str], *, replica: bool = True, chunk: int = 1 << 20
) -> int:
    """COPY text lines into ``schema.table (columns)``; returns the lines written.

    ``replica``: foreign-key triggers off for this load (the rows reference rows that exist).
    """
    from django.db import connection

    written = 0
    with connection.cursor() as cursor:
        if replica:
            cursor.execute("SET session_replication_role = replica")
        try:
            with cursor.cursor.copy(f'COPY "{schema}".{table_columns} FROM STDIN') as copy:
                buffer: list[str] = []
                size = 0
                for line in lines:
                    buffer.append(line)
                    size += len(line)
                    written += 1
                    if size >= chunk:
                        copy.write("".join(buffer))
                        buffer, size = [], 0
                if buffer:
                    copy.write("".join(buffer))
        finally:
            if replica:
                cursor.execute("SET session_replication_role = DEFAULT")
    return written


def readings_copy(fleet: Fleet, schema: str, lo: int, hi: int, streams: int = 3) -> int:
    """COPY the readings of [lo, hi) in ``streams`` sessions at once, each a consecutive time range.

    Each stream writes its range in time order, as the ingest does, so every station's key range
    grows at a few places at once (the index pages split as they do under the real ingest).
    """
    from django.db import connection

    bounds = [lo + (hi - lo) // STEP_S * k // streams * STEP_S for k in range(streams)] + [hi]
    failures: list[BaseException] = []
    written = [0] * streams

    def load(k: int) -> None:
        try:
            lines = reading_lines(fleet, bounds[k], bounds[k + 1])
            written[k] = copy_lines(schema, f"chargepoint_meterreading ({COPY_COLUMNS})", lines)
        except BaseException as exc:  # reported by the caller's thread
            failures.append(exc)
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=load, args=(k,)) for k in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return sum(written) * len(fleet.chargers)  # a line per instant and charger, written by the instant


def reading_lines(fleet: Fleet, lo: int, hi: int) -> Iterator[str]:
    """The readings of every charger for the instants [lo, hi), in time order (as the ingest stores them)."""
    chargers = fleet.chargers
    steps = [fleet.steps(c, lo - STEP_S) for c in chargers]
    idle_tail = "\t0\t0\t0\t0\t32\t0\n"
    for t in range(lo, hi, STEP_S):
        ts = iso(t)
        day, second = divmod(t - fleet.origin, DAY_S)
        open_now = t >= fleet.open_start
        daily = t < fleet.cut
        out = []
        for i, c in enumerate(chargers):
            if open_now:
                pk, start = c.open_pk, fleet.open_start
            elif daily and c.h0 <= second < c.h1:
                pk, start = fleet.sessions[(c.n, day)][0], fleet.origin + day * DAY_S + c.h0
            else:
                pk = 0
            if pk:
                steps[i] += 1
                soc = 20 + min(70, (t - start) // 120)
                energy = c.base_wh + steps[i] * c.step_wh
                a = c.current_a
                out.append(f"{c.pk}\t{ts}\t1\t{pk}\t1\t{energy:.1f}\t{c.power_w}\t{a}\t{a}\t{a}\t32\t{soc}\n")
            else:
                energy = c.base_wh + steps[i] * c.step_wh
                out.append(f"{c.pk}\t{ts}\t1\t\\N\t1\t{energy:.1f}{idle_tail}")
        yield "".join(out)


def meter_event(fleet: Fleet, c: Charger, t: int) -> dict[str, Any]:
    """The gateway's event for the charger's MeterValues message at ``t`` (as ``link.emit`` makes it)."""
    session, energy, power, current, soc = fleet.values(c, t)
    stamp = iso(t)

    def sample(measurand: str, value: object, unit: str, phase: str = "", location: str = "Outlet") -> dict[str, str]:
        return {
            "at": stamp,
            "measurand": measurand,
            "phase": phase,
            "location": location,
            "context": "Sample.Periodic",
            "value": str(value),
            "unit": unit,
        }

    samples = [
        sample("Energy.Active.Import.Register", energy, "Wh"),
        sample("Power.Active.Import", power, "W"),
        sample("Current.Import", current, "A", "L1"),
        sample("Current.Import", current, "A", "L2"),
        sample("Current.Import", current, "A", "L3"),
        sample("Current.Offered", RATING_A, "A"),
        sample("SoC", soc, "Percent", location="EV"),
    ]
    return {
        "type": "meter",
        "cp": c.cp,
        "ts": stamp,
        "connector": 1,
        "transaction_id": session[1] if session else None,
        "samples": samples,
    }


def ingest(fleet: Fleet, chargers: list[Charger], lo: int, hi: int) -> tuple[int, float]:
    """The readings of [lo, hi) through ``telemetry_apply``, one batch per instant; (events, seconds)."""
    from chargepoint.telemetry import telemetry_apply

    began = time.perf_counter()
    events = 0
    for t in range(lo, hi, STEP_S):
        batch = [meter_event(fleet, c, t) for c in chargers]
        telemetry_apply(events=batch)
        events += len(batch)
    return events, time.perf_counter() - began


# -- setup -------------------------------------------------------------------------------------


def drop_database() -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    admin_url = urlunsplit(urlsplit(BASE_URL)._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


def tenant_make(slug: str) -> Any:
    from tenants.services import tenant_create

    return tenant_create(
        slug=slug,
        name=slug.replace("-", " ").title(),
        domain=f"{slug}.localhost",
        admin_email=f"admin@{slug}.localhost",
        admin_password=PASSWORD,
    ).obj


def balance_sites_make(now: int, open_start: int, days_max: float) -> Fleet:
    """The 20- and 100-charger sites: online chargers, each with an open session."""
    from balancing.models import Circuit, Site
    from chargepoint.models import ChargingSession, ChargingStation, Connector

    chargers: list[Charger] = []
    n = 0
    for slug, size, limit_a, cap_kw in BALANCE_SITES:
        site = Site.objects.create(slug=slug, name=f"{size} chargers", limit_a=limit_a, demand_cap_kw=cap_kw)
        panels = [
            Circuit.objects.create(site=site, name=f"Panel {p}", kind="panel", limit_a=Decimal(160))
            for p in range(max(1, size // 25))
        ]
        rows = [
            Circuit.objects.create(
                site=site, name=f"Row {r}", parent=panels[r % len(panels)], limit_a=Decimal(63), limit_kw=Decimal(40)
            )
            for r in range(size // 5)
        ]
        stations = ChargingStation.objects.bulk_create(
            [
                ChargingStation(
                    charge_point_id=f"SC{size}-{i:03d}",
                    site=site,
                    circuit=rows[i % len(rows)],
                    vendor="Bench",
                    model="AC22",
                    firmware_version="1.0",
                    max_current_a=Decimal(RATING_A),
                    phases=3,
                    wiring="L1L2L3",
                    ocpp_version="1.6",
                    is_online=True,
                    connected_at=at(now - 7200),
                    last_seen_at=at(now),
                )
                for i in range(size)
            ]
        )
        connectors = Connector.objects.bulk_create(
            [
                Connector(station=s, connector_id=1, status="Charging", status_changed_at=at(open_start))
                for s in stations
            ]
        )
        for station, connector in zip(stations, connectors, strict=True):
            chargers.append(Charger.make(n, station.charge_point_id, station.pk, connector.pk, slug))
            n += 1
    origin = floor_to(now - (days_max + 2) * DAY_S, DAY_S)
    fleet = Fleet(chargers, origin, open_start)
    sessions = ChargingSession.objects.bulk_create(
        [
            ChargingSession(
                station_id=c.pk,
                connector_id=c.connector_pk,
                transaction_id=f"open-{c.n}",
                id_tag="BENCH",
                started_at=at(open_start),
                meter_start_wh=Decimal(fleet.energy_wh(c, fleet.steps(c, open_start - STEP_S))),
                energy_needed_kwh=Decimal(30) if c.n % 2 else None,
                departure_at=at(now + 3 * 3600 + (c.n % 5) * 3600) if c.n % 2 else None,
            )
            for c in chargers
        ]
    )
    for c, s in zip(chargers, sessions, strict=True):
        c.open_pk, c.open_tx = s.pk, s.transaction_id
    return fleet


# -- history of the balancing sites (bulk, same shape as the platform writes it) ----------------


def history_load(fleet: Fleet, schema: str, lo: int, hi: int, templates: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Everything [lo, hi) of operation leaves behind, COPYed: runs, sessions, readings, rollups, pushes."""
    from django.db import connection

    from balancing.models import Site
    from billing.models import SessionDraw
    from chargepoint.partitions import partitions_ensure

    counts: dict[str, int] = {}
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    partitions_ensure(at(lo), at(hi))
    sites = {s.slug: s.pk for s in Site.objects.filter(slug__in=[slug for slug, *_ in BALANCE_SITES])}

    # one balancing run per site and minute, its JSON as a real run of the site wrote it
    run_ids: dict[tuple[str, int], int] = {}
    with connection.cursor() as cursor:
        for slug in sites:
            cursor.execute(
                f"""
                INSERT INTO "{schema}".balancing_balancingrun
                    (site_id, reason, started_at, finished_at, status, inputs_digest, problem, result, limits,
                     solve_ms, error, measured_kw, allocated_kw, limit_kw, unmanaged_kw, phase_measured_a,
                     phase_allocated_a, phase_limit_a, repeats)
                SELECT t.site_id, 'sweep', g, g + interval '150 milliseconds', t.status, t.inputs_digest,
                       t.problem, t.result, t.limits, t.solve_ms, '',
                       round((t.measured_kw * (0.3 + 0.7 * random()))::numeric, 3),
                       round((t.allocated_kw * (0.3 + 0.7 * random()))::numeric, 3),
                       t.limit_kw, round((t.unmanaged_kw * (0.5 + 0.5 * random()))::numeric, 3),
                       t.phase_measured_a, t.phase_allocated_a, t.phase_limit_a, 0
                FROM "{schema}".balancing_balancingrun t,
                     generate_series(%s::timestamptz, %s::timestamptz, interval '1 minute') g
                WHERE t.id = %s
                RETURNING id, extract(epoch FROM started_at)::bigint
                """,  # noqa: S608 - our own schema name
                [at(lo), at(hi - 60), templates[slug]["run_id"]],
            )
            for run_id, epoch in cursor.fetchall():
                run_ids[(slug, int(epoch))] = run_id
    counts["runs"] = len(run_ids)
    seconds["runs"], began = time.perf_counter() - began, time.perf_counter()

    made = sessions_ensure(fleet, lo, hi)
    counts["sessions"] = len(made)
    counts["readings"] = readings_copy(fleet, schema, lo, hi)
    seconds["readings"], began = time.perf_counter() - began, time.perf_counter()

    # the rollup's intervals: energy of each in-session step in the slot its previous reading is in
    station_slots: dict[tuple[int, int, int], float] = defaultdict(float)
    windows = [(c, start, end) for _, c, start, end in made]
    windows += [(c, max(fleet.open_start, lo), hi) for c in fleet.chargers if hi > fleet.open_start]
    for c, start, end in windows:
        for slot in range(floor_to(start - STEP_S, SLOT_S), end, SLOT_S):
            first = max(start, slot + STEP_S)
            last = min(end, slot + SLOT_S + STEP_S)
            count = max(0, (last - first + STEP_S - 1) // STEP_S)
            if count and lo <= slot < hi:
                station_slots[(sites[c.site_slug], c.pk, slot)] += count * c.step_wh / 1000
    site_slots: dict[tuple[int, int], float] = defaultdict(float)
    for (site_id, _, slot), kwh in station_slots.items():
        site_slots[(site_id, slot)] += kwh
    stamp = iso(hi)
    lines = [f"{s}\t{p}\t{iso(slot)}\t15\t{kwh:.6f}\t0\t{stamp}\n" for (s, p, slot), kwh in station_slots.items()]
    lines += [f"{s}\t\\N\t{iso(slot)}\t15\t{kwh:.6f}\t0\t{stamp}\n" for (s, slot), kwh in site_slots.items()]
    columns = "billing_intervalenergy (site_id, station_id, start, minutes, energy_kwh, resets, updated_at)"
    counts["intervals"] = copy_lines(schema, columns, iter(lines))
    SessionDraw.objects.bulk_create(
        [
            SessionDraw(
                session_id=pk,
                observed_max_kw=Decimal(c.power_w) / 1000,
                was_capped=False,
                register_energy_kwh=Decimal((end - start) // STEP_S * c.step_wh / 1000).quantize(Decimal("0.001")),
            )
            for pk, c, start, end in made
        ],
        batch_size=2000,
    )

    # a profile every 10 minutes to each charger in a session (renewals and moves), in that minute's run
    push_lines = []
    for _, c, start, end in [
        *made,
        *[(c.open_pk, c, max(fleet.open_start, lo), hi) for c in fleet.chargers if hi > fleet.open_start],
    ]:
        template = templates[c.site_slug]
        for minute in range(floor_to(start + 59, 60), end, PUSH_EVERY_S):
            run_id = run_ids.get((c.site_slug, minute))
            if run_id is None:
                continue
            kind = "raise" if minute - start < 60 else "renew"
            push_lines.append(
                f"{run_id}\t{c.pk}\t{c.connector_pk}\t{kind}\t16.0\t16.0\t{template['payload']}\tAccepted\t\t"
                f"{iso(minute)}\t{at(minute) + timedelta(milliseconds=40)}\n"
            )
    columns = (
        "balancing_profilepush (run_id, station_id, connector_id, kind, old_limit_a, new_limit_a, payload, "
        "status, error, sent_at, answered_at)"
    )
    counts["pushes"] = copy_lines(schema, columns, iter(push_lines))
    seconds["rollups and pushes"] = time.perf_counter() - began
    log("history: " + ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items()))
    return counts


def vacuum_analyze(schema: str, tables: Sequence[str]) -> None:
    """As autovacuum would have done over weeks of inserts: visibility map, hint bits, statistics."""
    from django.db import connection

    from chargepoint.partitions import partitions_list

    with connection.cursor() as cursor:
        names = list(tables)
        if "chargepoint_meterreading" in names:
            names.remove("chargepoint_meterreading")
            names += [name for name, _ in partitions_list()]
            cursor.execute(f'ANALYZE "{schema}".chargepoint_meterreading')  # the parent's own statistics
        for name in names:
            cursor.execute(f'VACUUM (ANALYZE) "{schema}".{name}')
        # the load's dirty pages written out now, not by the checkpointer during the measurements
        cursor.execute("CHECKPOINT")


# -- the report organisation --------------------------------------------------------------------


@dataclass
class ReportOrg:
    tenant: Any
    year: int
    month: int
    stations: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # site pk -> [(station, connector)]
    loaded_from: date | None = None
    sessions: int = 0
    intervals: int = 0


def report_org_make(tenant: Any, sites: int, chargers: int, year: int, month: int) -> ReportOrg:
    from django_tenants.utils import tenant_context

    from balancing.models import Site
    from billing.tariff_versions import tariff_import
    from chargepoint.models import ChargingStation, Connector

    org = ReportOrg(tenant, year, month)
    record = json.loads(B19.read_text())
    with tenant_context(tenant):
        for s in range(sites):
            site = Site.objects.create(
                slug=f"site-{s:02d}", name=f"Site {s:02d}", limit_a=Decimal(250), timezone=REPORT_TZ
            )
            tariff_import(site=site, record=record, valid_from=date(year - 1, 1, 1))
            stations = ChargingStation.objects.bulk_create(
                [
                    ChargingStation(charge_point_id=f"R{s:02d}-{c:02d}", site=site, max_current_a=Decimal(16), phases=3)
                    for c in range(chargers)
                ]
            )
            connectors = Connector.objects.bulk_create([Connector(station=st, connector_id=1) for st in stations])
            org.stations[site.pk] = [(st.pk, co.pk) for st, co in zip(stations, connectors, strict=True)]
    return org


def report_days_load(org: ReportOrg, first: date, end: date, seed: int) -> None:
    """Sessions (with draws) and the rollup's interval rows of the local days [first, end), all sites."""
    from django_tenants.utils import tenant_context

    from billing.intervals import spread_energy
    from billing.models import SessionDraw
    from chargepoint.models import ChargingSession

    tz = ZoneInfo(REPORT_TZ)
    lo = datetime(first.year, first.month, first.day, tzinfo=tz).astimezone(UTC)
    hi = datetime(end.year, end.month, end.day, tzinfo=tz).astimezone(UTC)
    rng = random.Random(seed)  # noqa: S311 - reproducible synthetic data
    sessions: list[ChargingSession] = []
    lines: list[str] = []
    stamp = datetime.now(UTC).isoformat()
    for site_id, stations in org.stations.items():
        site_energy: dict[datetime, Decimal] = {}
        for station_id, connector_id in stations:
            station_energy: dict[datetime, Decimal] = {}
            day = first
            while day < end:
                midnight = datetime(day.year, day.month, day.day, tzinfo=tz)
                for second in (False, True):
                    if second and rng.random() > 0.5:
                        continue
                    arrive = (
                        midnight + timedelta(hours=rng.uniform(12, 17) if second else rng.uniform(7, 10))
                    ).astimezone(UTC)
                    energy = Decimal(rng.randint(5, 30))
                    hours = energy / Decimal(rng.choice(("3.7", "5.5", "7.4")))
                    stop = arrive + timedelta(hours=float(hours) + rng.uniform(0.2, 2))
                    spread_energy(station_energy, arrive, arrive + timedelta(hours=float(hours)), energy)
                    sessions.append(
                        ChargingSession(
                            station_id=station_id,
                            connector_id=connector_id,
                            transaction_id=f"{day:%Y%m%d}-{int(second)}",
                            started_at=arrive,
                            stopped_at=stop,
                            meter_start_wh=Decimal(0),
                            meter_stop_wh=energy * 1000,
                            energy_kwh=energy,
                            ev_max_current_a=Decimal(rng.choice((16, 32))) if rng.random() < 0.3 else None,
                        )
                    )
                day += timedelta(days=1)
            for slot, kwh in station_energy.items():
                if lo <= slot < hi:
                    lines.append(f"{site_id}\t{station_id}\t{slot.isoformat()}\t15\t{kwh:.6f}\t0\t{stamp}\n")
                    site_energy[slot] = site_energy.get(slot, Decimal(0)) + kwh
        lines += [
            f"{site_id}\t\\N\t{slot.isoformat()}\t15\t{kwh:.6f}\t0\t{stamp}\n" for slot, kwh in site_energy.items()
        ]
    with tenant_context(org.tenant):
        created = ChargingSession.objects.bulk_create(sessions, batch_size=5000)
        SessionDraw.objects.bulk_create(
            [
                SessionDraw(session=s, observed_max_kw=Decimal(rng.choice(("7.4", "11.0"))))
                for s in created
                if rng.random() < 0.6
            ],
            batch_size=5000,
        )
        columns = "billing_intervalenergy (site_id, station_id, start, minutes, energy_kwh, resets, updated_at)"
        org.intervals += copy_lines(org.tenant.schema_name, columns, iter(lines))
        vacuum_analyze(
            org.tenant.schema_name, ["billing_intervalenergy", "chargepoint_chargingsession", "billing_sessiondraw"]
        )
    org.sessions += len(sessions)
    org.loaded_from = first if org.loaded_from is None else min(org.loaded_from, first)


# -- measurements -------------------------------------------------------------------------------


@dataclass
class Control:
    """An organisation with the same two sites and sessions but no history: balancing's yardstick.

    Its runs are interleaved with the measured ones, so the machine's load (other work on a
    shared box) weighs on both alike; its fresh readings are COPYed (no rollup is measured there).
    """

    tenant: Any
    fleet: Fleet
    upto: int = 0


def control_fresh(control: Control, now: int) -> None:
    """The control's readings up to ``now`` (from 5 minutes ago on the first call)."""
    from django_tenants.utils import tenant_context

    first = control.upto + STEP_S if control.upto else now - ROLLUP_NEW_S
    if first > now:
        return
    with tenant_context(control.tenant):
        copy_lines(
            control.tenant.schema_name,
            f"chargepoint_meterreading ({COPY_COLUMNS})",
            reading_lines(control.fleet, first, now + STEP_S),
        )
    control.upto = now


class AcceptAll:
    """The command path replaced by chargers that accept every profile (as in balance_site_bench)."""

    def send_many(self, requests: Sequence[Any]) -> list[Any]:
        from balancing.push import PushAnswer

        return [PushAnswer("Accepted") for _ in requests]


def balance_measure(tenants: Sequence[Any], slug: str, runs: int) -> tuple[list[list[float]], int, float]:
    """``runs`` runs of the site in each tenant, interleaved, each run pushing to every charger.

    Returns the ms per run for each tenant, the pushes per run and the engine's solve ms (of the first).
    """
    from django.utils import timezone
    from django_tenants.utils import tenant_context

    from balancing.models import ChargerModelCompliance, ConnectorLimit, Site, SiteAlert, StationFailsafe
    from balancing.runs import site_balance_run

    for tenant in tenants:
        with tenant_context(tenant):
            site = Site.objects.get(slug=slug)
            # every phase starts from the same books: no limits, defaults or alerts yet
            ConnectorLimit.objects.filter(connector__station__site=site).delete()
            StationFailsafe.objects.filter(station__site=site).delete()
            SiteAlert.objects.filter(site=site).delete()
            ChargerModelCompliance.objects.all().delete()
            site_balance_run(site=site, reason="bench warm-up", pusher=AcceptAll(), now=timezone.now())
    timings: list[list[float]] = [[] for _ in tenants]
    pushes = 0
    solve_ms = 0.0
    for _ in range(runs):
        for index, tenant in enumerate(tenants):
            with tenant_context(tenant):
                site = Site.objects.get(slug=slug)
                ConnectorLimit.objects.filter(connector__station__site=site).delete()  # every run pushes to all
                ms, run = timed(
                    partial(site_balance_run, site=site, reason="bench", pusher=AcceptAll(), now=timezone.now())
                )
                timings[index].append(ms)
                if index == 0:
                    pushes = run.pushes.count()
                    solve_ms = run.solve_ms or 0.0
    return timings, pushes, solve_ms


def balance_warm_up() -> None:
    """One run of each balancing site (pushing to every charger), as the history's template."""
    from django.utils import timezone

    from balancing.models import Site
    from balancing.runs import site_balance_run

    for slug, *_ in BALANCE_SITES:
        site_balance_run(
            site=Site.objects.get(slug=slug), reason="bench warm-up", pusher=AcceptAll(), now=timezone.now()
        )


def balance_templates() -> dict[str, dict[str, Any]]:
    """The latest real run and push of each balancing site: the content of the history's rows."""
    from balancing.models import BalancingRun, ProfilePush

    out = {}
    for slug, *_ in BALANCE_SITES:
        run = BalancingRun.objects.filter(site__slug=slug).order_by("-started_at").first()
        push = ProfilePush.objects.filter(run=run).exclude(kind="failsafe").first()
        if run is None or push is None:
            raise RuntimeError(f"no run with a push of site {slug} to copy into the history")
        payload = json.dumps(push.payload).replace("\\", "\\\\")
        out[slug] = {"run_id": run.pk, "payload": payload}
    return out


def http_get(client: Any, url: str, repeats: int) -> tuple[list[float], Any]:
    timings = []
    response = None
    for _ in range(repeats):
        ms, response = timed(lambda: client.get(url))
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code} {response.content[:300]!r}")
        timings.append(ms)
    return timings, response


# -- the run ------------------------------------------------------------------------------------

# What can be measured alone (``--only``): balancing runs, the 5-minute rollup, the month's rebuild
# from raw readings, the readings API, the site chart, storage, the monthly report, 200 organisations.
PARTS = ("balance", "rollup", "rebuild", "api", "chart", "storage", "report", "tenants")


def parts_parse(text: str) -> tuple[str, ...]:
    parts = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [part for part in parts if part not in PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown) or 'nothing'}: choose from {', '.join(PARTS)}")
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--json", help="where to write the figures (default bench/results/scale-<date>.json)")
    parser.add_argument("--days", default="7,28", help="days of history of the phases after the empty one")
    parser.add_argument("--runs", type=int, default=20, help="balancing runs per site and phase")
    parser.add_argument(
        "--ingest-minutes", type=int, default=60, help="the most recent history through telemetry_apply"
    )
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--tenant-sites", type=int, default=5)
    parser.add_argument("--report-sites", type=int, default=50)
    parser.add_argument("--report-chargers", type=int, default=20)
    parser.add_argument("--keep-db", action="store_true", help=f"keep {DB_NAME} afterwards")
    parser.add_argument(
        "--only",
        type=parts_parse,
        default=PARTS,
        help=f"measure only these (comma-separated: {','.join(PARTS)}); the history is loaded all the same",
    )
    args = parser.parse_args()
    days_list = [float(d) for d in args.days.split(",") if d]
    labels = ["empty"] + [{7.0: "1 week", 28.0: "4 weeks"}.get(d, f"{d:g} days") for d in days_list]
    results = Results(labels)

    from evplatform.bootstrap import ensure_database

    log(f"database {DB_NAME}: dropping any left from an earlier run, creating, migrating ...")
    drop_database()
    ensure_database(DATABASE_URL)
    import django

    django.setup()
    try:
        run(args, days_list, labels, results)
    finally:
        cleanup(keep_db=args.keep_db)
    total_s = time.monotonic() - started_clock
    results.once["run time"] = f"{total_s / 60:.1f} min"
    print("\nresults (ms unless stated; median of repeats):\n")
    print(results.table())
    print("\nonce:\n")
    print(results.once_table())
    out = Path(args.json) if args.json else ROOT / "bench" / "results" / f"scale-{datetime.now(UTC):%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    first, last = labels[0], labels[-1]
    out.write_text(
        json.dumps(
            {
                "benchmark": "scale_bench",
                "date": datetime.now(UTC).isoformat(),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "args": vars(args),
                "phases": labels,
                "results": [
                    {
                        "key": row.key,
                        "label": row.label,
                        "unit": row.unit,
                        "target": row.target,
                        "values": row.values,
                        "ratio_last_to_empty": row.ratio(first, last),
                        "met": row.met(first, last),
                        "detail": row.detail,
                    }
                    for row in results.rows.values()
                ],
                "once": results.once,
                "run_time_s": round(total_s, 1),
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    log(f"figures written to {out}")


def run(args: argparse.Namespace, days_list: list[float], labels: list[str], results: Results) -> None:
    from django.core.management import call_command
    from django.test import Client
    from django_tenants.utils import tenant_context

    from billing.savings_reports import savings_report_generate
    from tenants.accounts.models import Role, User
    from tenants.accounts.tokens import api_token_create
    from tenants.services import platform_setup

    call_command("migrate_schemas", interactive=False, verbosity=0)
    platform_setup(domain="localhost")
    scale = tenant_make("scale")
    schema = scale.schema_name
    parts = args.only

    start = floor_to(time.time(), STEP_S)
    open_start = start - OPEN_SESSION_S
    control = None
    if "balance" in parts:
        control_tenant = tenant_make("scale-control")
        with tenant_context(control_tenant):
            control = Control(control_tenant, balance_sites_make(start, open_start, 0))
    with tenant_context(scale):
        fleet = balance_sites_make(start, open_start, max(days_list, default=0))
        viewer = User.objects.create_user(email="viewer@scale.localhost", password=PASSWORD, role=Role.SITE_VIEWER)
        _, raw_token = api_token_create(user=viewer, name="bench")
    api = Client(HTTP_HOST="scale.localhost", HTTP_AUTHORIZATION=f"Bearer {raw_token}")
    portal = Client(HTTP_HOST="scale.localhost")
    with tenant_context(scale):
        portal.force_login(viewer)

    local_now = datetime.fromtimestamp(start, ZoneInfo(REPORT_TZ))
    month_first = (local_now.replace(day=1) - timedelta(days=1)).replace(day=1).date()
    org = None
    if "report" in parts:
        log(
            f"report organisation: {args.report_sites} sites x {args.report_chargers} chargers, "
            f"rollups and sessions of {month_first:%B %Y} ..."
        )
        org = report_org_make(
            tenant_make("scale-report"), args.report_sites, args.report_chargers, month_first.year, month_first.month
        )
        month_end = (month_first + timedelta(days=32)).replace(day=1)
        report_days_load(org, month_first, month_end, seed=1)
        log(f"report organisation: {org.sessions:,} sessions, {org.intervals:,} interval rows")

    define_rows(results, args)
    templates: dict[str, dict[str, Any]] = {}
    history_tables = [
        "chargepoint_meterreading",
        "balancing_balancingrun",
        "balancing_profilepush",
        "billing_intervalenergy",
        "chargepoint_chargingsession",
        "billing_sessiondraw",
    ]
    for index, label in enumerate(labels):
        days = 0.0 if index == 0 else days_list[index - 1]
        log(f"=== {label} === (load average {os.getloadavg()[0]:.1f})")
        if days:
            with tenant_context(scale):
                lo = floor_to(start - days * DAY_S, SLOT_S)
                history_extend(fleet, schema, lo, templates, args.ingest_minutes * 60)
                ms, _ = timed(partial(vacuum_analyze, schema, history_tables))
                log(f"history: VACUUM ANALYZE in {ms / 1000:.0f} s")
            before = month_first - timedelta(days=int(days))
            until = (org.loaded_from or month_first) if org else before
            if org and before < until:
                report_days_load(org, before, until, seed=index + 1)
                log(f"report organisation: history from {before}: {org.sessions:,} sessions, {org.intervals:,} rows")

        with tenant_context(scale):
            measure_phase(label, scale, fleet, control, results, args, api, portal)
            if index == 0:
                if control is None:  # no balancing measured: one run per site makes the history's template
                    balance_warm_up()
                templates.update(balance_templates())
            if "rebuild" in parts:
                rebuild_day(label, days, fleet, results, start, args.report_sites * args.report_chargers)
            if "storage" in parts:
                storage(label, schema, results)

        if org is None:
            continue
        with tenant_context(org.tenant):
            timings = []
            for _ in range(2):
                ms, report = timed(
                    partial(savings_report_generate, year=org.year, month=org.month, reason="request", requested_by="")
                )
                timings.append(ms)
            results.set(
                "report",
                label,
                statistics.median(timings),
                runs_ms=[round(t) for t in timings],
                sessions=org.sessions,
                interval_rows=org.intervals,
                sizes_kib={f.format: round(f.size_bytes / 1024) for f in report.files.only("format", "size_bytes")},
            )
            log(f"report {org.year}-{org.month:02d}: {', '.join(f'{t / 1000:.2f} s' for t in timings)}")
    if "tenants" in parts:
        many_tenants(args, results)


def history_extend(
    fleet: Fleet, schema: str, lo: int, templates: dict[str, dict[str, Any]], ingest_window_s: int
) -> None:
    """Readings (and all the rest) back to ``lo``: the most recent part through the ingest, the rest COPYed."""
    spans = {slug: span for slug, span in fleet.stored.items() if span is not None}
    first = min(span[0] for span in spans.values())
    if lo >= first:
        return
    cut = min(first, floor_to(time.time() - ingest_window_s, SLOT_S))
    log(f"history: COPY of {at(lo):%Y-%m-%d %H:%M} .. {at(cut):%Y-%m-%d %H:%M} UTC ...")
    ms, counts = timed(partial(history_load, fleet, schema, lo, cut, templates))
    log(
        f"history: {counts['readings']:,} readings, {counts['runs']:,} runs, {counts['pushes']:,} pushes, "
        f"{counts['sessions']:,} sessions, {counts['intervals']:,} interval rows in {ms / 1000:.0f} s "
        f"({counts['readings'] / ms * 1000:,.0f} readings/s)"
    )
    for slug, span in spans.items():
        if cut < span[0]:
            events, seconds = ingest(fleet, fleet.of(slug), cut, span[0])
            log(
                f"history: {events:,} readings of {slug}, {at(cut):%H:%M:%S} .. {at(span[0]):%H:%M:%S} UTC, "
                f"through telemetry_apply in {seconds:.0f} s ({events / seconds:,.0f} messages/s)"
            )
        span[0] = lo


def define_rows(results: Results, args: argparse.Namespace) -> None:
    parts = args.only
    for slug, size, *_ in BALANCE_SITES if "balance" in parts else ():
        results.add(
            f"balance_{slug}", f"balance_site {size} chargers, median", "ms", target="<= 1.2x empty", ratio_limit=1.2
        )
        results.add(f"balance_{slug}_p95", f"balance_site {size} chargers, p95", "ms")
        results.add(
            f"balance_{slug}_control",
            f"balance_site {size} chargers / no-history control, same minutes",
            "x",
            target="<= 1.2",
            limit=1.2,
        )
    if "rollup" in parts:
        results.add("rollup", "5-min rollup, 20 chargers", "ms", target="< 100 ms", limit=100)
        results.add("rollup_queries", "5-min rollup, statements sent", "n")
    if "report" in parts:
        results.add(
            "report",
            f"monthly report {args.report_sites}x{args.report_chargers}",
            "ms",
            target="< 10 s",
            limit=10_000,
        )
    if "rebuild" in parts:
        results.add("rebuild_day", "rebuild 1 day from raw, 20 chargers", "ms")
        results.add(
            "rebuild_month_est",
            f"est. intervals_rebuild_month {args.report_sites}x{args.report_chargers}",
            "s",
        )
    if "api" in parts:
        results.add("api_charger_p1", "readings API, charger, page 1", "ms", target="< 100 ms", limit=100)
        results.add("api_charger_later", "readings API, charger, later page", "ms", target="< 100 ms", limit=100)
        results.add("api_tenant_p1", "readings API, organisation, last day, page 1", "ms", target="< 100 ms", limit=100)
    for slug, size, *_ in BALANCE_SITES if "chart" in parts else ():
        results.add(f"chart_{slug}", f"site chart, month, {size} chargers", "ms", target="< 300 ms", limit=300)
        results.add(f"chart_{slug}_kb", f"site chart JSON, {size} chargers", "KB", target="< 1 MB", limit=1000)
    if "storage" in parts:
        results.add("bytes_per_value", "bytes per stored value", "B", target="<= 80 B", limit=80)
        results.add("bytes_per_row", "bytes per reading row (instant)", "B")
        results.add("mb_per_charger_month", "MB per charger-month at 10 s", "MB")
        results.add("readings_total", "reading rows stored", "rows")
        results.add("bytes_per_run", "bytes per balancing run row", "B")
        results.add("bytes_per_push", "bytes per profile push row", "B")


def measure_phase(
    label: str,
    tenant: Any,
    fleet: Fleet,
    control: "Control | None",
    results: Results,
    args: argparse.Namespace,
    api: Any,
    portal: Any,
) -> None:
    from billing.interval_rollup import intervals_roll_up

    # readings up to now: the 100-charger site to now, the 20-charger site to 5 minutes ago
    now = floor_to(time.time(), STEP_S)
    for slug, *_ in BALANCE_SITES:
        chargers = fleet.of(slug)
        span = fleet.stored[slug]
        upto = now - ROLLUP_NEW_S if slug == "s20" else now
        first = (span[1] + STEP_S) if span else upto - ROLLUP_NEW_S
        if first <= upto:
            events, seconds = ingest(fleet, chargers, first, upto + STEP_S)
            log(f"{slug}: {events:,} new readings through telemetry_apply in {seconds:.1f} s")
            fleet.stored[slug] = [span[0] if span else first, upto]
    ms, outcome = timed(intervals_roll_up)
    log(f"rollup of what was pending (not timed): {outcome.marks:,} marks in {ms / 1000:.1f} s")
    parts = args.only
    if "rollup" in parts:
        rollup_measure(label, fleet, results)
    if control is not None:
        balance_phase(label, tenant, fleet, control, results, args)
    if "api" in parts:
        api_measure(label, fleet, results, api)
    if "chart" in parts:
        chart_measure(label, results, portal)


class StatementCount:
    """``connection.execute_wrapper`` counting the statements sent (SET search_path included)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        self.count += 1
        return execute(sql, params, many, context)


def rollup_measure(label: str, fleet: Fleet, results: Results) -> None:
    """The rollup of 5 minutes of new readings of the 20-charger site (30 instants through the ingest)."""
    from django.db import connection

    from billing.interval_rollup import intervals_roll_up
    from chargepoint.models import MeterReading

    chargers = fleet.of("s20")
    span = fleet.stored["s20"]
    assert span is not None  # noqa: S101
    now = floor_to(time.time(), STEP_S)
    lo = now - ROLLUP_NEW_S + STEP_S
    before = MeterReading.objects.filter(station_id__in=[c.pk for c in chargers]).count()
    timings = []
    marks = []
    statements = []
    for repeat in range(ROLLUP_REPEATS):
        ingest(fleet, chargers, lo, now + STEP_S)
        if repeat == 0:
            new_rows = MeterReading.objects.filter(station_id__in=[c.pk for c in chargers]).count() - before
        counter = StatementCount()
        with connection.execute_wrapper(counter):
            ms, outcome = timed(intervals_roll_up)
        timings.append(ms)
        marks.append(outcome.marks)
        statements.append(counter.count)
    span[1] = max(span[1], now)
    results.set(
        "rollup",
        label,
        statistics.median(timings),
        runs_ms=[round(t, 1) for t in timings],
        marks=marks,
        new_rows_first=new_rows,
        rows=len(chargers) * ROLLUP_NEW_S // STEP_S,
    )
    results.set("rollup_queries", label, statistics.median(statements), runs=statements)
    log(
        f"rollup, 20 chargers x 30 instants ({new_rows} rows new, then re-sent): "
        f"{', '.join(f'{t:.0f}' for t in timings)} ms; marks {marks[0]}; statements {statements}"
    )


def balance_phase(
    label: str, tenant: Any, fleet: Fleet, control: "Control", results: Results, args: argparse.Namespace
) -> None:
    """Balancing runs of both sites, interleaved with the no-history control."""
    # balancing runs (readings are fresh: topped up first), interleaved with the no-history control
    for slug, size, *_ in BALANCE_SITES:
        span = fleet.stored[slug]
        assert span is not None  # noqa: S101
        now = floor_to(time.time(), STEP_S)
        if span[1] < now:
            ingest(fleet, fleet.of(slug), span[1] + STEP_S, now + STEP_S)
            span[1] = now
        control_fresh(control, now)
        load = os.getloadavg()[0]
        (timings, control_ms), pushes, solve_ms = balance_measure([tenant, control.tenant], slug, args.runs)
        median, control_median = statistics.median(timings), statistics.median(control_ms)
        results.set(
            f"balance_{slug}",
            label,
            median,
            pushes=pushes,
            solve_ms=round(solve_ms, 2),
            runs_ms=[round(t, 1) for t in timings],
            load_avg=round(load, 1),
        )
        results.set(f"balance_{slug}_p95", label, percentile(timings, 0.95))
        results.set(
            f"balance_{slug}_control",
            label,
            median / control_median,
            control_median_ms=round(control_median, 1),
            control_runs_ms=[round(t, 1) for t in control_ms],
        )
        log(
            f"balance_site {size} chargers: median {median:.1f} ms, p95 {percentile(timings, 0.95):.1f} ms "
            f"({args.runs} runs, {pushes} pushes each, solve {solve_ms:.1f} ms); no-history control in the same "
            f"minutes {control_median:.1f} ms: {median / control_median:.2f}x; load average {load:.1f}"
        )


def api_measure(label: str, fleet: Fleet, results: Results, api: Any) -> None:
    """The readings API: a charger's page 1, a later page through the cursor, the organisation's last day."""
    cp = fleet.of("s100")[0].cp
    url = f"/api/v1/readings/?charger={cp}"
    timings, response = http_get(api, url, API_REPEATS)
    results.set("api_charger_p1", label, statistics.median(timings), items=len(response.json()["results"]))
    page, later = 1, url
    body = response.json()
    while body.get("next") and page < LATER_PAGE:
        later = body["next"].split("://", 1)[-1].split("/", 1)[-1]
        later = "/" + later
        body = api.get(later).json()
        page += 1
    timings_later, response = http_get(api, later, API_REPEATS)
    results.set("api_charger_later", label, statistics.median(timings_later), page=page, items=len(body["results"]))
    timings_all, response = http_get(api, "/api/v1/readings/", API_REPEATS)
    results.set("api_tenant_p1", label, statistics.median(timings_all), items=len(response.json()["results"]))
    log(
        f"readings API: charger page 1 {statistics.median(timings):.1f} ms, page {page} "
        f"{statistics.median(timings_later):.1f} ms, organisation's last day page 1 "
        f"{statistics.median(timings_all):.1f} ms"
    )


def chart_measure(label: str, results: Results, portal: Any) -> None:
    """The portal's site chart over its longest range."""
    for slug, size, *_ in BALANCE_SITES:
        timings, response = http_get(portal, f"/sites/{slug}/chart.json?range=month", CHART_REPEATS)
        kb = len(response.content) / 1000
        points = len(json.loads(response.content)["data"]["values"])
        results.set(f"chart_{slug}", label, statistics.median(timings), points=points)
        results.set(f"chart_{slug}_kb", label, kb)
        log(f"site chart, month, {size} chargers: {statistics.median(timings):.0f} ms, {kb:,.0f} KB, {points:,} points")


def rebuild_day(label: str, days: float, fleet: Fleet, results: Results, start: int, report_chargers: int) -> None:
    """``intervals_rebuild`` of one whole UTC day of the 20-charger site, 2 days before the start."""
    from balancing.models import Site
    from billing.interval_rollup import intervals_rebuild

    if days < 3:
        results.set("rebuild_day", label, None)
        results.set("rebuild_month_est", label, None)
        return
    day = floor_to(start - 2 * DAY_S, DAY_S)
    site = Site.objects.get(slug="s20")
    timings = []
    written = 0
    for _ in range(2):
        ms, written = timed(partial(intervals_rebuild, site=site, start=at(day), end=at(day + DAY_S)))
        timings.append(ms)
    best = min(timings)
    chargers = len(fleet.of("s20"))
    readings = chargers * DAY_S // STEP_S
    results.set("rebuild_day", label, best, runs_ms=[round(t) for t in timings], readings=readings, written=written)
    # the monthly task rebuilds every site's month first: 30 days of 10-s readings per charger
    month_s = best / 1000 / chargers * report_chargers * 30
    results.set("rebuild_month_est", label, month_s)
    log(
        f"intervals_rebuild, 1 day x {chargers} chargers ({readings:,} readings): {best / 1000:.2f} s; "
        f"a month of {report_chargers:,} chargers at that rate: ~{month_s / 60:.0f} min"
    )


def storage(label: str, schema: str, results: Results) -> None:
    """Bytes of the readings' partitions (heap, TOAST, indexes) per row and per value; runs and pushes."""
    from django.db import connection

    from chargepoint.partitions import partitions_list

    with connection.cursor() as cursor:
        total = rows = indexes = 0
        per_partition = {}
        for name, _ in partitions_list():
            relation = f'"{schema}".{name}'
            cursor.execute(
                f"SELECT pg_total_relation_size(%s), pg_indexes_size(%s), count(*) FROM {relation}",  # noqa: S608
                [relation, relation],
            )
            size, index_size, count = cursor.fetchone()
            per_partition[name] = {"bytes": size, "index_bytes": index_size, "rows": count}
            total, rows, indexes = total + size, rows + count, indexes + index_size
        sizes = {}
        for table in ("balancing_balancingrun", "balancing_profilepush"):
            relation = f'"{schema}".{table}'
            cursor.execute(f"SELECT pg_total_relation_size(%s), count(*) FROM {relation}", [relation])  # noqa: S608
            sizes[table] = cursor.fetchone()
        # a run's row (heap and TOAST, compressed) by site: it grows with the site's chargers
        cursor.execute(
            f'SELECT s.slug, count(*), avg(pg_column_size(r.*))::int FROM "{schema}".balancing_balancingrun r '  # noqa: S608
            f'JOIN "{schema}".balancing_site s ON s.id = r.site_id GROUP BY s.slug ORDER BY s.slug'
        )
        run_rows = {slug: {"runs": count, "row_bytes": size} for slug, count, size in cursor.fetchall()}
    per_row = total / rows if rows else None
    results.set(
        "bytes_per_row",
        label,
        per_row,
        table_bytes_per_row=round((total - indexes) / rows, 1) if rows else None,
        index_bytes_per_row=round(indexes / rows, 1) if rows else None,
        partitions=per_partition,
    )
    results.set("bytes_per_value", label, per_row / VALUES_PER_READING if per_row else None)
    results.set("mb_per_charger_month", label, per_row * 30 * DAY_S / STEP_S / 1e6 if per_row else None)
    results.set("readings_total", label, rows, bytes=total)
    run_bytes, runs = sizes["balancing_balancingrun"]
    push_bytes, pushes = sizes["balancing_profilepush"]
    results.set(
        "bytes_per_run", label, run_bytes / runs if runs else None, rows=runs, bytes=run_bytes, by_site=run_rows
    )
    results.set("bytes_per_push", label, push_bytes / pushes if pushes else None, rows=pushes, bytes=push_bytes)
    shares = ""
    if per_row:
        shares = (
            f"{per_row:.0f} B per row ({indexes / rows:.0f} B of it indexes), "
            f"{per_row / VALUES_PER_READING:.1f} B per value; "
        )
    log(
        f"storage: {rows:,} reading rows, {total / 1e6:,.0f} MB: {shares}"
        f"{runs:,} runs at {run_bytes / max(runs, 1):,.0f} B, {pushes:,} pushes at {push_bytes / max(pushes, 1):,.0f} B"
    )


# -- many organisations -------------------------------------------------------------------------


def many_tenants(args: argparse.Namespace, results: Results) -> None:
    """``migrate_schemas`` with nothing to do and one beat sweep over ``--tenants`` organisations."""
    from django.core.management import call_command
    from django_tenants.utils import tenant_context

    from balancing.models import Site
    from balancing.tasks import sweep_all_sites
    from evplatform.redis import get_redis
    from tenants.models import Domain, Tenant

    log(f"=== {args.tenants} organisations x {args.tenant_sites} sites ===")
    ms, template = timed(lambda: tenant_make("sweep-000"))
    results.once["tenant_create (normal path, migrations)"] = f"{ms / 1000:.1f} s per organisation"
    log(f"tenant_create of the first organisation (runs every migration): {ms / 1000:.1f} s")
    with tenant_context(template):
        for s in range(args.tenant_sites):
            Site.objects.create(slug=f"site-{s}", name=f"Site {s}", limit_a=Decimal(63), demand_cap_kw=Decimal(20))
    clones = [f"sweep_{i:03d}" for i in range(1, args.tenants)]
    ms, how = timed(lambda: schemas_clone(template.schema_name, clones))
    log(f"{len(clones)} copies of its schema ({how}) in {ms / 1000:.0f} s")
    results.once["schema copies"] = f"{len(clones)} in {ms / 1000:.0f} s ({how})"
    made = Tenant.objects.bulk_create(
        [Tenant(slug=name.replace("_", "-"), name=name, schema_name=name) for name in clones]
    )
    Domain.objects.bulk_create([Domain(domain=f"{t.slug}.localhost", tenant=t, is_primary=True) for t in made])
    schemas = Tenant.objects.count()
    log(f"migrate_schemas with nothing to do, {schemas - 1} tenant schemas and public ...")
    ms, _ = timed(lambda: call_command("migrate_schemas", interactive=False, verbosity=0))
    results.once["migrate_schemas, nothing to do"] = (
        f"{ms / 1000:.1f} s for {schemas - 1} tenant schemas + public ({ms / schemas:.0f} ms per schema)"
    )
    log(f"migrate_schemas: {ms / 1000:.1f} s")
    redis = get_redis()
    for key in redis.scan_iter(match=f"evp{PREFIX}:*:rebalance-pending:*", count=1000):
        redis.delete(key)
    ms, count = timed(sweep_all_sites)
    tenants_active = Tenant.objects.exclude(schema_name="public").filter(is_active=True).count()
    results.once["beat sweep (sweep_all_sites), all requests published"] = (
        f"{ms / 1000:.2f} s for {count} sites of {tenants_active} organisations ({ms / max(count, 1):.2f} ms per site)"
    )
    log(f"sweep_all_sites: {count} sites of {tenants_active} organisations published in {ms / 1000:.2f} s")


def schemas_clone(template: str, names: list[str]) -> str:
    """Copies of the template schema under ``names``: pg_dump restored in two sessions, else clone_schema."""
    pg_dump, psql = shutil.which("pg_dump"), shutil.which("psql")
    if pg_dump is None or psql is None:
        from django_tenants.clone import CloneSchema

        for name in names:
            CloneSchema().clone_schema(template, name)
        return "django-tenants clone_schema"
    dump = subprocess.run(  # noqa: S603 - our own tools and database
        [pg_dump, "--schema", template, "--no-owner", "--no-privileges", "-d", DATABASE_URL],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    halves = [names[0::2], names[1::2]]
    errors: list[str] = []

    def restore(part: list[str]) -> None:
        script = io.StringIO()
        for name in part:
            script.write("BEGIN;\n" + dump.replace(template, name) + "\nCOMMIT;\n")
        done = subprocess.run(  # noqa: S603
            [psql, "-q", "-v", "ON_ERROR_STOP=1", "-d", DATABASE_URL],
            input=script.getvalue(),
            capture_output=True,
            text=True,
        )
        if done.returncode:
            errors.append(done.stderr[-2000:])

    threads = [threading.Thread(target=restore, args=(part,)) for part in halves]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError("restoring the schema copies failed: " + "\n".join(errors))
    return "pg_dump of the schema restored under new names, 2 sessions"


def cleanup(*, keep_db: bool) -> None:
    """Queues, Redis keys and (unless kept) the database of the run go."""
    from evplatform.celery import QUEUES, app, queue_name
    from evplatform.redis import get_redis

    with contextlib.suppress(Exception), app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in QUEUES:
            with contextlib.suppress(Exception):
                channel.queue_delete(queue_name(queue))
        with contextlib.suppress(Exception):
            channel.exchange_delete(f"{PREFIX}evplatform")
    with contextlib.suppress(Exception):
        redis = get_redis()
        for pattern in (f"evp{PREFIX}:*", f"{PREFIX.rstrip('.')}:*"):
            for key in redis.scan_iter(match=pattern, count=1000):
                redis.delete(key)
    if not keep_db:
        drop_database()
        log(f"database {DB_NAME} dropped")


if __name__ == "__main__":
    main()
