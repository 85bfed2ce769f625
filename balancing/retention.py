"""What is kept and for how long: the history tables pruned in bounded batches. Schema: tenant.

The platform writes history every minute for every site (balancing runs and the profiles they
pushed) and for every call to a charger (``ChargerCommand``); left alone these tables grow
forever. ``history_prune`` deletes what is older than its setting, oldest first, a batch of
``RETENTION_BATCH_ROWS`` rows per statement and each batch in its own short transaction, so no
lock is held for long and a prune cut short resumes the next day where it stopped:

- **balancing runs and their pushes** (``RETENTION_RUNS_DAYS``, 90): a run whose last repeat
  is older too. Never the latest run of a site (what the site page and the status API show),
  and never a run holding a profile that is still in force: the last accepted TxProfile of a
  connector, the last accepted fail-safe default and station-wide maximum of a station (the run
  reads the last one to decide whether to send another), and any profile sent during a
  session that is still open (billing reads them to tell a capped car from a slow one);
- **charger commands** (``RETENTION_COMMANDS_DAYS``, 90): by ``requested_at``; nothing refers
  to them once answered (a reply waits seconds, not days);
- **cleared site alerts** (``RETENTION_ALERTS_DAYS``, 365): by ``cleared_at``; open alerts are
  live state and stay. Opening and clearing each alert is also in the audit log;
- **expired portal sessions** (Django's ``clearsessions``), which have no use at all;
- **expired API idempotency keys** (``tenants.accounts.IdempotencyKey``, kept 24 hours): a
  repeat after that is a new request.

A setting of 0 keeps that history forever. The audit log (``tenants.accounts.AuditEvent``) is
not pruned: it is the record of who changed which load-management setting and when (NEC 750.30),
written on changes and alert episodes only, so it grows with what people do, not with time.
Meter data (samples, site meter and building readings, billing intervals) is not handled here.

Deletes go by time through the ``(site, started_at)``, ``(station, requested_at)`` and
``(site, cleared_at)`` indexes, one site or station at a time, and the profiles in force are
found through ``(connector, sent_at)`` and ``(station, sent_at)``, so no statement scans a table
(``bench/runs_bench.py --prune-days 150``: 86,399 runs and their 8,639 pushes in 1.3-1.7 s).
"""

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.sessions.models import Session
from django.db import connection, transaction
from django.db.models import Q, QuerySet

from balancing.models import BalancingRun, ProfilePush, Site, SiteAlert, SiteMeterReading
from chargepoint.models import ChargerCommand, ChargingSession, ChargingStation, Connector
from evplatform.services import active_schema
from tenants.accounts.services import idempotency_keys_prune

logger = logging.getLogger(__name__)

ACCEPTED = "Accepted"


@dataclass
class PruneCounts:
    """Rows deleted (or, in a dry run, that would be), per kind of history."""

    runs: int = 0
    pushes: int = 0
    commands: int = 0
    alerts: int = 0
    meter_readings: int = 0
    sessions: int = 0
    idempotency_keys: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.runs:,} balancing runs ({self.pushes:,} profile pushes), {self.commands:,} charger commands, "
            f"{self.alerts:,} cleared alerts, {self.meter_readings:,} site meter readings, "
            f"{self.sessions:,} expired sessions, {self.idempotency_keys:,} expired idempotency keys"
        )


def retention_days() -> dict[str, int]:
    """The retention settings in force, in days (0: kept forever)."""
    return {
        "runs": settings.RETENTION_RUNS_DAYS,
        "commands": settings.RETENTION_COMMANDS_DAYS,
        "alerts": settings.RETENTION_ALERTS_DAYS,
        "meter readings": settings.TELEMETRY_RETENTION_DAYS,
    }


def _cutoff(now: datetime, days: int) -> datetime | None:
    return now - timedelta(days=days) if days > 0 else None


def _runs_in_use(cutoff: datetime) -> list[int]:
    """Runs started before ``cutoff`` that hold a profile still in force or still read (module docstring).

    One index probe per connector (its last accepted TxProfile) and per station (its last accepted
    fail-safe default and station-wide maximum) through a lateral join, and the pushes of sessions
    still open: a bounded set, whatever the size of the history.
    """
    runs, pushes = BalancingRun._meta.db_table, ProfilePush._meta.db_table
    connectors, stations = Connector._meta.db_table, ChargingStation._meta.db_table
    sessions = ChargingSession._meta.db_table
    last_station_wide = f"""
        SELECT p.run_id FROM {stations} st CROSS JOIN LATERAL (
            SELECT run_id FROM {pushes}
            WHERE station_id = st.id AND connector_id IS NULL AND status = %(accepted)s AND kind {{op}} %(failsafe)s
            ORDER BY sent_at DESC LIMIT 1
        ) p"""  # noqa: S608 - the table names are the models' own
    sql = f"""
        SELECT r.id FROM {runs} r WHERE r.started_at < %(cutoff)s AND r.id IN (
            SELECT p.run_id FROM {connectors} c CROSS JOIN LATERAL (
                SELECT run_id FROM {pushes}
                WHERE connector_id = c.id AND status = %(accepted)s
                ORDER BY sent_at DESC LIMIT 1
            ) p
            UNION {last_station_wide.format(op="=")}
            UNION {last_station_wide.format(op="<>")}
            UNION
            SELECT p.run_id FROM {sessions} s
            JOIN {pushes} p ON p.connector_id = s.connector_id AND p.sent_at >= s.started_at
            WHERE s.stopped_at IS NULL AND p.sent_at < %(cutoff)s
        )"""  # noqa: S608 - the table names are the models' own
    with connection.cursor() as cursor:
        cursor.execute(sql, {"cutoff": cutoff, "accepted": ACCEPTED, "failsafe": ProfilePush.Kind.FAILSAFE.value})
        return [row[0] for row in cursor.fetchall()]


def _old_runs(site_id: int, cutoff: datetime, in_use: list[int]) -> "QuerySet[BalancingRun]":
    """The site's runs that may go: last seen before ``cutoff``, not its latest, not ``in_use``."""
    latest = BalancingRun.objects.filter(site_id=site_id).order_by("-started_at", "-pk").values("pk")[:1]
    return (
        BalancingRun.objects.filter(site_id=site_id, started_at__lt=cutoff)
        .filter(Q(last_repeated_at__isnull=True) | Q(last_repeated_at__lt=cutoff))
        .exclude(pk__in=latest)
        .exclude(pk__in=in_use)
    )


def _prune_runs(cutoff: datetime, batch: int, dry_run: bool, counts: PruneCounts) -> None:
    runs_table, pushes_table = BalancingRun._meta.db_table, ProfilePush._meta.db_table
    in_use = _runs_in_use(cutoff)
    for site_id in Site.objects.order_by("pk").values_list("pk", flat=True):
        old = _old_runs(site_id, cutoff, in_use)
        if dry_run:
            counts.runs += old.count()
            counts.pushes += ProfilePush.objects.filter(run__in=old.values("pk")).count()
            continue
        while True:
            ids = list(old.order_by("started_at").values_list("pk", flat=True)[:batch])
            if not ids:
                break
            # Pushes first (their foreign key), then the runs: one short transaction per batch.
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(f"DELETE FROM {pushes_table} WHERE run_id = ANY(%s)", [ids])  # noqa: S608
                counts.pushes += cursor.rowcount
                cursor.execute(f"DELETE FROM {runs_table} WHERE id = ANY(%s)", [ids])  # noqa: S608
                counts.runs += cursor.rowcount
            if len(ids) < batch:
                break


def _delete_batches(rows: "QuerySet[Any]", batch: int) -> int:
    """Delete ``rows`` (ordered oldest first) ``batch`` at a time, a statement each; returns how many."""
    manager = rows.model._default_manager
    deleted = 0
    while True:
        count, _ = manager.filter(pk__in=rows.values("pk")[:batch]).delete()
        deleted += count
        if count < batch:
            return deleted


def _prune_commands(cutoff: datetime, batch: int, dry_run: bool, counts: PruneCounts) -> None:
    stations: list[int | None] = [*ChargingStation.objects.order_by("pk").values_list("pk", flat=True), None]
    for station_id in stations:
        by_station = Q(station__isnull=True) if station_id is None else Q(station_id=station_id)
        old = ChargerCommand.objects.filter(by_station, requested_at__lt=cutoff).order_by("requested_at")
        counts.commands += old.count() if dry_run else _delete_batches(old, batch)


def _prune_alerts(cutoff: datetime, batch: int, dry_run: bool, counts: PruneCounts) -> None:
    for site_id in Site.objects.order_by("pk").values_list("pk", flat=True):
        old = SiteAlert.objects.filter(site_id=site_id, cleared_at__lt=cutoff).order_by("cleared_at")
        counts.alerts += old.count() if dry_run else _delete_batches(old, batch)


def _prune_site_meter(cutoff: datetime, batch: int, dry_run: bool, counts: PruneCounts) -> None:
    """Site meter readings kept as long as the chargers' raw readings; each site's latest stays."""
    for site_id in Site.objects.order_by("pk").values_list("pk", flat=True):
        latest = SiteMeterReading.objects.filter(site_id=site_id).order_by("-measured_at").values("pk")[:1]
        old = (
            SiteMeterReading.objects.filter(site_id=site_id, measured_at__lt=cutoff)
            .exclude(pk__in=latest)
            .order_by("measured_at")
        )
        counts.meter_readings += old.count() if dry_run else _delete_batches(old, batch)


def sessions_prune(*, now: datetime, dry_run: bool = False, batch: int | None = None) -> int:
    """Expired portal sessions of the active schema (each schema has its own table)."""
    expired = Session.objects.filter(expire_date__lt=now).order_by("expire_date")
    return expired.count() if dry_run else _delete_batches(expired, batch or settings.RETENTION_BATCH_ROWS)


def history_prune(*, now: datetime, dry_run: bool = False, batch: int | None = None) -> PruneCounts:
    """Delete the active tenant's history older than the retention settings; returns what went.

    ``dry_run`` counts instead of deleting. Safe to run at any time and as often as wanted:
    what a run is still in force for, the latest run of each site and open alerts stay.
    """
    batch = batch or settings.RETENTION_BATCH_ROWS
    if batch < 1:
        raise ValueError(f"batch must be at least 1 row, got {batch}")
    days = retention_days()
    counts = PruneCounts()
    if (cutoff := _cutoff(now, days["runs"])) is not None:
        _prune_runs(cutoff, batch, dry_run, counts)
    if (cutoff := _cutoff(now, days["commands"])) is not None:
        _prune_commands(cutoff, batch, dry_run, counts)
    if (cutoff := _cutoff(now, days["alerts"])) is not None:
        _prune_alerts(cutoff, batch, dry_run, counts)
    if (cutoff := _cutoff(now, days["meter readings"])) is not None:
        _prune_site_meter(cutoff, batch, dry_run, counts)
    counts.sessions = sessions_prune(now=now, dry_run=dry_run, batch=batch)
    counts.idempotency_keys = idempotency_keys_prune(now=now, batch=batch, dry_run=dry_run)
    logger.info(
        "history of %s %s: %s (kept: runs %s d, commands %s d, cleared alerts %s d, site meter readings %s d;"
        " 0 = forever)",
        active_schema(),
        "would prune" if dry_run else "pruned",
        counts,
        days["runs"],
        days["commands"],
        days["alerts"],
        days["meter readings"],
    )
    return counts
