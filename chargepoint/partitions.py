"""Monthly partitions of the raw meter readings: created ahead, dropped after the retention.

Schema: tenant (every statement names the current tenant schema's tables). ``MeterReading``
is a PostgreSQL declarative partitioned table (``PARTITION BY RANGE (sampled_at)``), one
partition per calendar month in UTC, named ``chargepoint_meterreading_pYYYY_MM``.

A month's partition is made by the beat (``telemetry_partitions_maintain``, ahead of time),
by the migration that creates the table (the months around now), and, should a reading
arrive for a month that has none (beat down for weeks, a charger replaying old readings), by
the ingest itself (``partitions_ensure`` on the error). Readings older than the retention
period are refused at ingest instead: a dropped month is never recreated.

A month is made as a table of its own, then attached (``ATTACH PARTITION``): that takes a
SHARE UPDATE EXCLUSIVE lock on the readings table, which neither waits for nor stops the
reads and inserts of other transactions, where ``CREATE TABLE ... PARTITION OF`` would take
an ACCESS EXCLUSIVE one: it would wait for every open transaction that read the readings
(a report, an API page, a test) and, while waiting, hold up every later read and insert.

Making partitions is serialised per schema by a transaction-level advisory lock: two workers
that both found a month missing would otherwise both try to make it, and the second would
fail with "relation already exists" (``IF NOT EXISTS`` looks before the wait, not after). With
the lock the second waits, looks again, and finds the month made.

Dropping a month is ``DROP TABLE`` of its partition: no row-by-row delete, no bloat, no
vacuum. What billing made from the readings (interval energy, session draws, reports) stays.
A drop needs an ACCESS EXCLUSIVE lock, so it waits at most ``DROP_LOCK_TIMEOUT`` for the
readers of the month (a long report) and otherwise leaves the month to the next run, rather
than stall the ingest queued behind it.
"""

import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import OperationalError, connection, transaction

from evplatform.services import active_schema, require_tenant_schema

logger = logging.getLogger(__name__)

PARENT = "chargepoint_meterreading"
PARTITION_RE = re.compile(rf"^{PARENT}_p(\d{{4}})_(\d{{2}})$")
# How long dropping a month waits for its readers before it is left to the next run.
DROP_LOCK_TIMEOUT = timedelta(seconds=5)
LOCK_NOT_AVAILABLE = "55P03"


def month_start(at: datetime) -> datetime:
    """The first instant (UTC) of the month ``at`` is in."""
    at = at.astimezone(UTC)
    return datetime(at.year, at.month, 1, tzinfo=UTC)


def next_month(start: datetime) -> datetime:
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    return f"{PARENT}_p{start.year:04d}_{start.month:02d}"


def _months(start: datetime, end: datetime) -> Iterator[datetime]:
    """The month starts from the month holding ``start`` to the one holding ``end``."""
    month = month_start(start)
    while month <= end:
        yield month
        month = next_month(month)


def _lock_key(schema: str) -> int:
    """The advisory lock key (signed 64-bit) that serialises making a schema's partitions."""
    digest = hashlib.blake2b(f"evp:reading-partitions:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


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


@dataclass(frozen=True)
class PartitionUsage:
    name: str
    month: datetime
    rows: int
    bytes: int  # table, indexes and TOAST (pg_total_relation_size)


def partitions_usage() -> list[PartitionUsage]:
    """The current schema's partitions, oldest first, with their row counts and sizes.

    The rows are counted (a scan of each month): for an operator's look, not for a hot path.
    """
    usage = []
    with connection.cursor() as cursor:
        for name, month in partitions_list():
            cursor.execute(f"SELECT count(*), pg_total_relation_size(%s::regclass) FROM {name}", [name])  # noqa: S608
            rows, size = cursor.fetchone()
            usage.append(PartitionUsage(name=name, month=month, rows=rows, bytes=size))
    return usage


def partitions_ensure(start: datetime, end: datetime) -> list[str]:
    """Every month from the one holding ``start`` to the one holding ``end`` has its partition.

    Idempotent, also against another connection making the same months at the same time (the
    schema's advisory lock, taken only when a month is missing and held to the end of the
    transaction); returns the partitions it created.
    """
    require_tenant_schema("partitions_ensure")
    months = list(_months(start, end))
    if not _missing(months):
        return []
    created = []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_lock_key(active_schema())])
        for month in _missing(months):  # again: another connection may have made them meanwhile
            name = partition_name(month)
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {name} (LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            )
            cursor.execute(
                f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES FROM (%s) TO (%s)",
                [month, next_month(month)],
            )
            created.append(name)
    if created:
        logger.info("%s: meter reading partitions created: %s", active_schema(), ", ".join(created))
    return created


def _missing(months: list[datetime]) -> list[datetime]:
    existing = {name for name, _ in partitions_list()}
    return [month for month in months if partition_name(month) not in existing]


@dataclass
class PartitionsOutcome:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    # Past the retention but still being read when the run tried to drop them: the next run will.
    busy: list[str] = field(default_factory=list)


def partitions_maintain(*, now: datetime, dry_run: bool = False) -> PartitionsOutcome:
    """Partitions for this month and ``TELEMETRY_PARTITIONS_AHEAD_MONTHS`` ahead; months wholly
    before the retention cutoff dropped.

    ``dry_run``: nothing is made or dropped; the outcome lists what would be.
    """
    require_tenant_schema("partitions_maintain")
    outcome = PartitionsOutcome()
    ahead = month_start(now)
    for _ in range(settings.TELEMETRY_PARTITIONS_AHEAD_MONTHS):
        ahead = next_month(ahead)
    if dry_run:
        outcome.created = [partition_name(month) for month in _missing(list(_months(now, ahead)))]
    else:
        outcome.created = partitions_ensure(now, ahead)
    cutoff = retention_cutoff(now)
    for name, start in partitions_list():
        if next_month(start) > cutoff:
            continue
        if dry_run or _drop(name):
            outcome.dropped.append(name)
        else:
            outcome.busy.append(name)
    return outcome


def _drop(name: str) -> bool:
    """Drop a partition if its lock is had within ``DROP_LOCK_TIMEOUT``; False if it was not."""
    timeout_ms = int(DROP_LOCK_TIMEOUT.total_seconds() * 1000)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('lock_timeout')")
            previous = cursor.fetchone()[0]
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{timeout_ms}ms"])
            cursor.execute(f"DROP TABLE IF EXISTS {name}")
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [previous])
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) != LOCK_NOT_AVAILABLE:
            raise
        logger.warning(
            "%s: meter readings of %s not dropped: still being read after %s s; the next run drops them",
            active_schema(),
            name,
            DROP_LOCK_TIMEOUT.total_seconds(),
        )
        return False
    logger.info("%s: meter readings of %s dropped (retention)", active_schema(), name)
    return True


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
