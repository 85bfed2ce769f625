"""Log lines that say whose they are: tenant, site, charger, task and request, as JSON in production.

Every ``logging.getLogger(...)`` call of the platform goes through the root handler that
``logging_config`` builds: with ``LOG_FORMAT=json`` (production's default) each record becomes
one JSON object per line (``timestamp``, ``level``, ``logger``, ``event`` (the message),
``exception`` when there is one, plus the ids bound for the work in hand); with ``plain`` (local,
test) a readable line with those ids appended.

The ids live in ``structlog.contextvars`` (a context variable, so each thread, task and asyncio
task has its own): ``RequestIdMiddleware`` and ``TenantContextMiddleware`` bind
``request_id`` and ``tenant`` (schema name) for a web request, the Celery signals in
``evplatform.celery`` bind ``task_id``, ``task_name`` and ``tenant`` for a task, and code that
knows more binds it with ``bind`` (``site``, ``charger``).

``error_reporting_init`` is the optional Sentry hook (``SENTRY_DSN``): sentry-sdk is imported
only when a DSN is set.
"""

import logging
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:  # imported by the settings: nothing of Django's at import time
    from django.http import HttpRequest, HttpResponse

# The ids a line may carry, in the order the plain format shows them.
CONTEXT_KEYS = ("tenant", "site", "charger", "task_name", "task_id", "request_id")
LOG_FORMATS = ("json", "plain")
REQUEST_ID_HEADER = "X-Request-ID"
# A request id we take from the caller (a proxy's): short and plain, so it cannot forge log fields.
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{8,64}")


def bind(**ids: Any) -> None:
    """Bind ids (``site="depot"``, ``charger="CP-1"``) to every later log line of this context; None is skipped.

    A task's ids are forgotten when it ends, a request's when the next one starts; elsewhere use ``bound``.
    """
    structlog.contextvars.bind_contextvars(**{key: value for key, value in ids.items() if value is not None})


@contextmanager
def bound(**ids: Any) -> Iterator[None]:
    """``bind`` for the ``with`` block only: the ids it set are put back as they were afterwards."""
    tokens = structlog.contextvars.bind_contextvars(**{key: value for key, value in ids.items() if value is not None})
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def bound_ids() -> dict[str, Any]:
    """The ids bound in this context now."""
    return dict(structlog.contextvars.get_contextvars())


def clear() -> None:
    """Forget every bound id (a new request or task starts from nothing)."""
    structlog.contextvars.clear_contextvars()


# Applied to records of the standard library's loggers (all of ours) before rendering.
_PRE_CHAIN: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def json_formatter() -> logging.Formatter:
    """The formatter of ``LOG_FORMAT=json``: one JSON object per line."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_PRE_CHAIN,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
    )


class PlainFormatter(logging.Formatter):
    """``%(asctime)s %(levelname)s %(name)s %(message)s``, then the bound ids as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        bound_ids = structlog.contextvars.get_contextvars()
        shown = " ".join(f"{key}={bound_ids[key]}" for key in CONTEXT_KEYS if key in bound_ids)
        if not shown:
            return line
        first, newline, rest = line.partition("\n")  # keep a traceback below the line
        return f"{first} [{shown}]{newline}{rest}"


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """The ``LOGGING`` setting for ``LOG_FORMAT`` (``json`` or ``plain``) at ``LOG_LEVEL``."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": "evplatform.logs.json_formatter"},
            "plain": {"()": "evplatform.logs.PlainFormatter"},
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": log_format}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"django.db.backends": {"level": "WARNING"}},
    }


structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.filter_by_level,
        structlog.stdlib.PositionalArgumentsFormatter(),
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)


def request_id_of(request: "HttpRequest") -> str:
    """The caller's ``X-Request-ID`` when it is a plain token, else a new one."""
    offered = request.META.get("HTTP_X_REQUEST_ID", "")
    return offered if _REQUEST_ID_RE.fullmatch(offered) else uuid.uuid4().hex


class RequestIdMiddleware:
    """First: forgets the thread's last request's ids, binds a ``request_id``, answers with ``X-Request-ID``.

    The ids stay bound after the response, so that Django's own line about a 4xx/5xx answer
    (logged once the middleware have returned) carries them too; the next request starts here.
    """

    def __init__(self, get_response: Callable[["HttpRequest"], "HttpResponse"]) -> None:
        self.get_response = get_response

    def __call__(self, request: "HttpRequest") -> "HttpResponse":
        clear()
        request_id = request_id_of(request)
        bind(request_id=request_id)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


class TenantContextMiddleware:
    """Binds ``tenant`` (schema name) to the request's log lines; right after ``TenantMainMiddleware``."""

    def __init__(self, get_response: Callable[["HttpRequest"], "HttpResponse"]) -> None:
        self.get_response = get_response

    def __call__(self, request: "HttpRequest") -> "HttpResponse":
        bind(tenant=getattr(getattr(request, "tenant", None), "schema_name", None))
        return self.get_response(request)


def error_reporting_init(*, dsn: str, traces_sample_rate: float, environment: str) -> None:
    """Send unhandled errors of web requests and Celery tasks (and ERROR log lines) to Sentry.

    Called from the settings when ``SENTRY_DSN`` is set, so every process (web, workers, beat,
    gateway) that loads them reports; sentry-sdk is imported only then.
    """
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        traces_sample_rate=traces_sample_rate,
        environment=environment or None,
        send_default_pii=False,
    )
