"""Two beats: only the holder of the PostgreSQL leader lock sends; the standby takes over when it goes.

First two real ``LeaderScheduler`` instances in this process (their sends recorded instead of
published), then two real `celery beat` processes of their own deployment (queue prefix), the
active one killed with SIGKILL.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

from evplatform.beat import LeaderScheduler
from evplatform.celery import app
from tests.conftest import _database_url, broker_queues_delete

pytestmark = pytest.mark.django_db(transaction=False)

WAIT_S = 30


class RecordingScheduler(LeaderScheduler):
    """The real scheduler, with what it would publish kept in ``sent`` instead."""

    def __init__(self, *args, lock_key: int, **kwargs) -> None:
        self.sent: list[str] = []
        super().__init__(*args, **kwargs)
        self.lock_key = lock_key

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        self.sent.append(entry.name)

    def all_due(self) -> None:
        """Every entry last ran a day ago (a new entry is first due one interval after it appears)."""
        for entry in self.schedule.values():
            entry.last_run_at = entry.default_now() - timedelta(days=1)
        self._heap = None


@pytest.fixture
def two_schedulers(tmp_path, settings) -> Iterator[tuple[RecordingScheduler, RecordingScheduler]]:
    settings.BEAT_LEADER_CHECK_S = 0.2
    lock_key = int.from_bytes(os.urandom(7), "big")
    pair = tuple(
        RecordingScheduler(app=app, schedule_filename=str(tmp_path / name), lock_key=lock_key) for name in "ab"
    )
    for scheduler in pair:
        scheduler.all_due()
    yield pair
    for scheduler in pair:
        scheduler.close()


def tick(scheduler: RecordingScheduler, times: int = 12) -> None:
    for _ in range(times):
        scheduler.tick()


def backend_pid(scheduler: RecordingScheduler) -> int:
    assert scheduler._lock_conn is not None
    return scheduler._lock_conn.info.backend_pid


def test_only_the_lock_holder_sends_and_the_standby_takes_over_when_its_connection_is_lost(
    two_schedulers, caplog
) -> None:
    active, standby = two_schedulers
    caplog.set_level("INFO", logger="evplatform.beat")

    tick(active)
    tick(standby)

    every_entry = set(active.schedule)
    assert set(app.conf.beat_schedule) <= every_entry
    assert set(active.sent) == every_entry  # never run before: every entry was due
    assert standby.sent == []
    assert (active.is_leader, standby.is_leader) == (True, False)
    assert any("standing by" in r.getMessage() for r in caplog.records)

    # The active beat's session ends (a network cut, a restarted PgBouncer): PostgreSQL frees its lock.
    with psycopg.connect(_database_url(), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", [backend_pid(active)])
    sent_before = len(active.sent)
    deadline = time.monotonic() + WAIT_S
    while not standby.is_leader and time.monotonic() < deadline:
        standby.tick()  # a tick or two: the backend goes as soon as it has read the signal
        time.sleep(0.05)

    assert standby.is_leader
    tick(standby)
    assert set(standby.sent) == every_entry  # what the old leader last sent is due again here
    tick(active)
    assert not active.is_leader  # found its connection gone and could not take the lock back
    assert len(active.sent) == sent_before
    assert any("lost the connection that holds the leader lock" in r.getMessage() for r in caplog.records)


def test_closing_the_active_scheduler_hands_over_at_once(two_schedulers) -> None:
    active, standby = two_schedulers
    tick(active)
    tick(standby)
    assert (active.is_leader, standby.is_leader) == (True, False)

    active.close()  # beat shutting down: its session ends, and with it the lock
    deadline = time.monotonic() + WAIT_S
    while not standby.is_leader and time.monotonic() < deadline:
        standby.tick()  # the server ends the backend a moment after the client hung up
        time.sleep(0.05)

    assert standby.is_leader


# --- Two real `celery beat` processes --------------------------------------------------------

PREFIX = f"{settings.CELERY_QUEUE_PREFIX}beat{os.getpid()}."


def start_beat(name: str, tmp_path: Path) -> tuple[subprocess.Popen[str], list[str]]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "evplatform.settings.test",
        "DATABASE_URL": _database_url(),
        "CELERY_QUEUE_PREFIX": PREFIX,  # its own deployment: own queues, own leader lock
        "BEAT_LEADER_CHECK_S": "0.5",
    }
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "evplatform",
        "beat",
        "--loglevel=INFO",
        f"--schedule={tmp_path / name}",
        f"--pidfile={tmp_path / name}.pid",
    ]
    process = subprocess.Popen(
        command, cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)

    threading.Thread(target=pump, daemon=True).start()
    return process, lines


def wait_for_line(lines: list[str], text: str, since: int = 0) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if any(text in line for line in lines[since:]):
            return
        time.sleep(0.1)
    pytest.fail(f"no {text!r} within {WAIT_S}s:\n{''.join(lines)}")


@pytest.fixture
def beat_deployment() -> Iterator[None]:
    """The beats' own queues, declared first so their sends land somewhere, and deleted after."""
    from kombu import Exchange, Queue

    exchange = Exchange(f"{PREFIX}evplatform", type="direct", durable=True)
    names = [f"{PREFIX}{q}" for q in ("balancing", "telemetry", "reports")]
    with app.connection_for_write() as broker:
        channel = broker.channel()
        for name in names:
            Queue(name, exchange, routing_key=name, durable=True)(channel).declare()
    yield
    broker_queues_delete(PREFIX)


def test_two_celery_beat_processes_one_sends_and_the_other_takes_over_when_it_is_killed(
    beat_deployment, tmp_path
) -> None:
    first, first_lines = start_beat("first", tmp_path)
    second = None
    try:
        wait_for_line(first_lines, "took the leader lock")
        wait_for_line(first_lines, "Sending due task")
        second, second_lines = start_beat("second", tmp_path)
        wait_for_line(second_lines, "standing by")
        time.sleep(2)  # four of its ticks: it must not send
        assert not any("Sending due task" in line for line in second_lines), "".join(second_lines)

        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed_at = time.monotonic()
        wait_for_line(second_lines, "took the leader lock")
        took_over_s = time.monotonic() - killed_at
        wait_for_line(second_lines, "Sending due task")
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(15)

    assert took_over_s < 5  # a tick or two of 0.5 s, plus the log line's way here
