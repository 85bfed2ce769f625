"""Writes of billing: tariff versions, interval rollups, session draws, savings reports.

Schema: tenant. Each function checks that a tenant schema is active.
"""

import hashlib
import json
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from balancing.models import ProfilePush, Site
from billing.intervals import DEFAULT_INTERVAL_MINUTES, EPOCH, interval_floor
from billing.models import (
    IntervalEnergy,
    SavingsReport,
    SavingsReportFile,
    SessionDraw,
    SiteMonthDemand,
    Tariff,
)
from billing.reports import FORMATS, render
from billing.reports.builder import report_data_build
from billing.rollups import register_to_intervals
from billing.selectors import rating_kw, report_next_version, site_timezone
from billing.tariffs import RECORD_MAX_BYTES, TariffError, month_bounds, tariff_from_urdb, tariff_json_load
from chargepoint.models import ChargingSession, ChargingStation, MeterReading, RollupPending
from chargepoint.partitions import partitions_list
from chargepoint.readings import PENDING_GRAIN
from evplatform.services import Outcome, active_schema, require_tenant_schema

# Pending marks (station, 15-minute interval, session) the rollup takes per transaction.
ROLLUP_BATCH_MARKS = 5_000
# Marks of one station further apart than this are rebuilt as separate ranges.
ROLLUP_GAP = timedelta(hours=1)
# How far the rollup looks before and after a range for the register readings around it
# (a charger silent longer than this has its energy start again at its next reading).
ROLLUP_EDGE = timedelta(days=2)
# The pushes that tell whether a session's car was held by our limit: those answered from
# this long before the session started (the limit in force when it began; a transaction's
# limit is pushed again long before this: its profile is renewed within minutes).
SESSION_PUSH_LOOKBACK = timedelta(days=1)
# A session's readings are read this much before its start and after its stop (or now): a
# charger's clock and the order of its messages date a few of them just outside the session.
SESSION_READING_SLACK = timedelta(minutes=15)
SESSION_CHUNK = 500  # sessions whose readings and pushes are read with one query each
SPAN_CHUNK = 100  # station ranges whose readings are read (and intervals written) with one query each
DRAW_QUANTUM = Decimal("0.001")  # session draws: kW and kWh to three places, rounded half up
CAPPED_MARGIN_A = Decimal("1")  # a draw within 1 A of the limit in force is held by it
REPORT_VERSION_RETRIES = 3


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


# --- tariffs ------------------------------------------------------------------------------


def tariff_import(*, site: Site, record: dict[str, Any], valid_from: date, actor: str = "") -> Tariff:
    """Store a URDB v7 record as the site's next tariff version, valid from ``valid_from``.

    The version before it (if open) now ends where this one begins. Nothing is written when
    the record does not parse (a ``ValidationError`` names the field).
    """
    return tariff_version_import(site=site, record=record, valid_from=valid_from, actor=actor).obj


def tariff_file_import(*, site: Site, file: File, valid_from: date, actor: str = "") -> Tariff:
    """``tariff_import`` of an uploaded URDB v7 record's JSON file (the portal's tariff upload).

    ``TariffError`` (path ``record``) when the file is unfit before it is a record: larger than
    ``RECORD_MAX_BYTES`` (refused unread) or not JSON that ``tariff_json_load`` takes; a
    ``ValidationError`` as ``tariff_import`` when the record is not a tariff or comes too early.
    """
    if file.size > RECORD_MAX_BYTES:
        raise TariffError("record", f"the file is larger than {RECORD_MAX_BYTES // 1024} KiB")
    record = tariff_json_load(file.read())
    return tariff_import(site=site, record=record, valid_from=valid_from, actor=actor)


def tariff_version_import(*, site: Site, record: dict[str, Any], valid_from: date, actor: str = "") -> Outcome[Tariff]:
    """``tariff_import`` that says whether a version was made: the same record from the same day
    as the site's latest version is that version again (``created`` false, nothing written)."""
    require_tenant_schema("tariff_import")
    try:
        spec = tariff_from_urdb(record)
    except TariffError as exc:
        raise ValidationError({exc.path: exc.problem}) from exc
    if isinstance(record, dict) and "items" in record and "energyratestructure" not in record:
        record = record["items"][0]
    record_sha256 = _sha256(canonical_json(record))
    with transaction.atomic():
        # The site's row, so that two imports of a site's first version do not both make version 1.
        Site.objects.select_for_update().filter(pk=site.pk).first()
        versions = Tariff.objects.select_for_update().filter(site=site).order_by("-version")
        latest = versions.first()
        if latest is not None and latest.valid_from == valid_from and latest.record_sha256 == record_sha256:
            return Outcome(latest, False)
        if latest is not None and latest.valid_from >= valid_from:
            raise ValidationError(
                {"valid_from": f"must be after {latest.valid_from} (version {latest.version} begins then)"}
            )
        if latest is not None and (latest.valid_until is None or latest.valid_until > valid_from):
            latest.valid_until = valid_from
            latest.save(update_fields=["valid_until"])
        tariff = Tariff.objects.create(
            site=site,
            version=(latest.version + 1) if latest else 1,
            name=spec.name[:200],
            utility=spec.utility[:200],
            urdb_label=spec.label[:64],
            valid_from=valid_from,
            record=record,
            record_sha256=record_sha256,
            imported_by=actor,
        )
        if actor:
            from tenants.accounts.services import audit_record

            audit_record(
                actor=actor,
                action="import",
                object_type="tariff",
                object_id=tariff.pk,
                label=f"{site.name}: {tariff.name} v{tariff.version}",
                changes=[("valid_from", None, valid_from), ("record_sha256", None, tariff.record_sha256)],
            )
        return Outcome(tariff, True)


# --- rollups ------------------------------------------------------------------------------


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


# What the rollup needs of a station and its site (the rating and volts), and of a session draw.
_RATING_FIELDS = ("station__site_id", "station__max_current_a", "station__phases", "station__site__voltage_v")
_DRAW_FIELDS = ("observed_max_kw", "was_capped", "register_energy_kwh", "folded_until", "draw_source")
_READINGS = MeterReading._meta.db_table
_INTERVALS = IntervalEnergy._meta.db_table
_PUSHES = ProfilePush._meta.db_table
_TICK = timedelta(microseconds=1)  # PostgreSQL's resolution: "> t" is ">= t + _TICK"
_STEP = timedelta(minutes=DEFAULT_INTERVAL_MINUTES)
# Bulk reads of readings take their time as microseconds since the epoch (an integer, which the
# driver reads in C) rather than a timestamptz (which Django's loader parses in Python, ~10 us a
# row). Their LATERAL subqueries end in OFFSET 0 so that the planner keeps them as a loop of
# short key ranges instead of joining the whole table by hash.
_MICROS = '(extract(epoch FROM r."sampled_at") * 1000000)::bigint'


def _instant(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


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
                SELECT r."sampled_at" FROM "{_READINGS}" r
                WHERE r.station_id = p.station AND r."sampled_at" >= p.lo AND r."sampled_at" < p.hi
                  AND r.energy_wh IS NOT NULL
                ORDER BY r."sampled_at" DESC LIMIT 1
            ) ELSE (
                SELECT r."sampled_at" FROM "{_READINGS}" r
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
            SELECT p.n, r.connector_no, {_MICROS}, r.energy_wh
            FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[]) WITH ORDINALITY AS p(station, lo, hi, n)
            CROSS JOIN LATERAL (
                SELECT r.connector_no, r."sampled_at", r.energy_wh FROM "{_READINGS}" r
                WHERE r.station_id = p.station AND r."sampled_at" >= p.lo AND r."sampled_at" <= p.hi
                  AND r.energy_wh IS NOT NULL
                OFFSET 0
            ) r
            """,  # noqa: S608 - the table name is the model's own
            [[s.station.pk for s in spans], [s.load_from for s in spans], [s.load_to for s in spans]],
        )
        for n, connector_no, micros, wh in cursor.fetchall():
            out[n - 1].append((connector_no, _instant(micros), wh))
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


# --- session draws --------------------------------------------------------------------------


@dataclass
class _DrawFold:
    """A session's draw as folded so far; every figure only grows, so folding is idempotent.

    ``observed_kw`` and ``energy_kwh`` are kept as stored (rounded, the draw capped at the
    rating): rounding and capping keep the order, so the highest of rounded values is the
    rounded highest value, and folding readings in any order, or twice, gives what one pass
    over all of them gives.
    """

    observed_kw: Decimal | None = None
    capped: bool = False
    energy_kwh: Decimal | None = None
    source: str = SessionDraw.Source.NONE
    until: datetime | None = None

    @classmethod
    def of(cls, draw: SessionDraw) -> "_DrawFold":
        return cls(draw.observed_max_kw, draw.was_capped, draw.register_energy_kwh, draw.draw_source, draw.folded_until)


def _higher(a: Decimal | None, b: Decimal | None) -> Decimal | None:
    return b if a is None else a if b is None else max(a, b)


@dataclass
class _DrawWindow:
    """The readings of one session to fold: [since, until] of its station's key."""

    session: ChargingSession
    since: datetime
    until: datetime
    fold: _DrawFold


SampleRow = tuple[datetime, float | None, float | None, float | None]  # time, Wh, W, highest current A


def _sessions_draw_update(since: dict[int, datetime], now: datetime) -> int:
    """Fold the new readings of sessions into their draws (``SessionDraw``).

    ``since`` maps each session to the start of the earliest interval it has a pending mark
    for: its new readings (late ones included) are all at or after it. A draw read before
    (``folded_until`` set) gets the session's readings from there on, at most a quarter of an
    hour of them folded again (which changes nothing: see ``_DrawFold``); a new draw, one
    folded by an earlier version, or one whose readings must now be taken from power instead
    of currents is recomputed from the session's start. A session's readings are those of its
    station from its start to its stop (or now), ``SESSION_READING_SLACK`` wider; the pushes
    read are those of its connector answered since ``SESSION_PUSH_LOOKBACK`` before it began:
    the last one before the readings read, and those among them. The caller holds the sites'
    locks: two rollups never fold into one draw at once.

    A change of a station's rating or of its site's voltage applies to the readings folded
    after it.
    """
    ordered = sorted(since)
    return sum(
        _sessions_draw_chunk({pk: since[pk] for pk in ordered[at : at + SESSION_CHUNK]}, now)
        for at in range(0, len(ordered), SESSION_CHUNK)
    )


def _sessions_draw_chunk(since: dict[int, datetime], now: datetime) -> int:
    sessions = (
        ChargingSession.objects.filter(pk__in=list(since))
        .select_related("station__site")
        .only(
            "station_id",
            "connector_id",
            "started_at",
            "stopped_at",
            "meter_start_wh",
            *_RATING_FIELDS,
        )
    )
    drawn = {
        draw.session_id: draw
        for draw in SessionDraw.objects.filter(session_id__in=list(since)).only(*_DRAW_FIELDS, "session_id")
    }
    windows = []
    for session in sessions:
        first = session.started_at - SESSION_READING_SLACK
        until = (session.stopped_at or now) + SESSION_READING_SLACK
        draw = drawn.get(session.pk)
        if draw is not None and draw.folded_until is not None:
            windows.append(_DrawWindow(session, max(first, since[session.pk]), until, _DrawFold.of(draw)))
        else:
            windows.append(_DrawWindow(session, first, until, _DrawFold()))
    if not windows:
        return 0
    folded: list[_DrawWindow] = []
    while windows:
        again = []
        samples, pushes = _windows_samples(windows), _windows_pushes(windows)
        for window, rows, limits in zip(windows, samples, pushes, strict=True):
            if _draw_fold(window, rows, limits):
                folded.append(window)
            else:  # currents folded, power readings now: recomputed from the start, from power
                first = window.session.started_at - SESSION_READING_SLACK
                again.append(_DrawWindow(window.session, first, window.until, _DrawFold()))
        windows = again
    SessionDraw.objects.bulk_create(
        [
            SessionDraw(
                session_id=window.session.pk,
                observed_max_kw=window.fold.observed_kw,
                was_capped=window.fold.capped,
                register_energy_kwh=window.fold.energy_kwh,
                folded_until=window.fold.until,
                draw_source=window.fold.source,
            )
            for window in folded
        ],
        update_conflicts=True,
        unique_fields=["session"],
        update_fields=[
            "observed_max_kw",
            "was_capped",
            "register_energy_kwh",
            "folded_until",
            "draw_source",
            "updated_at",
        ],
    )
    return len(folded)


def _windows_open(windows: list[_DrawWindow]) -> list[tuple[int, _DrawWindow]]:
    """The windows with a range to read (``since <= until``), each with its place in ``windows``."""
    return [(n, w) for n, w in enumerate(windows) if w.since <= w.until]


def _windows_samples(windows: list[_DrawWindow]) -> list[list[SampleRow]]:
    """Each window's readings of its session; one statement, each a range of the readings' key."""
    out: list[list[SampleRow]] = [[] for _ in windows]
    numbered = _windows_open(windows)
    if not numbered:
        return out
    reading = [w for _, w in numbered]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT p.n, {_MICROS}, r.energy_wh, r.power_w,
                   GREATEST(r.current_a, r.current_l1_a, r.current_l2_a, r.current_l3_a)
            FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[], %s::timestamptz[], %s::int[])
                AS p(station, session, lo, hi, n)
            CROSS JOIN LATERAL (
                SELECT r."sampled_at", r.energy_wh, r.power_w, r.current_a, r.current_l1_a, r.current_l2_a,
                       r.current_l3_a
                FROM "{_READINGS}" r
                WHERE r.station_id = p.station AND r."sampled_at" >= p.lo AND r."sampled_at" <= p.hi
                  AND r.session_id = p.session
                OFFSET 0
            ) r
            """,  # noqa: S608 - the table name is the model's own
            [
                [w.session.station_id for w in reading],
                [w.session.pk for w in reading],
                [w.since for w in reading],
                [w.until for w in reading],
                [n for n, _ in numbered],
            ],
        )
        for n, micros, wh, w, a in cursor.fetchall():
            out[n].append((_instant(micros), wh, w, a))
    return out


def _windows_pushes(windows: list[_DrawWindow]) -> list[tuple[list[datetime], list[Decimal]]]:
    """Each window's accepted limits of its connector: the last answered before the window
    (from ``SESSION_PUSH_LOOKBACK`` before the session began) and those answered within it,
    as (sorted answer times, limits in A). One statement, served by the index on (connector,
    answered_at) of accepted pushes."""
    out: list[tuple[list[datetime], list[Decimal]]] = [([], []) for _ in windows]
    numbered = _windows_open(windows)
    if not numbered:
        return out
    reading = [w for _, w in numbered]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT p.n, x.answered_at, x.new_limit_a
            FROM unnest(%s::bigint[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[], %s::int[])
                AS p(connector, lookback, lo, hi, n)
            CROSS JOIN LATERAL (
                (SELECT q."answered_at", q.new_limit_a FROM "{_PUSHES}" q
                 WHERE q.connector_id = p.connector AND q.status = 'Accepted'
                   AND q."answered_at" >= p.lookback AND q."answered_at" < p.lo
                 ORDER BY q."answered_at" DESC LIMIT 1)
                UNION ALL
                (SELECT q."answered_at", q.new_limit_a FROM "{_PUSHES}" q
                 WHERE q.connector_id = p.connector AND q.status = 'Accepted'
                   AND q."answered_at" >= p.lo AND q."answered_at" <= p.hi)
            ) x
            ORDER BY p.n, x.answered_at
            """,  # noqa: S608 - the table name is the model's own
            [
                [w.session.connector_id for w in reading],
                [w.session.started_at - SESSION_PUSH_LOOKBACK for w in reading],
                [w.since for w in reading],
                [w.until for w in reading],
                [n for n, _ in numbered],
            ],
        )
        for n, answered_at, limit_a in cursor.fetchall():
            out[n][0].append(answered_at)
            out[n][1].append(limit_a)
    return out


def _draw_fold(window: _DrawWindow, rows: list[SampleRow], pushes: tuple[list[datetime], list[Decimal]]) -> bool:
    """Fold the window's readings into its draw; False when the draw must be recomputed from
    the session's start instead (currents were folded, and these readings carry power).

    The draw is the highest power (or, with no power reading in the session, current x volts
    x phases) while the limit in force was above it, and whether the car was held at a limit
    of ours (within ``CAPPED_MARGIN_A``, where the limit was below the charger's rating).
    """
    fold = window.fold
    power = [(at, Decimal(repr(w)) / 1000) for at, _, w, _ in rows if w is not None]
    if power and fold.source == SessionDraw.Source.CURRENT:
        return False
    station = window.session.station
    volts_phases = Decimal(station.site.voltage_v) * station.phases / 1000
    if power or fold.source == SessionDraw.Source.POWER:
        draws = power
        source = SessionDraw.Source.POWER if power else fold.source
    else:
        draws = [(at, Decimal(repr(a)) * volts_phases) for at, _, _, a in rows if a is not None]
        source = SessionDraw.Source.CURRENT if draws else fold.source
    rating = rating_kw(station, station.site.voltage_v)
    margin_kw = CAPPED_MARGIN_A * volts_phases
    times, limits = pushes
    observed: Decimal | None = None
    for at, draw_kw in draws:
        found = bisect_right(times, at)
        limit_kw = limits[found - 1] * volts_phases if found else None
        if limit_kw is None or draw_kw < limit_kw - margin_kw:
            observed = draw_kw if observed is None else max(observed, draw_kw)
        elif limit_kw < rating - margin_kw:
            fold.capped = True
    if observed is not None:
        fold.observed_kw = _higher(fold.observed_kw, _draw_round(min(observed, rating)))
    registers = [Decimal(repr(wh)) for _, wh, _, _ in rows if wh is not None]
    if registers:
        energy = max((max(registers) - window.session.meter_start_wh) / 1000, Decimal(0))
        fold.energy_kwh = _higher(fold.energy_kwh, _draw_round(energy))
    fold.source = source
    if rows:
        latest = max(at for at, *_ in rows)
        fold.until = latest if fold.until is None else max(fold.until, latest)
    return True


def _draw_round(value: Decimal) -> Decimal:
    """A session draw's kW or kWh to three places, half up (as the reports round)."""
    return value.quantize(DRAW_QUANTUM, rounding=ROUND_HALF_UP)


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
            outcome.sessions += _sessions_draw_update(since, now)
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
        .only("site_id", *(name.removeprefix("station__") for name in _RATING_FIELDS))
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


# --- reports ------------------------------------------------------------------------------


def savings_report_generate(
    *, year: int, month: int, reason: str, requested_by: str = "", now: datetime | None = None
) -> SavingsReport:
    """Compute the month's figures and store them, rendered in every format, as a new version.

    Earlier versions stay as they were (the database refuses updates); the new one names the
    tariff version of each site and carries the SHA-256 of its data and of each file.
    """
    require_tenant_schema("savings_report_generate")
    generated_at = now or timezone.now()
    tenant = getattr(connection, "tenant", None)
    data, demands = report_data_build(
        tenant_slug=getattr(tenant, "slug", ""),
        tenant_name=getattr(tenant, "name", ""),
        year=year,
        month=month,
        generated_at=generated_at,
    )
    files = {fmt: render(data, fmt) for fmt in FORMATS}
    tariffs = {site["slug"]: site["tariff"] for site in data["sites"]}
    first = date(year, month, 1)
    for attempt in range(REPORT_VERSION_RETRIES):
        try:
            with transaction.atomic():
                for demand in demands:
                    SiteMonthDemand.objects.update_or_create(
                        site_id=demand.site_id,
                        month=demand.month,
                        defaults={"actual_kw": demand.actual_kw, "unmanaged_kw": demand.unmanaged_kw},
                    )
                report = SavingsReport.objects.create(
                    month=first,
                    version=report_next_version(month=first),
                    reason=reason,
                    requested_by=requested_by,
                    generated_at=generated_at,
                    tariffs=tariffs,
                    data=data,
                    data_sha256=_sha256(canonical_json(data)),
                )
                SavingsReportFile.objects.bulk_create(
                    [
                        SavingsReportFile(
                            report=report, format=fmt, content=content, sha256=_sha256(content), size_bytes=len(content)
                        )
                        for fmt, content in files.items()
                    ]
                )
                return report
        except IntegrityError:
            if attempt == REPORT_VERSION_RETRIES - 1:
                raise
    raise RuntimeError("unreachable")


def savings_report_request(*, month: str, requested_by: str) -> None:
    """Queue a new version of ``month``'s (YYYY-MM) report once the current transaction commits."""
    from billing.tasks import generate_savings_report

    transaction.on_commit(
        lambda: generate_savings_report.delay(month=month, reason="request", requested_by=requested_by)
    )
