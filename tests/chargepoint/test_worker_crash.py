"""A telemetry worker killed in the middle of a batch loses nothing and stores nothing twice.

Its own worker processes on their own queues (so the session's shared worker cannot take the
batch): the first is killed with SIGKILL while it writes (held there by a lock the test takes
on the readings table, so the kill cannot come too late); RabbitMQ gives the unacknowledged
message to the second, whose run of the whole batch lands every reading exactly once.
"""

import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from django.conf import settings

from chargepoint.models import MeterReading
from chargepoint.tasks import telemetry_ingest
from tests.chargepoint.conftest import wait_until
from tests.conftest import _database_url

pytestmark = pytest.mark.django_db

EVENTS = 40
SAMPLES_PER_EVENT = 500
T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)


class Worker:
    def __init__(self, prefix: str, name: str) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "evplatform.settings.test",
            "DATABASE_URL": _database_url(),
            "CELERY_QUEUE_PREFIX": prefix,
        }
        command = [sys.executable, "-m", "celery", "-A", "evplatform", "worker", "--pool=solo", "--loglevel=INFO"]
        command += ["--without-gossip", "--without-mingle", f"--hostname={name}-{os.getpid()}@%h"]
        self.process = subprocess.Popen(
            command, cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def saw(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


class WriteBlocker:
    """A connection of its own holding a SHARE lock on alpha's readings: inserts wait for it."""

    def __init__(self) -> None:
        self.connection = psycopg.connect(_database_url())
        self.connection.execute("SET search_path TO alpha, public")
        self.connection.execute("LOCK TABLE chargepoint_meterreading IN SHARE MODE")

    def writer_waiting(self) -> bool:
        """A backend waits for this lock to insert readings (a worker in the middle of a batch)."""
        self.connection.execute("SELECT pg_stat_clear_snapshot()")
        row = self.connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND query LIKE 'INSERT INTO chargepoint_meterreading %'"
        ).fetchone()
        return bool(row and row[0])

    def release(self) -> None:
        if not self.connection.closed:
            self.connection.rollback()
            self.connection.close()


def batch(cp: str) -> list[dict]:
    events = []
    for e in range(EVENTS):
        samples = []
        for s in range(SAMPLES_PER_EVENT):
            at = (T0 + timedelta(seconds=e * SAMPLES_PER_EVENT + s)).isoformat()
            samples.append(
                {
                    "at": at,
                    "measurand": "Current.Import",
                    "phase": "L1",
                    "location": "",
                    "context": "",
                    "value": "16",
                    "unit": "A",
                }
            )
        events.append(
            {
                "type": "meter",
                "cp": cp,
                "ts": T0.isoformat(),
                "connector": 1,
                "transaction_id": None,
                "samples": samples,
            }
        )
    return events


def test_a_worker_killed_mid_batch_loses_nothing_and_stores_nothing_twice(gw_fleet) -> None:
    cp = gw_fleet.chargers_16[7]
    prefix = f"{settings.CELERY_QUEUE_PREFIX}crash."
    readings = MeterReading.objects.filter(
        station__charge_point_id=cp, sampled_at__gte=T0, sampled_at__lt=T0 + timedelta(days=1)
    )
    expected = EVENTS * SAMPLES_PER_EVENT
    first = Worker(prefix, "crash-first")
    second = None
    blocker = None
    try:
        wait_until(lambda: first.saw(" ready."), timeout=90, what="first worker ready")
        blocker = WriteBlocker()
        telemetry_ingest.apply_async(
            kwargs={"events": batch(cp)},
            headers={"_schema_name": "alpha"},
            exchange=f"{prefix}evplatform",
            routing_key=f"{prefix}telemetry",
        )
        wait_until(lambda: first.saw("telemetry_ingest") and first.saw("received"), timeout=30, what="batch received")
        wait_until(blocker.writer_waiting, timeout=30, what="the worker writing the batch's readings")
        assert not first.saw("succeeded")
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(10)
        blocker.release()
        assert readings.count() == 0  # the dead worker's transaction left nothing behind

        second = Worker(prefix, "crash-second")
        try:
            wait_until(lambda: readings.count() >= expected, timeout=90, what="the batch re-run by the second worker")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nsecond worker:\n{''.join(second.lines[-40:])}") from None
        wait_until(lambda: second.saw("succeeded"), timeout=30, what="second worker done")
    finally:
        if blocker is not None:
            blocker.release()
        first.stop()
        if second is not None:
            second.stop()

    assert readings.count() == expected  # one row per instant: each sample its own second
    assert readings.values("sampled_at").distinct().count() == expected
    assert set(readings.values_list("connector_no", "current_l1_a", "extra")) == {(1, 16.0, None)}
