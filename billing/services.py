"""Writes of billing: tariff versions, interval rollups, session draws, savings reports.

Schema: tenant. Each function checks that a tenant schema is active.
"""

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from balancing.models import ProfilePush, Site
from billing.intervals import DEFAULT_INTERVAL_MINUTES, interval_floor
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
from billing.tariffs import TariffError, month_bounds, tariff_from_urdb
from chargepoint.models import ChargingSession, ChargingStation, MeterReading, RollupPending
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
# The pushes that tell whether a session's car was held by our limit: those answered from
# this long before the session started (the limit in force when it began; a transaction's
# limit is pushed again long before this: its profile is renewed within minutes).
SESSION_PUSH_LOOKBACK = timedelta(days=1)
# A session's readings are read this much before its start and after its stop (or now): a
# charger's clock and the order of its messages date a few of them just outside the session.
SESSION_READING_SLACK = timedelta(minutes=15)
SESSION_CHUNK = 500  # sessions whose readings and pushes are read with one query each
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
    require_tenant_schema("tariff_import")
    try:
        spec = tariff_from_urdb(record)
    except TariffError as exc:
        raise ValidationError({exc.path: exc.problem}) from exc
    if isinstance(record, dict) and "items" in record and "energyratestructure" not in record:
        record = record["items"][0]
    with transaction.atomic():
        versions = Tariff.objects.select_for_update().filter(site=site).order_by("-version")
        latest = versions.first()
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
            record_sha256=_sha256(canonical_json(record)),
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
        return tariff


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

    So two rollups, or a rollup and a month's rebuild, never rewrite one site's intervals at the
    same time: the second reads what the first committed, instead of re-adding rows the first is
    adding (a unique violation that fails its batch) or summing station rows it cannot see yet.
    """
    with connection.cursor() as cursor:
        for site_id in sorted(set(site_ids)):
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s)", [intervals_lock_key(schema=active_schema(), site_id=site_id)]
            )


def _station_rebuild(
    station: ChargingStation, lo: datetime, hi: datetime, voltage_v: Decimal
) -> tuple[datetime, datetime, int]:
    """Recompute the station's intervals that readings in [lo, hi] can touch.

    Returns the range rewritten (empty when the readings kept cannot recompute any of it) and
    the rows written. Every lookup is a bounded range of the readings' (station, sampled_at)
    key: the register readings just around [lo, hi] (at most ``ROLLUP_EDGE`` away) and those
    within.

    With no register reading within ``ROLLUP_EDGE`` before the range, its first reading starts
    the series afresh, unless the station has interval energy before that reading: then the
    readings behind that energy are out of reach (dropped with their month by the retention, or
    a silence longer than ``ROLLUP_EDGE`` that a month's rebuild spread), and those intervals
    and the first reading's own keep what they have; the range begins after it. A range without
    any register reading is left as it is.
    """
    series = MeterReading.objects.filter(station=station, energy_wh__isnull=False)

    def before(at: datetime) -> datetime | None:
        near = series.filter(sampled_at__lt=at, sampled_at__gte=at - ROLLUP_EDGE).order_by("-sampled_at")
        return near.values_list("sampled_at", flat=True).first()

    def after(at: datetime) -> datetime | None:
        near = series.filter(sampled_at__gt=at, sampled_at__lte=at + ROLLUP_EDGE).order_by("sampled_at")
        return near.values_list("sampled_at", flat=True).first()

    step = timedelta(minutes=DEFAULT_INTERVAL_MINUTES)
    range_start = interval_floor(before(lo) or lo)
    range_end = interval_floor(after(hi) or hi) + step
    load_from = before(range_start)
    if load_from is None:
        within = series.filter(sampled_at__gte=range_start, sampled_at__lt=range_end).order_by("sampled_at")
        first = within.values_list("sampled_at", flat=True).first()
        if first is None:
            return range_start, range_start, 0
        earlier = IntervalEnergy.objects.filter(
            site_id=station.site_id,
            station=station,
            start__gte=range_start - ROLLUP_EDGE,
            start__lt=interval_floor(first),
        )
        if earlier.exists():
            range_start = interval_floor(first) + step
            if range_start >= range_end:
                return range_start, range_start, 0
            load_from = before(range_start)
    load_from = load_from or range_start
    load_to = after(range_end) or range_end
    rows = list(
        series.filter(sampled_at__gte=load_from, sampled_at__lte=load_to)
        .order_by("sampled_at")
        .values_list("connector_no", "sampled_at", "energy_wh")
    )
    by_connector: dict[int, list[tuple[datetime, Decimal]]] = defaultdict(list)
    for connector_no, at, value in rows:
        # repr: the shortest decimal that is this float, i.e. the value the charger sent
        by_connector[connector_no].append((at, Decimal(repr(value))))
    if len(by_connector) > 1:
        by_connector.pop(0, None)  # the outlets' own registers, not the station's main meter too
    energy: dict[datetime, Decimal] = defaultdict(Decimal)
    resets: dict[datetime, int] = defaultdict(int)
    max_kw = rating_kw(station, voltage_v)
    for readings in by_connector.values():
        rollup = register_to_intervals(readings, max_power_kw=max_kw)
        for at, kwh in rollup.intervals_kwh.items():
            energy[at] += kwh
        for at, count in rollup.resets.items():
            resets[at] += count
    keep = sorted(at for at in set(energy) | set(resets) if range_start <= at < range_end)
    _intervals_delete(station.site_id, station.pk, range_start, range_end)
    IntervalEnergy.objects.bulk_create(
        [
            IntervalEnergy(
                site_id=station.site_id,
                station=station,
                start=at,
                minutes=DEFAULT_INTERVAL_MINUTES,
                energy_kwh=max(energy.get(at, Decimal(0)), Decimal(0)),
                resets=resets.get(at, 0),
            )
            for at in keep
        ],
        batch_size=2000,
    )
    return range_start, range_end, len(keep)


def _intervals_delete(site_id: int, station_id: int | None, start: datetime, end: datetime) -> None:
    """Delete the station's (None: the site totals') rows in [start, end) with one statement.

    Not ``QuerySet.delete()``: with a post_delete receiver connected for every model (the
    tenants app has one) Django selects the rows first and signals each one.
    """
    table = IntervalEnergy._meta.db_table
    station_is = "station_id IS NULL" if station_id is None else "station_id = %s"
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE site_id = %s AND {station_is} AND start >= %s AND start < %s",  # noqa: S608 - our names
            [site_id, *([] if station_id is None else [station_id]), start, end],
        )


def _site_totals_rebuild(site_id: int, start: datetime, end: datetime) -> None:
    """Site rows (station empty) = sum of the station rows, for [start, end)."""
    _intervals_delete(site_id, None, start, end)
    table = IntervalEnergy._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (site_id, station_id, start, minutes, energy_kwh, resets, updated_at)
            SELECT site_id, NULL, start, MIN(minutes), SUM(energy_kwh), SUM(resets), now()
            FROM {table}
            WHERE site_id = %s AND station_id IS NOT NULL AND start >= %s AND start < %s
            GROUP BY site_id, start
            """,  # noqa: S608 - the table name is the model's own
            [site_id, start, end],
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


def _sessions_draw_update(session_ids: set[int], now: datetime) -> int:
    """Observed acceptance rate, capped flag and register energy of sessions with new readings.

    Each session's readings are one range of the readings' key (its station, from its start to
    its stop or now, ``SESSION_READING_SLACK`` wider); the pushes read are those of its
    connector answered from ``SESSION_PUSH_LOOKBACK`` before it began until it ended.
    """
    ordered = sorted(session_ids)
    return sum(
        _sessions_draw_chunk(ordered[at : at + SESSION_CHUNK], now) for at in range(0, len(ordered), SESSION_CHUNK)
    )


def _sessions_draw_chunk(session_ids: list[int], now: datetime) -> int:
    sessions = {
        s.pk: s for s in ChargingSession.objects.filter(pk__in=session_ids).select_related("station", "station__site")
    }
    if not sessions:
        return 0
    spans = Q()
    windows = Q()
    for session in sessions.values():
        until = (session.stopped_at or now) + SESSION_READING_SLACK
        spans |= Q(
            station_id=session.station_id,
            sampled_at__gte=session.started_at - SESSION_READING_SLACK,
            sampled_at__lte=until,
        )
        windows |= Q(
            connector_id=session.connector_id,
            answered_at__gte=session.started_at - SESSION_PUSH_LOOKBACK,
            answered_at__lte=until,
        )
    samples: dict[int, list[tuple[datetime, float | None, float | None, float | None]]] = defaultdict(list)
    for session_id, at, energy_wh, power_w, *currents in (
        MeterReading.objects.filter(spans, session_id__in=sessions)
        .order_by("sampled_at")
        .values_list(
            "session_id",
            "sampled_at",
            "energy_wh",
            "power_w",
            "current_a",
            "current_l1_a",
            "current_l2_a",
            "current_l3_a",
        )
    ):
        present = [c for c in currents if c is not None]
        samples[session_id].append((at, energy_wh, power_w, max(present) if present else None))
    pushes: dict[int, list[tuple[datetime, Decimal]]] = defaultdict(list)
    for connector_id, answered_at, limit_a in (
        ProfilePush.objects.filter(windows, status="Accepted")
        .order_by("answered_at")
        .values_list("connector_id", "answered_at", "new_limit_a")
    ):
        if answered_at is not None:  # always: the window bounds it
            pushes[connector_id].append((answered_at, limit_a))
    draws = []
    for session_id, session in sessions.items():
        station = session.station
        volts_phases = Decimal(station.site.voltage_v) * station.phases / 1000
        rating = rating_kw(station, station.site.voltage_v)
        margin_kw = CAPPED_MARGIN_A * volts_phases
        history = pushes.get(session.connector_id, [])
        power_at: dict[datetime, Decimal] = {}
        current_at: dict[datetime, Decimal] = {}
        register_wh: Decimal | None = None
        for at, energy_wh, power_w, current_a in samples.get(session_id, []):
            if power_w is not None:
                power_at[at] = Decimal(repr(power_w)) / 1000
            if current_a is not None:
                current_at[at] = Decimal(repr(current_a)) * volts_phases
            if energy_wh is not None:
                value = Decimal(repr(energy_wh))
                register_wh = value if register_wh is None else max(register_wh, value)
        observed: Decimal | None = None
        capped = False
        for at, draw_kw in sorted((power_at or current_at).items()):
            limits = [limit for when, limit in history if when <= at]
            limit_kw = limits[-1] * volts_phases if limits else None
            if limit_kw is None or draw_kw < limit_kw - margin_kw:
                observed = draw_kw if observed is None else max(observed, draw_kw)
            elif limit_kw < rating - margin_kw:
                capped = True
        energy = None
        if register_wh is not None:
            energy = max((register_wh - session.meter_start_wh) / 1000, Decimal(0)).quantize(
                DRAW_QUANTUM, ROUND_HALF_UP
            )
        draws.append(
            SessionDraw(
                session_id=session_id,
                observed_max_kw=None
                if observed is None
                else min(observed, rating).quantize(DRAW_QUANTUM, ROUND_HALF_UP),
                was_capped=capped,
                register_energy_kwh=energy,
            )
        )
    SessionDraw.objects.bulk_create(
        draws,
        update_conflicts=True,
        unique_fields=["session"],
        update_fields=["observed_max_kw", "was_capped", "register_energy_kwh", "updated_at"],
    )
    return len(draws)


def _draw_round(value: Decimal) -> Decimal:
    """A session draw's kW or kWh to three places, half up (as the reports round)."""
    return value.quantize(DRAW_QUANTUM, rounding=ROUND_HALF_UP)


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
    just those intervals and sessions, and deletes the marks, in one transaction per batch: a
    failed batch leaves its marks for the next run. Safe to run concurrently (marks are taken
    with SKIP LOCKED, a site's intervals are rewritten under its lock) and again (it
    recomputes, never adds). A mark of a station being written to right now waits for the
    next run (``_marks_take``), so a reading committed late is rolled up with its mark.
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
            _sites_lock(site_id for *_, site_id in marks)
            starts: dict[int, list[datetime]] = defaultdict(list)
            session_ids: set[int] = set()
            for _, station_id, start, session_id, _ in marks:
                starts[station_id].append(start)
                if session_id is not None:
                    session_ids.add(session_id)
            outcome.intervals += _stations_rebuild(_spans(starts), outcome)
            outcome.sessions += _sessions_draw_update(session_ids, now)
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
    """Rebuild each span of each station, then the site totals over what was rewritten."""
    stations = ChargingStation.objects.select_related("site").in_bulk({station_id for station_id, _, _ in spans})
    site_ranges: dict[int, list[tuple[datetime, datetime]]] = defaultdict(list)
    written = 0
    for station_id, lo, hi in spans:
        station = stations.get(station_id)
        if station is None:
            continue  # deleted meanwhile (its marks went with it)
        start, end, count = _station_rebuild(station, lo, hi, station.site.voltage_v)
        written += count
        outcome.sites.add(station.site_id)
        if start < end:
            site_ranges[station.site_id].append((start, end))
    outcome.stations += len(stations)
    for site_id, ranges in site_ranges.items():
        for start, end in _merged(ranges):
            _site_totals_rebuild(site_id, start, end)
    return written


def raw_readings_since() -> datetime | None:
    """The first instant raw readings are kept for (the oldest partition's month), or None."""
    kept = partitions_list()
    return kept[0][1] if kept else None


def intervals_rebuild(*, site: Site, start: datetime, end: datetime) -> int:
    """Recompute every interval of the site in [start, end) from the raw readings.

    Only where raw readings are still kept: the part of the range before the oldest partition
    (dropped after the retention period) keeps its intervals as they were rolled up, and so do
    the intervals just after it that drew on readings now gone (``_station_rebuild``).
    """
    require_tenant_schema("intervals_rebuild")
    written = 0
    kept_since = raw_readings_since()
    if kept_since is None or end <= kept_since:
        return 0
    start = max(start, kept_since)
    with transaction.atomic():
        _sites_lock([site.pk])
        ranges = []
        for station in ChargingStation.objects.filter(site=site):
            first, last, count = _station_rebuild(station, start, end - timedelta(microseconds=1), site.voltage_v)
            written += count
            if first < last:
                ranges.append((first, last))
        for low, high in _merged(ranges):
            _site_totals_rebuild(site.pk, low, high)
    return written


def intervals_rebuild_month(*, year: int, month: int) -> int:
    """Recompute the local month of every site before it is reported."""
    total = 0
    for site in Site.objects.all():
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
