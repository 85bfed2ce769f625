"""A celery beat that can run twice: the one holding a PostgreSQL advisory lock sends, the others stand by.

Schema: none (a session-level advisory lock on a connection of its own, in the platform's
database). One beat was a single point of failure: while it is down no sweep, rollup or report
is sent. Run a second (or third) `celery beat` anywhere with this scheduler (the default,
``CELERY_BEAT_SCHEDULER``): every tick, a scheduler that does not hold the lock tries
``pg_try_advisory_lock`` on its dedicated connection and, failing, sends nothing and logs that
it stands by; the holder checks that its connection still answers, since a session-level lock
lives exactly as long as its session. When the active beat dies, or its connection to
PostgreSQL is lost, PostgreSQL ends the session and frees the lock, and a standby takes it at
its next tick, within ``BEAT_LEADER_CHECK_S`` (5 s): the one it took over from, if still
alive, finds its connection gone at its own next tick and stands by. At most one tick's sends
can overlap in that moment; every scheduled task here is safe to run twice.

The lock connection is plain psycopg (not Django's, which workers and the fix-up close and
reopen) with TCP keepalives and a user timeout, so a silently dropped network path is noticed
in seconds. Behind PgBouncer it needs session pooling (the compose file's pool mode): in
transaction mode the lock would belong to whichever server connection ran that statement.
"""

import hashlib
import logging
import time
from typing import Any

import psycopg
from celery.beat import PersistentScheduler
from django.conf import settings

from evplatform.health import beat_tick

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5
# libpq: probe an idle connection after 10 s, every 5 s, give up after 3 unanswered probes; a
# send not acknowledged within 15 s fails the connection.
KEEPALIVE_OPTIONS = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
TCP_USER_TIMEOUT_MS = 15_000
STANDBY_LOG_EVERY_S = 600.0


def leader_lock_key() -> int:
    """The advisory lock key (signed 64-bit) of this deployment's beat (told apart by ``CELERY_QUEUE_PREFIX``)."""
    digest = hashlib.blake2b(f"evp:beat-leader:{settings.CELERY_QUEUE_PREFIX}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class LeaderScheduler(PersistentScheduler):
    """``PersistentScheduler`` that sends only while it holds the beat leader lock (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.lock_key = leader_lock_key()
        self.check_interval_s = float(settings.BEAT_LEADER_CHECK_S)
        self.is_leader = False
        self._lock_conn: psycopg.Connection[Any] | None = None
        self._standby_logged_at: float | None = None
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        leader = self.leader_check()
        beat_tick(leader=leader)  # the liveness file `manage.py healthcheck beat` reads
        if not leader:
            return self.check_interval_s
        delay = super().tick(*args, **kwargs)
        return min(delay, self.check_interval_s)

    def leader_check(self) -> bool:
        """Hold (or take) the lock; False, and nothing is sent this tick, while another beat holds it."""
        try:
            conn = self._lock_conn or self._connect()
            if self.is_leader:
                conn.execute("SELECT 1")  # the session answers, so its lock is still ours
                return True
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", [self.lock_key]).fetchone()
        except psycopg.Error as exc:
            self._disconnect()
            if self.is_leader:
                logger.warning("beat: lost the connection that holds the leader lock (%s); standing by", exc)
            else:
                logger.warning("beat: cannot reach PostgreSQL for the leader lock (%s); sending nothing", exc)
            self.is_leader = False
            return False
        if row is not None and row[0]:
            self.is_leader = True
            self._standby_logged_at = None
            self._heap = None  # rebuilt from the schedule: what fell due while standing by is sent now
            logger.warning("beat: took the leader lock; this beat sends the schedule")
            return True
        now = time.monotonic()
        if self._standby_logged_at is None or now - self._standby_logged_at >= STANDBY_LOG_EVERY_S:
            self._standby_logged_at = now
            logger.info(
                "beat: standing by: another beat holds the leader lock; trying again every %g s",
                self.check_interval_s,
            )
        return False

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._disconnect()  # ends the session, so a standby takes over at its next tick

    def _connect(self) -> psycopg.Connection[Any]:
        db = settings.DATABASES["default"]
        params: dict[str, Any] = {
            "dbname": db["NAME"],
            "user": db.get("USER") or None,
            "password": db.get("PASSWORD") or None,
            "host": db.get("HOST") or None,
            "port": db.get("PORT") or None,
            "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": "evplatform beat leader lock",
        }
        if params["host"] and not str(params["host"]).startswith("/"):
            params.update(KEEPALIVE_OPTIONS, tcp_user_timeout=TCP_USER_TIMEOUT_MS)
        self._lock_conn = psycopg.connect(autocommit=True, **{k: v for k, v in params.items() if v is not None})
        return self._lock_conn

    def _disconnect(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                logger.debug("beat: closing the leader lock connection failed", exc_info=True)

    @property
    def info(self) -> str:
        lock = f"pg advisory lock {self.lock_key}, checked every {self.check_interval_s:g} s"
        return f"{super().info}\n    . leader lock -> {lock}"
