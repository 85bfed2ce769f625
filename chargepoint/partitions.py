"""Monthly partitions of the raw meter readings: created ahead, dropped after the retention.

Schema: tenant (every statement names the current tenant schema's tables). ``MeterReading``
is a PostgreSQL declarative partitioned table (``PARTITION BY RANGE (sampled_at)``), one
partition per calendar month in UTC, named ``chargepoint_meterreading_pYYYY_MM``.

A month's partition is made by the beat (``telemetry_partitions_maintain``, ahead of time),
by the migration that creates the table (the months around now), and, should a reading
arrive for a month that has none (beat down for weeks, a charger replaying old readings), by
the ingest itself (``partitions_ensure`` on the error). Readings older than the retention
period are refused at ingest instead: a dropped month is never recreated.

Dropping a month is ``DROP TABLE`` of its partition: no row-by-row delete, no bloat, no
vacuum. What billing made from the readings (interval energy, session draws, reports) stays.
"""

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection

from evplatform.services import active_schema, require_tenant_schema

logger = logging.getLogger(__name__)

PARENT = "chargepoint_meterreading"
PARTITION_RE = re.compile(rf"^{PARENT}_p(\d{{4}})_(\d{{2}})$")


def month_start(at: datetime) -> datetime:
    """The first instant (UTC) of the month ``at`` is in."""
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def next_month(start: datetime) -> datetime:
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    return f"{PARENT}_p{start.year:04d}_{start.month:02d}"


def retention_cutoff(now: datetime) -> datetime:
    """Readings sampled before this are past the retention period (refused, and dropped)."""
    return now - timedelta(days=settings.TELEMETRY_RETENTION_DAYS)


def partitions_list() -> list[tuple[str, datetime]]:
    """The current schema's monthly partitions, oldest first, as (name, month start)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT child.relname
            FROM pg_inherits
            JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
            JOIN pg_class child ON child.oid = pg_inherits.inhrelid
            JOIN pg_namespace ns ON ns.oid = parent.relnamespace
            WHERE parent.relname = %s AND ns.nspname = current_schema()
            """,
            [PARENT],
        )
        names = [row[0] for row in cursor.fetchall()]
    found = []
    for name in names:
        match = PARTITION_RE.match(name)
        if match:
            found.append((name, datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)))
    return sorted(found, key=lambda item: item[1])


def partitions_ensure(start: datetime, end: datetime) -> list[str]:
    """Every month from the one holding ``start`` to the one holding ``end`` has its partition.

    Idempotent (``IF NOT EXISTS``); returns the partitions it created.
    """
    require_tenant_schema("partitions_ensure")
    existing = {name for name, _ in partitions_list()}
    created = []
    month = month_start(start)
    with connection.cursor() as cursor:
        while month <= end:
            name = partition_name(month)
            if name not in existing:
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {PARENT} FOR VALUES FROM (%s) TO (%s)",
                    [month, next_month(month)],
                )
                created.append(name)
            month = next_month(month)
    if created:
        logger.info("%s: meter reading partitions created: %s", active_schema(), ", ".join(created))
    return created


@dataclass
class PartitionsOutcome:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def partitions_maintain(*, now: datetime, dry_run: bool = False) -> PartitionsOutcome:
    """Partitions for this month and ``TELEMETRY_PARTITIONS_AHEAD_MONTHS`` ahead; months wholly
    before the retention cutoff dropped (``dry_run``: only listed)."""
    require_tenant_schema("partitions_maintain")
    outcome = PartitionsOutcome()
    ahead = month_start(now)
    for _ in range(settings.TELEMETRY_PARTITIONS_AHEAD_MONTHS):
        ahead = next_month(ahead)
    if not dry_run:
        outcome.created = partitions_ensure(now, ahead)
    cutoff = retention_cutoff(now)
    for name, start in partitions_list():
        if next_month(start) <= cutoff:
            outcome.dropped.append(name)
            if not dry_run:
                with connection.cursor() as cursor:
                    cursor.execute(f"DROP TABLE IF EXISTS {name}")
                logger.info("%s: meter readings of %s dropped (retention)", active_schema(), name)
    return outcome


def table_sql() -> list[str]:
    """DDL of the partitioned table, as the migration runs it in each tenant schema."""
    return [
        f"""
        CREATE TABLE {PARENT} (
            station_id bigint NOT NULL REFERENCES chargepoint_chargingstation (id)
                ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
            sampled_at timestamp with time zone NOT NULL,
            connector_no smallint NOT NULL CHECK (connector_no >= 0),
            session_id bigint NULL,
            context smallint NOT NULL DEFAULT 0 CHECK (context >= 0),
            energy_wh double precision NULL,
            power_w double precision NULL,
            current_a double precision NULL,
            current_l1_a double precision NULL,
            current_l2_a double precision NULL,
            current_l3_a double precision NULL,
            offered_a double precision NULL,
            voltage_v double precision NULL,
            soc_pct double precision NULL,
            extra jsonb NULL,
            PRIMARY KEY (station_id, sampled_at, connector_no)
        ) PARTITION BY RANGE (sampled_at)
        """,
        f"CREATE INDEX reading_sampled_at ON {PARENT} (sampled_at)",
    ]
