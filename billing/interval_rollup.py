"""Writes of billing's interval energy: the rollup of pending marks, and rebuilds from raw readings.

Schema: tenant. Each public function checks that a tenant schema is active.
"""

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from balancing.models import Site
from billing.bulk_reads import MICROS, RATING_FIELDS, READINGS, instant
from billing.intervals import DEFAULT_INTERVAL_MINUTES, EPOCH, interval_floor
from billing.models import IntervalEnergy
from billing.rollups import register_to_intervals
from billing.selectors import rating_kw, site_timezone
from billing.session_draws import sessions_draw_update
from billing.tariffs import month_bounds
from chargepoint.models import ChargingStation, RollupPending
from chargepoint.partitions import partitions_list
from chargepoint.readings import PENDING_GRAIN
from evplatform.services import active_schema, require_tenant_schema

# Pending marks (station, 15-minute interval, session) the rollup takes per transaction.
ROLLUP_BATCH_MARKS = 5_000
# Marks of one station further apart than this are rebuilt as separate ranges.
ROLLUP_GAP = timedelta(hours=1)
# How far the rollup looks before and after a range for the register readings around it
# (a charger silent longer than this has its energy start again at its next reading).
ROLLUP_EDGE = timedelta(days=2)
SPAN_CHUNK = 100  # station ranges whose readings are read (and intervals written) with one query each


@dataclass
class RollupOutcome:
    marks: int = 0
    stations: int = 0
    intervals: int = 0
    sessions: int = 0
    sites: set[int] = field(default_factory=set)


def intervals_lock_key(*, schema: str, site_id: int) -> int:
    """The advisory lock key (signed 64-bit) under which one site's interval energy is rewritten."""
    digest = hashlib.blake2b(f"evp:billing-intervals:{schema}:{site_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _sites_lock(site_ids: Iterable[int]) -> None:
    """Hold each site's interval lock until the transaction ends (ascending ids: no deadlock).

    So two rollups, or a rollup and a month's rebuild, never rewrite one site's intervals (nor
    fold into one session's draw) at the same time: the second reads what the first committed,
    instead of re-adding rows the first is adding (a unique violation that fails its batch),
    summing station rows it cannot see yet, or folding into a draw the first is rewriting (its
    readings would be lost). One statement: the locks are taken in the order of the array.
    """
    schema = active_schema()
    keys = [intervals_lock_key(schema=schema, site_id=site_id) for site_id in sorted(set(site_ids))]
    if not keys:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(t.key) FROM unnest(%s::bigint[]) WITH ORDINALITY AS t(key, n) ORDER BY t.n",
            [keys],
        )


_INTERVALS = IntervalEnergy._meta.db_table
_TICK = timedelta(microseconds=1)  # PostgreSQL's resolution: "> t" is ">= t + _TICK"
_STEP = timedelta(minutes=DEFAULT_INTERVAL_MINUTES)


def _oltp() -> None:
    """No JIT compiling for the rest of the transaction.

    The planner prices a loop over a month's partition by that partition's size; past
    ``jit_above_cost`` PostgreSQL would spend about a second compiling a plan that reads a
    few thousand rows in milliseconds.
    """
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL jit = off")


Probe = tuple[int, datetime, datetime, bool]  # station, [lo, hi), the latest (else the earliest)


def _register_probes(probes: list[Probe]) -> list[datetime | None]:
    """For each (station, lo, hi, last): the time of its latest (``last``) or earliest register
    reading in [lo, hi), or None. One statement for all, each probe a short range of the key."""
    if not probes:
        return []
    stations, lows, highs, lasts = (list(column) for column in zip(*probes, strict=True))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT CASE WHEN p.last THEN (
                SELECT r."sampled_at" FROM "{READINGS}" r
                WHERE r.station_id = p.station AND r."sampled_at" >= p.lo AND r."sampled_at" < p.hi
                  AND r.energy_wh IS NOT NULL
                ORDER BY r."sampled_at" DESC LIMIT 1
            ) ELSE (
                SELECT r."sampled_at" FROM "{READINGS}" r
                WHERE r.station_id = p.station AND r."sampled_at" >= p.lo AND r."sampled_at" < p.hi
                  AND r.energy_wh IS NOT NULL
                ORDER BY r."sampled_at" LIMIT 1
            ) END
            FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[], %s::boolean[])
                WITH ORDINALITY AS p(station, lo, hi, last, n)
            ORDER BY p.n
            """,  # noqa: S608 - the table name is the model's own
            [stations, lows, highs, lasts],
        )
        return [row[0] for row in cursor.fetchall()]


def _before(station_id: int, at: datetime) -> Probe:
    """The station's last register reading before ``at``, at most ``ROLLUP_EDGE`` before."""
    return station_id, at - ROLLUP_EDGE, at, True


def _after(station_id: int, at: datetime) -> Probe:
    """Its first register reading after ``at``, at most ``ROLLUP_EDGE`` after."""
    return station_id, at + _TICK, at + ROLLUP_EDGE + _TICK, False


@dataclass
class _Span:
    """One station's readings range [lo, hi] to recompute, and what the lookups made of it:
    the intervals [start, end) rewritten (none when ``start == end``) from the register
    readings in [load_from, load_to]."""

    station: ChargingStation
    lo: datetime
    hi: datetime
    start: datetime = EPOCH
    end: datetime = EPOCH
    load_from: datetime | None = None
    load_to: datetime = EPOCH
    first: datetime | None = None


def _spans_plan(spans: list[_Span]) -> None:
    """Set each span's range and readings to load: the lookups of ``_station_rebuild`` for all
    spans at once, a statement per round (two usually; three more where a station has no
    register reading within ``ROLLUP_EDGE`` before the range).

    The range is widened to the register readings just around [lo, hi]. With no register
    reading within ``ROLLUP_EDGE`` before it, its first reading starts the series afresh, unless
    the station has interval energy before that reading: then the readings behind that energy
    are out of reach (dropped with their month by the retention, or a silence longer than
    ``ROLLUP_EDGE`` that a month's rebuild spread), and those intervals and the first reading's
    own keep what they have; the range begins after it. A range without any register reading
    is left as it is.
    """
    found = _register_probes([p for s in spans for p in (_before(s.station.pk, s.lo), _after(s.station.pk, s.hi))])
    for n, span in enumerate(spans):
        before, after = found[2 * n], found[2 * n + 1]
        span.start = interval_floor(before or span.lo)
        span.end = interval_floor(after or span.hi) + _STEP
    found = _register_probes([p for s in spans for p in (_before(s.station.pk, s.start), _after(s.station.pk, s.end))])
    for n, span in enumerate(spans):
        span.load_from, span.load_to = found[2 * n], found[2 * n + 1] or span.end
    unsure = [span for span in spans if span.load_from is None]
    if not unsure:
        return
    found = _register_probes([(s.station.pk, s.start, s.end, False) for s in unsure])
    for span, first in zip(unsure, found, strict=True):
        span.first = first
        if first is None:
            span.end = span.start  # no register reading: nothing to recompute
    unsure = [span for span in unsure if span.first is not None]
    earlier = _intervals_before_first(unsure)
    moved = []
    for span in unsure:
        if span in earlier and span.first is not None:
            span.start = interval_floor(span.first) + _STEP
            if span.start >= span.end:
                span.end = span.start
            else:
                moved.append(span)
    for span, load_from in zip(moved, _register_probes([_before(s.station.pk, s.start) for s in moved]), strict=True):
        span.load_from = load_from
    for span in spans:
        span.load_from = span.load_from or span.start


def _intervals_before_first(spans: list[_Span]) -> list[_Span]:
    """The spans whose station has interval energy in [start - ``ROLLUP_EDGE``, its first reading's interval)."""
    if not spans:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT p.n FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[], %s::timestamptz[])
                WITH ORDINALITY AS p(site, station, lo, hi, n)
            WHERE EXISTS (
                SELECT 1 FROM {_INTERVALS} e
                WHERE e.site_id = p.site AND e.station_id = p.station AND e.start >= p.lo AND e.start < p.hi
            )
            """,  # noqa: S608 - the table name is the model's own
            [
                [s.station.site_id for s in spans],
                [s.station.pk for s in spans],
                [s.start - ROLLUP_EDGE for s in spans],
                [interval_floor(s.first or s.start) for s in spans],
            ],
        )
        return [spans[n - 1] for (n,) in cursor.fetchall()]


def _spans_registers(spans: list[_Span]) -> list[list[tuple[int, datetime, float]]]:
    """Each span's register readings in [load_from, load_to] as (connector, time, Wh); one statement."""
    out: list[list[tuple[int, datetime, float]]] = [[] for _ in spans]
    if not spans:
        return out
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT p.n, r.connector_no, {MICROS}, r.energy_wh
            FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[]) WITH ORDINALITY AS p(station, lo, hi, n)
            CROSS JOIN LATERAL (
                SELECT r.connector_no, r."sampled_at", r.energy_wh FROM "{READINGS}" r
                WHERE r.station_id = p.station AND r."sampled_at" >= p.lo AND r."sampled_at" <= p.hi
                  AND r.energy_wh IS NOT NULL
                OFFSET 0
            ) r
            """,  # noqa: S608 - the table name is the model's own
            [[s.station.pk for s in spans], [s.load_from for s in spans], [s.load_to for s in spans]],
        )
        for n, connector_no, micros, wh in cursor.fetchall():
            out[n - 1].append((connector_no, instant(micros), wh))
    return out


def _span_intervals(span: _Span, rows: list[tuple[int, datetime, float]]) -> dict[datetime, tuple[Decimal, int]]:
    """The span's intervals in [start, end) that have energy or a reset: start -> (kWh, resets)."""
    by_connector: dict[int, list[tuple[datetime, Decimal]]] = defaultdict(list)
    for connector_no, at, value in rows:
        # repr: the shortest decimal that is this float, i.e. the value the charger sent
        by_connector[connector_no].append((at, Decimal(repr(value))))
    if len(by_connector) > 1:
        by_connector.pop(0, None)  # the outlets' own registers, not the station's main meter too
    energy: dict[datetime, Decimal] = defaultdict(Decimal)
    resets: dict[datetime, int] = defaultdict(int)
    max_kw = rating_kw(span.station, span.station.site.voltage_v)
    for readings in by_connector.values():
        rollup = register_to_intervals(readings, max_power_kw=max_kw)
        for at, kwh in rollup.intervals_kwh.items():
            energy[at] += kwh
        for at, count in rollup.resets.items():
            resets[at] += count
    return {
        at: (max(energy.get(at, Decimal(0)), Decimal(0)), resets.get(at, 0))
        for at in sorted(set(energy) | set(resets))
        if span.start <= at < span.end
    }


def _spans_rebuild(spans: list[_Span]) -> tuple[int, dict[int, list[tuple[datetime, datetime]]]]:
    """Recompute the station intervals of ``spans``: the lookups, one read of their register
    readings, one delete and one insert for all. Returns the rows written and the ranges
    rewritten per site (for the site totals).

    A station's spans are taken in order, as if rebuilt one after the other: where two ranges
    overlap (each is widened to the readings around it), the later one's rows stand.
    """
    _spans_plan(spans)
    spans = [span for span in spans if span.start < span.end]
    rows: dict[int, dict[datetime, tuple[Decimal, int]]] = defaultdict(dict)
    site_ranges: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    for span, readings in zip(spans, _spans_registers(spans), strict=True):
        station_rows = rows[span.station.pk]
        for at in [at for at in station_rows if span.start <= at < span.end]:
            del station_rows[at]
        station_rows.update(_span_intervals(span, readings))
        site_ranges[span.station.site_id].append((span.start, span.end))
    if not spans:
        return 0, site_ranges
    with connection.cursor() as cursor:  # one statement, not Django's select and signal per row
        cursor.execute(
            f"""
            DELETE FROM {_INTERVALS} e
            USING unnest(%s::bigint[], %s::bigint[], %s::timestamptz[], %s::timestamptz[]) AS p(site, station, lo, hi)
            WHERE e.site_id = p.site AND e.station_id = p.station AND e.start >= p.lo AND e.start < p.hi
            """,  # noqa: S608 - the table name is the model's own
            [
                [s.station.site_id for s in spans],
                [s.station.pk for s in spans],
                [s.start for s in spans],
                [s.end for s in spans],
            ],
        )
    sites = {span.station.pk: span.station.site_id for span in spans}
    written = [
        IntervalEnergy(
            site_id=sites[station_id],
            station_id=station_id,
            start=at,
            minutes=DEFAULT_INTERVAL_MINUTES,
            energy_kwh=kwh,
            resets=resets,
        )
        for station_id, station_rows in rows.items()
        for at, (kwh, resets) in station_rows.items()
    ]
    IntervalEnergy.objects.bulk_create(written, batch_size=2000)
    return len(written), site_ranges


def _site_totals_rebuild(site_ranges: dict[int, list[tuple[datetime, datetime]]]) -> None:
    """Site rows (station empty) = sum of the station rows, over each site's ranges [start, end).

    One delete and one insert for all sites.
    """
    ranges = [(site_id, lo, hi) for site_id, spans in site_ranges.items() for lo, hi in _merged(spans)]
    if not ranges:
        return
    params: list[list[Any]] = [
        [site_id for site_id, _, _ in ranges],
        [lo for _, lo, _ in ranges],
        [hi for _, _, hi in ranges],
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            DELETE FROM {_INTERVALS} e
            USING unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[]) AS p(site, lo, hi)
            WHERE e.site_id = p.site AND e.station_id IS NULL AND e.start >= p.lo AND e.start < p.hi
            """,  # noqa: S608 - the table name is the model's own
            params,
        )
        cursor.execute(
            f"""
            INSERT INTO {_INTERVALS} (site_id, station_id, start, minutes, energy_kwh, resets, updated_at)
            SELECT e.site_id, NULL, e.start, MIN(e.minutes), SUM(e.energy_kwh), SUM(e.resets), now()
            FROM {_INTERVALS} e
            JOIN unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[]) AS p(site, lo, hi)
              ON e.site_id = p.site AND e.start >= p.lo AND e.start < p.hi
            WHERE e.station_id IS NOT NULL
            GROUP BY e.site_id, e.start
            """,  # noqa: S608 - the table name is the model's own
            params,
        )


def _merged(ranges: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Ranges [start, end) with the overlapping and touching ones joined, in order."""
    out: list[tuple[datetime, datetime]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


# --- the rollup -----------------------------------------------------------------------------


def _marks_take(limit: int) -> list[tuple[int, int, datetime, int | None, int]]:
    """Up to ``limit`` pending marks, locked: (id, station, interval start, session, site).

    Marks another rollup holds are skipped, and so are those of a station an ingest transaction
    holds (``telemetry_apply`` locks its stations FOR UPDATE while it writes): its readings are
    not visible until it commits, and the mark it wrote for them may be one already pending
    (the insert ignores a duplicate). Taking that mark now would read the interval without
    them and delete the only sign that it changed; the next run takes it instead. The station
    rows stay share-locked (FOR KEY SHARE, as the foreign keys of the rows written take them
    anyway) until the batch commits.
    """
    pending, stations = RollupPending._meta.db_table, ChargingStation._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT p.id, p.station_id, p.interval_start, p.session_id, s.site_id
            FROM {pending} p JOIN {stations} s ON s.id = p.station_id
            ORDER BY p.id
            LIMIT %s
            FOR UPDATE OF p SKIP LOCKED
            FOR KEY SHARE OF s SKIP LOCKED
            """,  # noqa: S608 - the table names are the models' own
            [limit],
        )
        return list(cursor.fetchall())


def intervals_roll_up(*, batch_size: int = ROLLUP_BATCH_MARKS, max_batches: int | None = None) -> RollupOutcome:
    """Fold the readings stored since the last run into interval energy and session draws.

    Reads the pending marks the ingest left (station, 15-minute interval, session), rebuilds
    just those intervals and folds the new readings of those sessions, and deletes the marks,
    in one transaction per batch: a failed batch leaves its marks for the next run. Safe to run
    concurrently (marks are taken with SKIP LOCKED, a site's intervals and draws are rewritten
    under its lock) and again (it recomputes, never adds). A mark of a station being written to
    right now waits for the next run (``_marks_take``), so a reading committed late is rolled
    up with its mark. A batch takes about fifteen statements however many stations it holds.
    """
    require_tenant_schema("intervals_roll_up")
    outcome = RollupOutcome()
    batches = 0
    now = timezone.now()
    while max_batches is None or batches < max_batches:
        batches += 1
        with transaction.atomic():
            marks = _marks_take(batch_size)
            if not marks:
                break
            _oltp()
            _sites_lock(site_id for *_, site_id in marks)
            starts: dict[int, list[datetime]] = defaultdict(list)
            since: dict[int, datetime] = {}
            for _, station_id, start, session_id, _ in marks:
                starts[station_id].append(start)
                if session_id is not None:
                    since[session_id] = min(since.get(session_id, start), start)
            outcome.intervals += _stations_rebuild(_spans(starts), outcome)
            outcome.sessions += sessions_draw_update(since, now)
            outcome.marks += len(marks)
            with connection.cursor() as cursor:  # one statement, not Django's select and signal per row
                cursor.execute(
                    f"DELETE FROM {RollupPending._meta.db_table} WHERE id = ANY(%s)",  # noqa: S608 - our name
                    [[mark[0] for mark in marks]],
                )
        if len(marks) < batch_size:
            break
    return outcome


def _spans(starts: dict[int, list[datetime]]) -> list[tuple[int, datetime, datetime]]:
    """Each station's marked intervals as ranges [lo, hi]; marks over ``ROLLUP_GAP`` apart split."""
    spans = []
    for station_id, times in starts.items():
        times.sort()
        lo = hi = times[0]
        for at in times[1:]:
            if at - hi > ROLLUP_GAP:
                spans.append((station_id, lo, hi + PENDING_GRAIN))
                lo = at
            hi = at
        spans.append((station_id, lo, hi + PENDING_GRAIN))
    return spans


def _stations_rebuild(spans: list[tuple[int, datetime, datetime]], outcome: RollupOutcome) -> int:
    """Rebuild the spans, ``SPAN_CHUNK`` at a time, then the site totals over what was rewritten."""
    stations = (
        ChargingStation.objects.select_related("site")
        .only("site_id", *(name.removeprefix("station__") for name in RATING_FIELDS))
        .in_bulk({station_id for station_id, _, _ in spans})
    )
    kept = [_Span(stations[station_id], lo, hi) for station_id, lo, hi in spans if station_id in stations]
    # (a station deleted meanwhile took its marks with it)
    site_ranges: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    written = 0
    for at in range(0, len(kept), SPAN_CHUNK):
        count, ranges = _spans_rebuild(kept[at : at + SPAN_CHUNK])
        written += count
        for site_id, site_spans in ranges.items():
            site_ranges[site_id] += site_spans
    outcome.stations += len(stations)
    outcome.sites.update(station.site_id for station in stations.values())
    _site_totals_rebuild(site_ranges)
    return written


def raw_readings_since() -> datetime | None:
    """The first instant raw readings are kept for (the oldest partition's month), or None."""
    kept = partitions_list()
    return kept[0][1] if kept else None


def intervals_rebuild(*, site: Site, start: datetime, end: datetime) -> int:
    """Recompute every interval of the site in [start, end) from the raw readings.

    An operator's repair (``manage.py rebuild_intervals``): the rollup keeps the intervals up
    to date from the ingest's pending marks. Only where raw readings are still kept: the part
    of the range before the oldest partition (dropped after the retention period) keeps its
    intervals as they were rolled up, and so do the intervals just after it that drew on
    readings now gone (``_spans_plan``). A station at a time, so a month of readings is never
    in memory at once.
    """
    require_tenant_schema("intervals_rebuild")
    written = 0
    kept_since = raw_readings_since()
    if kept_since is None or end <= kept_since:
        return 0
    start = max(start, kept_since)
    with transaction.atomic():
        _oltp()
        _sites_lock([site.pk])
        site_ranges: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
        for station in ChargingStation.objects.filter(site=site).select_related("site"):
            count, ranges = _spans_rebuild([_Span(station, start, end - _TICK)])
            written += count
            site_ranges[site.pk] += ranges.get(site.pk, [])
        _site_totals_rebuild(site_ranges)
    return written


def intervals_rebuild_month(*, year: int, month: int, sites: Iterable[Site] | None = None) -> int:
    """Recompute the local month of every site (or of ``sites``) from the raw readings."""
    total = 0
    for site in Site.objects.all() if sites is None else sites:
        start, end = month_bounds(year, month, site_timezone(site))
        total += intervals_rebuild(site=site, start=start, end=end)
    return total
