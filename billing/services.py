"""Writes of billing: tariff versions, interval rollups, session draws, savings reports.

Schema: tenant. Each function checks that a tenant schema is active.
"""

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
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
from evplatform.services import require_tenant_schema

# Pending marks (station, 15-minute interval, session) the rollup takes per transaction.
ROLLUP_BATCH_MARKS = 5_000
# Marks of one station further apart than this are rebuilt as separate ranges.
ROLLUP_GAP = timedelta(hours=1)
# How far the rollup looks before and after a range for the register readings around it
# (a charger silent longer than this has its energy start again at its next reading).
ROLLUP_EDGE = timedelta(days=2)
# The pushes that tell whether a session's car was held by our limit: those answered from
# this long before the session started (the limit in force when it began).
SESSION_PUSH_LOOKBACK = timedelta(days=1)
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
    samples: int = 0
    stations: int = 0
    intervals: int = 0
    sessions: int = 0
    sites: set[int] = field(default_factory=set)


def _station_rebuild(
    station: ChargingStation, lo: datetime, hi: datetime, voltage_v: Decimal
) -> tuple[datetime, datetime, int]:
    """Recompute the station's intervals that readings in [lo, hi] can touch; returns the range.

    Every lookup is a bounded range of the readings' (station, sampled_at) key: the register
    readings just around [lo, hi] (at most ``ROLLUP_EDGE`` away) and those within.
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
    load_from = before(range_start) or range_start
    load_to = after(range_end) or range_end
    rows = list(
        series.filter(sampled_at__gte=load_from, sampled_at__lte=load_to)
        .order_by("sampled_at")
        .values_list("connector_no", "sampled_at", "energy_wh")
    )
    by_connector: dict[int, list[tuple[datetime, Decimal]]] = defaultdict(list)
    for connector_no, at, value in rows:
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
    IntervalEnergy.objects.filter(
        site_id=station.site_id, station=station, start__gte=range_start, start__lt=range_end
    ).delete()
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


def _site_totals_rebuild(site_id: int, start: datetime, end: datetime) -> None:
    """Site rows (station empty) = sum of the station rows, for [start, end)."""
    IntervalEnergy.objects.filter(site_id=site_id, station__isnull=True, start__gte=start, start__lt=end).delete()
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


def _sessions_draw_update(session_ids: set[int], now: datetime) -> int:
    """Observed acceptance rate, capped flag and register energy of sessions with new readings.

    Each session's readings are one range of the readings' key (its station, from its start to
    its stop or now); the pushes read are those of its connector since shortly before it began.
    """
    sessions = {
        s.pk: s for s in ChargingSession.objects.filter(pk__in=session_ids).select_related("station", "station__site")
    }
    if not sessions:
        return 0
    spans = Q()
    for session in sessions.values():
        spans |= Q(
            station_id=session.station_id, sampled_at__gte=session.started_at, sampled_at__lte=session.stopped_at or now
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
        ProfilePush.objects.filter(
            connector_id__in={s.connector_id for s in sessions.values()},
            status="Accepted",
            answered_at__gte=min(s.started_at for s in sessions.values()) - SESSION_PUSH_LOOKBACK,
        )
        .order_by("answered_at")
        .values_list("connector_id", "answered_at", "new_limit_a")
    ):
        if answered_at is not None:
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
            energy = max((register_wh - session.meter_start_wh) / 1000, Decimal(0)).quantize(Decimal("0.001"))
        draws.append(
            SessionDraw(
                session_id=session_id,
                observed_max_kw=None if observed is None else min(observed, rating).quantize(Decimal("0.001")),
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


def intervals_roll_up(*, batch_size: int = ROLLUP_BATCH_MARKS, max_batches: int | None = None) -> RollupOutcome:
    """Fold the readings stored since the last run into interval energy and session draws.

    Reads the pending marks the ingest left (station, 15-minute interval, session), rebuilds
    just those intervals and sessions, and deletes the marks, in one transaction per batch: a
    failed batch leaves its marks for the next run. Safe to run concurrently (marks are taken
    with SKIP LOCKED) and again (it recomputes, never adds).
    """
    require_tenant_schema("intervals_roll_up")
    outcome = RollupOutcome()
    batches = 0
    now = timezone.now()
    while max_batches is None or batches < max_batches:
        batches += 1
        with transaction.atomic():
            marks = list(
                RollupPending.objects.select_for_update(skip_locked=True)
                .order_by("id")
                .values_list("id", "station_id", "interval_start", "session_id")[:batch_size]
            )
            if not marks:
                break
            starts: dict[int, list[datetime]] = defaultdict(list)
            session_ids: set[int] = set()
            for _, station_id, start, session_id in marks:
                starts[station_id].append(start)
                if session_id is not None:
                    session_ids.add(session_id)
            outcome.intervals += _stations_rebuild(_spans(starts), outcome)
            outcome.sessions += _sessions_draw_update(session_ids, now)
            outcome.samples += len(marks)
            RollupPending.objects.filter(id__in=[mark[0] for mark in marks]).delete()
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
    stations = ChargingStation.objects.in_bulk({station_id for station_id, _, _ in spans})
    sites = Site.objects.in_bulk({station.site_id for station in stations.values()})
    site_ranges: dict[int, list[datetime]] = {}
    written = 0
    for station_id, lo, hi in spans:
        station = stations.get(station_id)
        if station is None:
            continue
        start, end, count = _station_rebuild(station, lo, hi, sites[station.site_id].voltage_v)
        written += count
        outcome.stations += 1
        outcome.sites.add(station.site_id)
        span = site_ranges.setdefault(station.site_id, [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
    for site_id, (start, end) in site_ranges.items():
        _site_totals_rebuild(site_id, start, end)
    return written


def raw_readings_since() -> datetime | None:
    """The first instant raw readings are kept for (the oldest partition's month), or None."""
    kept = partitions_list()
    return kept[0][1] if kept else None


def intervals_rebuild(*, site: Site, start: datetime, end: datetime) -> int:
    """Recompute every interval of the site in [start, end) from the raw readings.

    Only where raw readings are still kept: the part of the range before the oldest partition
    (dropped after the retention period) keeps its intervals as they were rolled up.
    """
    require_tenant_schema("intervals_rebuild")
    written = 0
    kept_since = raw_readings_since()
    if kept_since is None or end <= kept_since:
        return 0
    start = max(start, kept_since)
    with transaction.atomic():
        stations = ChargingStation.objects.filter(site=site)
        low, high = start, end
        for station in stations:
            first, last, count = _station_rebuild(station, start, end - timedelta(microseconds=1), site.voltage_v)
            low, high = min(low, first), max(high, last)
            written += count
        _site_totals_rebuild(site.pk, low, high)
    return written


def intervals_rebuild_month(*, year: int, month: int) -> int:
    """Recompute the local month of every site before it is reported."""
    return sum(
        intervals_rebuild(
            site=site,
            start=month_bounds(year, month, site_timezone(site))[0],
            end=month_bounds(year, month, site_timezone(site))[1],
        )
        for site in Site.objects.all()
    )


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
