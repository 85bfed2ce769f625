"""Health of every process: HTTP probes of the web, liveness files of Celery workers and beat.

Web: ``HealthMiddleware`` sits before django-tenants' ``TenantMainMiddleware`` and answers
``/healthz``, ``/readyz`` and ``/metrics`` for ANY Host header, before anything reads the host
(``request.get_host`` checks ``ALLOWED_HOSTS``; the tenant lookup needs a known domain), so a
load balancer or an orchestrator probing ``10.0.0.5:8000`` gets an answer instead of a 400/404:

- ``/healthz``: the process answers (200 ``ok``); touches nothing else.
- ``/readyz``: PostgreSQL answers ``SELECT 1``, Redis answers PING and the broker accepts a
  connection, each within ``READINESS_TIMEOUT_S``, checked side by side: 200, else 503 and a JSON
  body naming what failed.
- ``/metrics``: Prometheus text (``evplatform.metrics``), only to a caller on
  ``METRICS_ALLOWED_NETWORKS`` (a request that came through a proxy does not count as one) or
  one that sends ``Authorization: Bearer <METRICS_TOKEN>``; anyone else gets 403.

Celery has no HTTP port: a worker's consumer rewrites ``worker-<nodename>.json`` in
``HEALTHCHECK_DIR`` every ``HEALTHCHECK_INTERVAL_S`` from its event loop (so a stuck loop, or a
lost broker connection, stops it), and beat's scheduler writes ``beat.json`` at every tick,
leader or standby. ``python manage.py healthcheck worker|beat|web`` (exit 0 or 1) checks those
files' age, or GETs the web's ``/healthz``: a cheap Docker HEALTHCHECK.
"""

import ipaddress
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from functools import lru_cache
from hmac import compare_digest
from pathlib import Path
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
# Headers a proxy adds: such a request's REMOTE_ADDR is the proxy's, not the caller's.
PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


# --- Checks with a deadline -------------------------------------------------------------------


class _Deadline:
    """Runs each kind of check in a thread of its own; callers wait for its answer at most a timeout.

    A check that hangs (a black-holed host) keeps its thread until its own socket timeouts end
    it; meanwhile later callers wait on that same check instead of starting another thread, so
    a probe every few seconds never piles threads up, and two probes at once share one check.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, Future[Any]] = {}

    def start(self, name: str, check: Callable[[], Any]) -> "Future[Any]":
        with self._lock:
            future = self._running.get(name)
            if future is not None:
                return future
            future = self._running[name] = Future()

        def target() -> None:
            try:
                future.set_result(check())
            except Exception as exc:
                future.set_exception(exc)
            finally:
                with self._lock:
                    self._running.pop(name, None)

        threading.Thread(target=target, name=f"health-{name}", daemon=True).start()
        return future

    @staticmethod
    def outcome(future: "Future[Any]", timeout_s: float) -> tuple[str, str]:
        """``("ok", "")``, ``("timeout", ...)`` or ``("error", the check's error)``."""
        try:
            future.result(timeout=max(0.0, timeout_s))
        except FutureTimeout:
            return "timeout", "no answer in time"
        except Exception as exc:
            return "error", f"{type(exc).__name__}: {exc}"
        return "ok", ""


deadline = _Deadline()


@lru_cache(maxsize=1)
def quick_redis() -> Any:
    """A Redis client that gives up fast (no retries): for probes and scrapes, never for work."""
    import redis

    timeout_s = float(settings.READINESS_TIMEOUT_S)
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def _check_database() -> None:
    import psycopg

    db = settings.DATABASES["default"]
    params = {
        "dbname": db["NAME"],
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "host": db.get("HOST") or None,
        "port": db.get("PORT") or None,
        "connect_timeout": max(1, int(settings.READINESS_TIMEOUT_S)),
        "application_name": "evplatform readiness",
    }
    with psycopg.connect(autocommit=True, **{k: v for k, v in params.items() if v is not None}) as conn:
        conn.execute("SELECT 1")


def _check_redis() -> None:
    quick_redis().ping()


def _check_broker() -> None:
    from kombu import Connection

    with Connection(settings.CELERY_BROKER_URL, connect_timeout=float(settings.READINESS_TIMEOUT_S)) as connection:
        connection.ensure_connection(max_retries=0)


READINESS_CHECKS: dict[str, Callable[[], None]] = {
    "database": _check_database,
    "redis": _check_redis,
    "broker": _check_broker,
}
_last_failed: set[str] = set()


def readiness() -> dict[str, str]:
    """Each dependency's state: ``ok``, ``timeout`` or ``error``, side by side within ``READINESS_TIMEOUT_S``.

    The errors themselves (they name hosts) go to the log, once when a check starts failing.
    """
    until = time.monotonic() + float(settings.READINESS_TIMEOUT_S)
    futures = {name: deadline.start(name, check) for name, check in READINESS_CHECKS.items()}
    outcomes = {name: deadline.outcome(future, until - time.monotonic()) for name, future in futures.items()}
    failed = {name for name, (state, _) in outcomes.items() if state != "ok"}
    for name in sorted(failed - _last_failed):
        logger.warning("readiness: %s failed: %s", name, outcomes[name][1])
    for name in sorted(_last_failed - failed):
        logger.warning("readiness: %s answers again", name)
    _last_failed.clear()
    _last_failed.update(failed)
    return {name: state for name, (state, _) in outcomes.items()}


# --- HTTP probes (web) ------------------------------------------------------------------------


def metrics_allowed(request: HttpRequest) -> bool:
    """A bearer token equal to ``METRICS_TOKEN``, or a direct caller on ``METRICS_ALLOWED_NETWORKS``."""
    token = settings.METRICS_TOKEN
    authorization = request.META.get("HTTP_AUTHORIZATION", "")
    if token and authorization.startswith("Bearer "):
        return compare_digest(authorization.removeprefix("Bearer ").strip().encode(), token.encode())
    if any(header in request.META for header in PROXY_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network, strict=False) for network in settings.METRICS_ALLOWED_NETWORKS)


class HealthMiddleware:
    """Answers the probes before the tenant middleware (see the module docstring); passes everything else on."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if path not in PROBE_PATHS:
            return self.get_response(request)
        response = self._answer(request, path)
        # Not logged by django.request as an error or warning: a 503 every few seconds while a
        # dependency is down is the readiness log line's news, said once (``readiness``).
        response._has_been_logged = True  # type: ignore[attr-defined]
        return response

    def _answer(self, request: HttpRequest, path: str) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return HttpResponse(status=405, headers={"Allow": "GET, HEAD"})
        if path == "/healthz":
            return HttpResponse("ok", content_type="text/plain")
        if path == "/readyz":
            states = readiness()
            failed = sorted(name for name, state in states.items() if state != "ok")
            body = {"status": "unavailable" if failed else "ok", "checks": states, "failed": failed}
            return JsonResponse(body, status=503 if failed else 200)
        if not metrics_allowed(request):
            return HttpResponse("forbidden\n", status=403, content_type="text/plain")
        from prometheus_client import CONTENT_TYPE_LATEST

        from evplatform.metrics import exposition

        return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


# --- Liveness files (workers, beat) -----------------------------------------------------------


def health_dir() -> Path:
    return Path(settings.HEALTHCHECK_DIR)


def worker_file(nodename: str) -> Path:
    return health_dir() / f"worker-{nodename.replace('/', '_')}.json"


def beat_file() -> Path:
    return health_dir() / "beat.json"


def liveness_write(path: Path, **state: Any) -> None:
    """Write ``{"at": <unix time>, **state}`` to ``path`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump({"at": time.time(), "pid": os.getpid(), **state}, handle)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def beat_tick(*, leader: bool) -> None:
    """Beat's scheduler ticked (``evplatform.beat``); never lets a full disk stop the schedule."""
    try:
        liveness_write(beat_file(), role="leader" if leader else "standby")
    except OSError:
        logger.warning("beat: cannot write its liveness file %s", beat_file(), exc_info=True)


def liveness_check(kind: str, *, max_age_s: float, name: str | None = None) -> tuple[bool, str]:
    """Whether the ``kind`` (worker, beat) liveness file was written within ``max_age_s``; and what was found.

    ``name`` picks a worker by node name (``celery@host``); without it the newest worker file counts.
    """
    if kind == "beat":
        candidates = [beat_file()]
    elif name is not None:
        candidates = [worker_file(name)]
    else:
        candidates = list(health_dir().glob("worker-*.json"))
    newest: dict[str, Any] | None = None
    newest_path: Path | None = None
    for path in candidates:
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if newest is None or float(state.get("at", 0)) > float(newest.get("at", 0)):
            newest, newest_path = state, path
    if newest is None or newest_path is None:
        return False, f"no {kind} liveness file in {health_dir()}"
    age_s = time.time() - float(newest.get("at", 0))
    details = ", ".join(f"{k}={v}" for k, v in newest.items() if k != "at")
    if age_s > max_age_s:
        return False, f"{newest_path.name} is {age_s:.0f} s old (more than {max_age_s:g} s): {details}"
    return True, f"{newest_path.name} written {age_s:.1f} s ago: {details}"
