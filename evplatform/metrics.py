"""Prometheus metrics of the web and Celery processes (names start with ``evp_``; README, "Operations").

Counters and histograms are recorded where the work happens: HTTP requests in the web process
(``RequestMetricsMiddleware``), balancing runs and Celery tasks in the worker that ran them.
Gunicorn's workers and a prefork worker's children are separate processes, so with
``PROMETHEUS_MULTIPROC_DIR`` set (an empty directory of this server alone, read before
``prometheus_client`` is first imported) every process writes its values there and a scrape adds
them up (``MultiProcessCollector``); without it a process reports only its own values (right for
runserver and a threads or solo pool).

Gauges are read when scraped instead of kept per process (a per-process gauge would need a
multiprocess mode): the Celery queues' depth from RabbitMQ and the number of sites currently over
their limit from Redis, each cached for ``LIVE_CACHE_S`` and served by the web's ``/metrics``
only (one place; a worker's metrics port serves its own counters).
"""

import glob
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

# Outcomes of a balance_site task: the run's status (ok, partial, failed: every push accepted,
# some not, or the run raised) or skipped (the site is gone, or another run held its lock and a
# new request was queued).
RUN_OUTCOMES = ("ok", "partial", "failed", "skipped")
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

BALANCING_RUN_SECONDS = Histogram(
    "evp_balancing_run_seconds",
    "Duration of one site's balancing run (lock, build, solve, pushes, books), seconds.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0),
)
BALANCING_RUNS = Counter("evp_balancing_runs", "Balancing tasks by outcome.", ["outcome"])
BALANCING_RUNS_OVER_LIMIT = Counter(
    "evp_balancing_runs_over_limit",
    "Balancing runs that found the site meter's measured draw above the site's limit.",
)
TASK_SECONDS = Histogram(
    "evp_celery_task_seconds",
    "Duration of Celery tasks by task name, seconds.",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0),
)
TASK_FAILURES = Counter("evp_celery_task_failures", "Celery tasks that raised, by task name.", ["task"])
HTTP_REQUESTS = Counter("evp_http_requests", "HTTP requests answered, by method and status code.", ["method", "status"])
HTTP_SECONDS = Histogram(
    "evp_http_request_seconds",
    "Time to answer an HTTP request, seconds.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
for _outcome in RUN_OUTCOMES:
    BALANCING_RUNS.labels(_outcome)

LIVE_CACHE_S = 5.0
BROKER_TIMEOUT_S = 2.0


def multiprocess_dir() -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR`` or None; set at all (even empty) is multiprocess mode, as in prometheus_client."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return None
    return os.environ["PROMETHEUS_MULTIPROC_DIR"] or "."


def process_registry() -> CollectorRegistry:
    """This server's own metrics: every process's values added up in multiprocess mode, else this process's."""
    if multiprocess_dir() is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


def exposition() -> bytes:
    """The web's ``/metrics`` text: the server's metrics, then the queue and site gauges."""
    return generate_latest(process_registry()) + generate_latest(_live_registry)


def forget_dead_processes(*, keep_pid: int) -> int:
    """Delete other processes' value files in ``PROMETHEUS_MULTIPROC_DIR`` (a restart's leftovers); returns the count.

    For a Celery worker's main process before it forks its pool: the directory is its alone.
    """
    directory = multiprocess_dir()
    if directory is None:
        return 0
    removed = 0
    for path in glob.glob(os.path.join(directory, "*.db")):
        if not path.endswith(f"_{keep_pid}.db"):
            os.remove(path)
            removed += 1
    return removed


# --- Balancing ------------------------------------------------------------------------------


@dataclass
class RunObservation:
    """What one balance_site task did; ``ran`` sets it from the run (None: skipped)."""

    outcome: str = "failed"
    over_limit: bool | None = None

    def ran(self, run: Any) -> None:
        if run is None:
            self.outcome = "skipped"
            return
        self.outcome = str(run.status)
        self.over_limit = bool((run.limits or {}).get("site_over_limit"))


@contextmanager
def balancing_run_observed(*, schema: str, site_id: int) -> Iterator[RunObservation]:
    """Time a balancing task and count its outcome (``failed`` if the block raises).

    A skipped run's time is left out of the histogram: it did not run. A run's over-limit finding
    is also kept in Redis, for ``evp_sites_over_limit``.
    """
    observation = RunObservation()
    started = time.perf_counter()
    try:
        yield observation
    finally:
        if observation.outcome != "skipped":
            BALANCING_RUN_SECONDS.observe(time.perf_counter() - started)
        BALANCING_RUNS.labels(observation.outcome).inc()
        if observation.over_limit is not None:
            if observation.over_limit:
                BALANCING_RUNS_OVER_LIMIT.inc()
            _site_over_limit_note(schema=schema, site_id=site_id, over=observation.over_limit)


def sites_over_limit_key() -> str:
    """Redis sorted set of the sites whose last run was over the limit: ``schema:site_id`` scored by when."""
    return f"evp{settings.CELERY_QUEUE_PREFIX}::sites-over-limit"


def _site_over_limit_note(*, schema: str, site_id: int, over: bool) -> None:
    from evplatform.redis import REDIS_ERRORS, get_redis, redis_outage

    if redis_outage.skip():
        return
    member = f"{schema}:{site_id}"
    try:
        if over:
            get_redis().zadd(sites_over_limit_key(), {member: time.time()})
        else:
            get_redis().zrem(sites_over_limit_key(), member)
    except REDIS_ERRORS as exc:
        redis_outage.failed(exc, "evp_sites_over_limit is not updated")
        return
    redis_outage.answered()


def sites_over_limit_window_s() -> float:
    """A site counts as over its limit this long after a run found it so (three sweeps), unless a later run did not."""
    return 3 * float(settings.BALANCING_SWEEP_SECONDS)


# --- Celery tasks ----------------------------------------------------------------------------

_task_started: dict[str, float] = {}


def task_started(task_id: str) -> None:
    _task_started[task_id] = time.perf_counter()


def task_finished(task_id: str, task_name: str) -> None:
    started = _task_started.pop(task_id, None)
    if started is not None:
        TASK_SECONDS.labels(task_name).observe(time.perf_counter() - started)


def task_failed(task_name: str) -> None:
    TASK_FAILURES.labels(task_name).inc()


# --- HTTP -------------------------------------------------------------------------------------


class RequestMetricsMiddleware:
    """Counts every answered request by method and status and times it (probes excepted: they are answered before)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        HTTP_SECONDS.observe(time.perf_counter() - started)
        method = request.method if request.method in HTTP_METHODS else "other"
        HTTP_REQUESTS.labels(method, str(response.status_code)).inc()
        return response


# --- Gauges read at scrape time (web only) --------------------------------------------------


class _Cached:
    """The families of a slow read, kept for ``LIVE_CACHE_S`` (one scrape at a time reads)."""

    def __init__(self, read: Callable[[], list[Metric]]) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._at = 0.0
        self._families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            if time.monotonic() - self._at >= LIVE_CACHE_S:
                self._families = self._read()
                self._at = time.monotonic()
            return list(self._families)


def _queue_figures() -> dict[str, tuple[int, int]]:
    """Each declared queue's (messages, consumers), from a passive declare: reads a queue, never creates it.

    A queue nobody declared yet (no worker has started) is left out: the broker answers "not
    found" and closes that channel, so each queue gets a channel of its own.
    """
    from amqp.exceptions import NotFound
    from kombu import Connection

    from evplatform.celery import QUEUES, queue_name

    figures: dict[str, tuple[int, int]] = {}
    with Connection(settings.CELERY_BROKER_URL, connect_timeout=BROKER_TIMEOUT_S) as connection:
        connection.ensure_connection(max_retries=0)
        for queue in QUEUES:
            channel: Any = connection.channel()
            try:
                _name, waiting, consuming = channel.queue_declare(queue=queue_name(queue), passive=True)
            except NotFound:
                continue
            figures[queue] = (waiting, consuming)
            channel.close()
    return figures


def _read_queues() -> list[Metric]:
    from evplatform.health import deadline

    up = GaugeMetricFamily("evp_celery_broker_up", "1 if the broker answered the last queue read, else 0.")
    future = deadline.start("metrics-queues", _queue_figures)
    state, detail = deadline.outcome(future, BROKER_TIMEOUT_S)
    if state != "ok":  # an unreachable broker, a refused login, a queue not declared yet
        logger.warning("metrics: cannot read the Celery queues from the broker (%s)", detail)
        up.add_metric([], 0)
        return [up]
    messages = GaugeMetricFamily("evp_celery_queue_messages", "Messages waiting in a Celery queue.", labels=["queue"])
    consumers = GaugeMetricFamily(
        "evp_celery_queue_consumers", "Consumers (workers) of a Celery queue.", labels=["queue"]
    )
    for queue, (waiting, consuming) in future.result().items():
        messages.add_metric([queue], waiting)
        consumers.add_metric([queue], consuming)
    up.add_metric([], 1)
    return [messages, consumers, up]


def _read_sites_over_limit() -> list[Metric]:
    from evplatform.health import quick_redis
    from evplatform.redis import REDIS_ERRORS

    gauge = GaugeMetricFamily(
        "evp_sites_over_limit",
        "Sites whose latest balancing run (within three sweeps) found the measured draw above the limit.",
    )
    key = sites_over_limit_key()
    try:
        client = quick_redis()
        client.zremrangebyscore(key, "-inf", time.time() - sites_over_limit_window_s())
        gauge.add_metric([], client.zcard(key))
    except REDIS_ERRORS as exc:
        logger.warning("metrics: cannot read the sites over their limit from Redis (%s)", exc)
        return []
    return [gauge]


class _LiveCollector(Collector):
    def __init__(self) -> None:
        self._parts = [_Cached(_read_queues), _Cached(_read_sites_over_limit)]

    def collect(self) -> Iterable[Metric]:
        for part in self._parts:
            yield from part.collect()


_live_registry = CollectorRegistry(auto_describe=False)
_live_registry.register(_LiveCollector())
