"""One Redis client per process for locks, coalescing keys and the gateway registry.

Schema: none (Redis); tenant keys carry their schema name.

Redis keeps nothing durable here (it may run without persistence): only state that can be rebuilt
or lost without harm lives in it. Keys that belong to a tenant carry its schema name.

The client retries a command that failed on a connection error or a timeout (``client_options``:
three retries, 50-200 ms apart, on a new connection), so a pooled connection that went stale
when Redis restarted costs one retry instead of a lost command or reply; sockets time out after
a few seconds, so a Redis that stopped answering is an error soon, not a hang. Callers that
can do without Redis (a rebalance request goes straight to the broker, a run takes a
PostgreSQL lock) catch ``REDIS_ERRORS`` and ask ``redis_outage`` whether to try Redis at all
while it is down, so an outage costs one failed attempt every few seconds and one log line.
"""

import logging
import threading
import time
from functools import lru_cache
from typing import Any

import redis
import redis.asyncio.retry
from django.conf import settings
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

logger = logging.getLogger(__name__)

# What an unreachable or stalled Redis raises (redis-py's own classes, not the builtins).
REDIS_ERRORS: tuple[type[RedisError], ...] = (RedisConnectionError, RedisTimeoutError)
REDIS_RETRIES = 3
REDIS_BACKOFF_BASE_S = 0.025
REDIS_BACKOFF_CAP_S = 0.25
# Longer than any blocking read we make (BLPOP/XREAD wait at most 1 s per call).
REDIS_SOCKET_TIMEOUT_S = 5.0
REDIS_CONNECT_TIMEOUT_S = 2.0
# While Redis is down, callers with a fallback try it again at most this often (seconds).
REDIS_PROBE_INTERVAL_S = 2.0


def client_options(*, asyncio: bool = False) -> dict[str, Any]:
    """Connection options of the sync client here and (``asyncio=True``) the gateway's asyncio client.

    Both retry alike: a few attempts with exponential backoff on a new connection.
    """
    retry = redis.asyncio.retry.Retry if asyncio else Retry
    backoff = ExponentialBackoff(cap=REDIS_BACKOFF_CAP_S, base=REDIS_BACKOFF_BASE_S)
    return {
        "retry": retry(backoff, REDIS_RETRIES, supported_errors=REDIS_ERRORS),
        "retry_on_error": list(REDIS_ERRORS),
        "socket_timeout": REDIS_SOCKET_TIMEOUT_S,
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
    }


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, health_check_interval=30, **client_options())


class RedisOutage:
    """This process's view of whether Redis is reachable, for callers that have a fallback.

    ``failed`` after an error, ``answered`` after a success: the first failure of an outage is
    logged (with what the caller does instead) and so is the recovery, nothing in between.
    ``skip`` is true while Redis is down and was tried less than ``probe_interval_s`` ago, so
    a burst of requests during an outage does not pay the retries of each attempt.
    ``recovered_within`` tells readers of expiring keys that Redis was away a moment ago (the
    keys' owners may not have written them again yet).
    """

    def __init__(self, probe_interval_s: float = REDIS_PROBE_INTERVAL_S) -> None:
        self.probe_interval_s = probe_interval_s
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self.recovered_at: float | None = None
        self._last_probe = 0.0

    @property
    def is_down(self) -> bool:
        return self.down_since is not None

    def skip(self) -> bool:
        with self._lock:
            if self.down_since is None:
                return False
            now = time.monotonic()
            if now - self._last_probe >= self.probe_interval_s:
                self._last_probe = now  # this caller probes; the others skip meanwhile
                return False
            return True

    def failed(self, error: BaseException, fallback: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._last_probe = now
            if self.down_since is not None:
                return
            self.down_since = now
        logger.warning("Redis unreachable (%s): %s until it answers again", error, fallback)

    def answered(self) -> None:
        with self._lock:
            if self.down_since is None:
                return
            now = time.monotonic()
            down_s = now - self.down_since
            self.down_since = None
            self.recovered_at = now
        logger.warning("Redis answers again after %.1f s", down_s)

    def recovered_within(self, seconds: float) -> bool:
        return self.recovered_at is not None and time.monotonic() - self.recovered_at < seconds


redis_outage = RedisOutage()


def tenant_key(schema_name: str, *parts: object) -> str:
    """A Redis key scoped to one deployment and tenant schema, e.g. ``evp:acme:rebalance:12``.

    The deployment prefix (``CELERY_QUEUE_PREFIX``) keeps the tests and a running `make run`
    apart on one Redis, as it does for their queues.
    """
    return ":".join([f"evp{settings.CELERY_QUEUE_PREFIX}", schema_name, *(str(p) for p in parts)])
