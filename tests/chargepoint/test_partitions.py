"""Monthly partitions of the meter readings on the real PostgreSQL: made, kept, dropped, listed.

Most tests work inside the test's transaction (what they make is rolled back). Those about
other connections (two workers making one month, a report still reading a month) need
committed partitions: they make them in threads with connections of their own, in months no
other test uses, and drop them again.
"""

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any, TypeVar

import psycopg
import pytest
from celery.signals import before_task_publish
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from chargepoint.models import MeterReading
from chargepoint.partitions import (
    DROP_LOCK_TIMEOUT,
    partition_name,
    partitions_ensure,
    partitions_list,
    partitions_maintain,
    partitions_usage,
)
from chargepoint.tasks import (
    telemetry_partitions_maintain,
    telemetry_partitions_maintain_all,
    telemetry_partitions_maintain_chunk,
)
from tenants.selectors import tenant_schemas_active
from tests.conftest import _database_url
from tests.factories import MeterReadingFactory

pytestmark = pytest.mark.django_db

T = TypeVar("T")


def month(year: int, number: int) -> datetime:
    return datetime(year, number, 1, tzinfo=UTC)


def names(*months: datetime) -> list[str]:
    return [partition_name(m) for m in months]


def listed() -> list[str]:
    return [name for name, _ in partitions_list()]


def in_own_connection(tenant: Any, work: Callable[[], T]) -> T:
    """Run ``work`` in a thread with a connection of its own (autocommit) in ``tenant``'s schema."""
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            connection.set_tenant(tenant)
            result.append(work())
        except BaseException as exc:  # handed to the test's thread
            failure.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    if failure:
        raise failure[0]
    assert result, "the thread did not finish"
    return result[0]


def drop_committed(tenant: Any, *partitions: str) -> None:
    with psycopg.connect(_database_url(), autocommit=True) as own:
        for name in partitions:
            own.execute(f'DROP TABLE IF EXISTS "{tenant.schema_name}".{name}')


# --- Made ------------------------------------------------------------------------------------------


def test_ensure_makes_every_month_of_the_range_once() -> None:
    created = partitions_ensure(datetime(2023, 11, 20, tzinfo=UTC), datetime(2024, 2, 3, tzinfo=UTC))

    assert created == names(month(2023, 11), month(2023, 12), month(2024, 1), month(2024, 2))
    assert partitions_ensure(month(2023, 12), month(2024, 1)) == []
    assert set(created) <= set(listed())


def test_a_partition_made_holds_its_month_and_only_it() -> None:
    partitions_ensure(month(2023, 5), month(2023, 5))
    MeterReadingFactory(sampled_at=datetime(2023, 5, 31, 23, 59, 59, tzinfo=UTC))
    MeterReadingFactory(sampled_at=month(2023, 6))  # the next month: a partition of its own

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT sampled_at FROM {partition_name(month(2023, 5))}")  # noqa: S608 - our own table
        assert cursor.fetchall() == [(datetime(2023, 5, 31, 23, 59, 59, tzinfo=UTC),)]


def test_partitions_are_listed_in_the_active_schema_only(other_tenant) -> None:
    with tenant_context(other_tenant):
        partitions_ensure(month(2022, 3), month(2022, 3))
        in_beta = listed()
    in_alpha = listed()

    assert partition_name(month(2022, 3)) in in_beta
    assert partition_name(month(2022, 3)) not in in_alpha
    with schema_context(get_public_schema_name()):
        assert partitions_list() == []


def test_making_a_month_neither_waits_for_nor_stops_a_reader_of_the_readings(tenant) -> None:
    """A transaction still reading the readings (a report) does not hold up the month's making."""
    reader = psycopg.connect(_database_url())
    try:
        reader.execute(f"SET search_path TO {tenant.schema_name}, public")
        reader.execute("SELECT count(*) FROM chargepoint_meterreading").fetchone()  # holds its lock until it ends
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL lock_timeout = '3s'")  # were it to wait, it fails in 3 s, not hangs
        started = time.monotonic()
        with transaction.atomic():
            created = partitions_ensure(month(2019, 2), month(2019, 2))
        took = time.monotonic() - started
        # ... and the reader reads on meanwhile.
        reader.execute("SELECT count(*) FROM chargepoint_meterreading").fetchone()
    finally:
        reader.close()

    assert created == names(month(2019, 2))
    assert took < 2


def test_two_connections_making_the_same_month_at_once_both_succeed(tenant) -> None:
    """The second waits for the first and finds the month made, instead of failing on it."""
    target = month(2019, 1)
    made = threading.Event()
    outcomes: dict[str, Any] = {}

    def first() -> list[str]:
        with transaction.atomic():
            created = partitions_ensure(target, target)
            made.set()
            time.sleep(1.5)  # the second tries meanwhile
        return created

    def second() -> list[str]:
        made.wait(30)
        with transaction.atomic():
            return partitions_ensure(target, target)

    def run(key: str, work: Callable[[], list[str]]) -> None:
        try:
            outcomes[key] = in_own_connection(tenant, work)
        except Exception as exc:
            outcomes[key] = exc

    threads = [threading.Thread(target=run, args=(key, work)) for key, work in (("a", first), ("b", second))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        drop_committed(tenant, partition_name(target))

    assert outcomes == {"a": names(target), "b": []}


# --- Upkeep -----------------------------------------------------------------------------------------


@pytest.fixture
def upkeep(settings) -> datetime:
    """Months January to May 2024 with a reading in March and two in April; retention 60 days,
    two months ahead. Returns the run's ``now``: the retention cutoff is 1 April 2024, 00:00."""
    settings.TELEMETRY_RETENTION_DAYS = 60
    settings.TELEMETRY_PARTITIONS_AHEAD_MONTHS = 2
    partitions_ensure(month(2024, 1), month(2024, 5))
    MeterReadingFactory(sampled_at=datetime(2024, 3, 31, 23, 0, tzinfo=UTC), connector_no=1)
    MeterReadingFactory(sampled_at=datetime(2024, 4, 1, 0, 0, tzinfo=UTC), connector_no=2)
    MeterReadingFactory(sampled_at=datetime(2024, 4, 20, tzinfo=UTC), connector_no=3)
    with connection.cursor() as cursor:
        # The station references are checked at commit; a month with checks pending cannot be
        # dropped in the same transaction. Checked now, as if committed long ago.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    return datetime(2024, 5, 31, tzinfo=UTC)


def of_2024() -> QuerySet[MeterReading]:
    """The upkeep fixture's readings (committed ones of other suites are in later months)."""
    return MeterReading.objects.filter(sampled_at__gte=month(2024, 1), sampled_at__lt=month(2025, 1))


def test_upkeep_makes_the_months_ahead_and_drops_only_months_wholly_past_the_retention(upkeep) -> None:
    outcome = partitions_maintain(now=upkeep)

    assert outcome.created == names(month(2024, 6), month(2024, 7))
    assert outcome.dropped == names(month(2024, 1), month(2024, 2), month(2024, 3))
    assert outcome.busy == []
    kept = listed()
    assert set(names(*(month(2024, m) for m in (4, 5, 6, 7)))) <= set(kept)
    assert not set(outcome.dropped) & set(kept)
    # April holds the cutoff: kept whole, its first reading (as old as the cutoff) included.
    assert sorted(of_2024().values_list("connector_no", flat=True)) == [2, 3]


def test_upkeep_in_a_dry_run_makes_and_drops_nothing_and_says_what_it_would(upkeep) -> None:
    before = listed()

    outcome = partitions_maintain(now=upkeep, dry_run=True)

    assert outcome.created == names(month(2024, 6), month(2024, 7))
    assert outcome.dropped == names(month(2024, 1), month(2024, 2), month(2024, 3))
    assert listed() == before
    assert of_2024().count() == 3


def test_a_month_still_being_read_is_left_to_the_next_run(tenant, settings) -> None:
    """A drop waits for a reader at most ``DROP_LOCK_TIMEOUT``, then leaves the month for the next run."""
    old = month(2018, 1)
    name = partition_name(old)
    now = timezone.now()
    # Past the retention: 2018 only (the months other tests keep committed are later).
    settings.TELEMETRY_RETENTION_DAYS = (now - month(2019, 6)).days
    reader = psycopg.connect(_database_url())
    try:
        in_own_connection(tenant, lambda: partitions_ensure(old, old))
        reader.execute(f"SET search_path TO {tenant.schema_name}, public")
        reader.execute("SELECT count(*) FROM chargepoint_meterreading WHERE sampled_at < '2018-02-01'").fetchone()
        started = time.monotonic()
        busy = in_own_connection(tenant, lambda: partitions_maintain(now=now))
        took = time.monotonic() - started
        reader.rollback()
        after = in_own_connection(tenant, lambda: partitions_maintain(now=now))
    finally:
        reader.close()
        drop_committed(tenant, name)

    assert (busy.dropped, busy.busy) == ([], [name])
    assert took < DROP_LOCK_TIMEOUT.total_seconds() + 10
    assert (after.dropped, after.busy) == ([name], [])


def test_the_upkeep_task_runs_the_upkeep_in_its_schema(settings) -> None:
    settings.TELEMETRY_PARTITIONS_AHEAD_MONTHS = 3
    ahead = timezone.now()
    for _ in range(3):
        ahead = (ahead.replace(day=1) + timedelta(days=32)).replace(day=1)

    result = telemetry_partitions_maintain.apply().get()

    assert partition_name(ahead) in result["created"]
    assert partition_name(ahead) in listed()


def test_the_daily_beat_entry_sends_one_upkeep_task_per_organisation(tenant, other_tenant) -> None:
    entry = django_settings.CELERY_BEAT_SCHEDULE["chargepoint-telemetry-partitions"]
    assert entry["task"] == telemetry_partitions_maintain_all.name
    assert entry["schedule"] == 86400.0
    sent: list[tuple[str, str]] = []

    def record(sender: str | None = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
        sent.append((str(sender), (headers or {}).get("_schema_name", "")))

    before_task_publish.connect(record, weak=False)
    try:
        with schema_context(get_public_schema_name()):
            chunks = telemetry_partitions_maintain_all.apply().get()
            schemas = sorted(tenant_schemas_active())
            chunk_tasks = list(sent)
            sent.clear()
            count = telemetry_partitions_maintain_chunk.apply(kwargs={"schemas": schemas}).get()
    finally:
        before_task_publish.disconnect(record)

    assert {tenant.schema_name, other_tenant.schema_name} <= set(schemas)
    assert chunks == len(chunk_tasks) >= 1
    assert {name for name, _ in chunk_tasks} == {telemetry_partitions_maintain_chunk.name}
    assert count == len(schemas)
    assert sorted(sent) == [(telemetry_partitions_maintain.name, schema) for schema in schemas]


# --- The operator's command ----------------------------------------------------------------------------------


def run(*args: str) -> str:
    out = StringIO()
    call_command("telemetry_partitions", *args, stdout=out)
    return out.getvalue()


def test_the_command_lists_partitions_with_their_rows_and_sizes(upkeep) -> None:
    output = run("--tenant", "alpha")

    usage = {item.name: item for item in partitions_usage()}
    april = usage[partition_name(month(2024, 4))]
    assert april.rows == 2
    assert april.bytes > 0
    lines = {line.split()[1]: line.split() for line in output.splitlines() if line.startswith("20")}
    assert lines[april.name][:3] == ["2024-04", april.name, "2"]
    assert lines[partition_name(month(2024, 3))][2] == "1"
    assert lines[partition_name(month(2024, 1))][2] == "0"
    assert set(lines) == set(usage)
    assert "kept 60 days" in output
    assert f"total {sum(item.rows for item in usage.values())} " in " ".join(output.split())


def test_the_command_dry_run_says_what_the_upkeep_would_do_and_does_nothing(upkeep) -> None:
    now = timezone.now()
    before = listed()

    output = run("--tenant", "alpha", "--maintain", "--dry-run")

    expected = partitions_maintain(now=now, dry_run=True)
    assert f"would make: {', '.join(expected.created) or 'nothing'}" in output
    assert f"would drop: {', '.join(expected.dropped)}" in output
    assert partition_name(month(2024, 1)) in expected.dropped  # 60 days: everything of 2024 goes
    assert listed() == before


def test_the_command_maintains(upkeep) -> None:
    output = run("--tenant", "alpha", "--maintain")

    assert f"dropped: {partition_name(month(2024, 1))}" in output
    assert partition_name(month(2024, 1)) not in listed()
    assert partition_name(month(2024, 1)) not in output.split("readings are kept")[1]


def test_the_command_names_an_unknown_organisation() -> None:
    with pytest.raises(CommandError, match="--tenant"):
        run("--tenant", "nobody")
