"""The Celery app: four queues split by latency, tenant schema carried on every task.

Tasks sent while a tenant schema is active (``tenant_context``, a tenant request, or another
tenant task) carry that schema in the ``_schema_name`` header (tenant-schemas-celery); the
worker switches to it before the task runs and back afterwards.
"""

import logging
import os
from typing import Any

from celery import bootsteps, signals
from django.conf import settings
from kombu import Exchange, Queue
from tenant_schemas_celery.app import CeleryApp
from tenant_schemas_celery.task import TenantTask as SchemaCarryingTask

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evplatform.settings.production")

QUEUE_BALANCING = "balancing"  # seconds matter: rebalancing, profile pushes
QUEUE_TELEMETRY = "telemetry"  # volume: meter values, status, transactions
QUEUE_REPORTS = "reports"  # heavy and patient: rollups, monthly reports
QUEUE_NOTIFICATIONS = "notifications"  # waits on others: emails and webhooks, retried with back-off
QUEUES = (QUEUE_BALANCING, QUEUE_TELEMETRY, QUEUE_REPORTS, QUEUE_NOTIFICATIONS)

# Tasks land on a queue by the app that defines them; a task may still name its own queue.
APP_QUEUES = {
    "balancing": QUEUE_BALANCING,
    "chargepoint": QUEUE_TELEMETRY,
    "billing": QUEUE_REPORTS,
    "tenants": QUEUE_REPORTS,
}


def queue_name(queue: str) -> str:
    """The broker's name for one of our logical queues (deployment prefix applied)."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; expected one of {', '.join(QUEUES)}")
    return f"{settings.CELERY_QUEUE_PREFIX}{queue}"


# Tasks whose latency matters more (or less) than their app's queue says: a dead gateway's
# chargers must be shown offline within seconds, and a charger's resync checks what it applies;
# the daily history prune is patient work that must not hold up a rebalance.
TASK_QUEUES = {
    "chargepoint.tasks.stations_gateway_sweep_chunk": QUEUE_BALANCING,
    "chargepoint.tasks.stations_gateway_sweep": QUEUE_BALANCING,
    "chargepoint.tasks.station_resync": QUEUE_BALANCING,
    "balancing.tasks.prune_history": QUEUE_REPORTS,
    "balancing.tasks.prune_history_all_tenants": QUEUE_REPORTS,
    "balancing.tasks.prune_history_chunk": QUEUE_REPORTS,
    # An alert's email or webhook waits on someone else's server (up to 5 s, then retries):
    # never in front of a rebalance, never behind an hour-long report.
    "balancing.notifications.tasks.email_deliver": QUEUE_NOTIFICATIONS,
    "balancing.notifications.tasks.webhook_deliver": QUEUE_NOTIFICATIONS,
}


def route_task(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> dict[str, str]:
    """Celery router: the task's own queue if it has one, else the queue of the app its module belongs to."""
    app_label = name.split(".", 1)[0]
    return {"queue": queue_name(TASK_QUEUES.get(name) or APP_QUEUES.get(app_label, QUEUE_REPORTS))}


class TenantTask(SchemaCarryingTask):
    """Base task: runs in the tenant schema it was sent from.

    ``requires_tenant = True`` (the default) refuses to run in ``public``: a tenant task sent
    without an active tenant would otherwise read and write the wrong schema.
    """

    abstract = True
    requires_tenant = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from django_tenants.utils import get_public_schema_name

        from evplatform.services import active_schema

        if self.requires_tenant and active_schema() == get_public_schema_name():
            raise RuntimeError(
                f"task {self.name} needs a tenant schema but was sent from '{get_public_schema_name()}'; "
                "send it inside tenant_context(tenant)"
            )
        return super().__call__(*args, **kwargs)


class PublicTask(TenantTask):
    """Base for tasks that run in ``public`` on purpose (fan-out over tenants, registry work)."""

    abstract = True
    requires_tenant = False


# Celery's Django fix-up, except that workers keep database connections across tasks (CONN_MAX_AGE).
app = CeleryApp("evplatform", task_cls=TenantTask, fixups=["evplatform.celery_django:fixup"])
app.config_from_object("django.conf:settings", namespace="CELERY")


def _configure_queues(**_: Any) -> None:
    exchange = Exchange(f"{settings.CELERY_QUEUE_PREFIX}evplatform", type="direct", durable=True)
    app.conf.task_queues = [Queue(queue_name(q), exchange, routing_key=queue_name(q), durable=True) for q in QUEUES]
    app.conf.task_default_queue = queue_name(QUEUE_REPORTS)
    app.conf.task_default_exchange = exchange.name
    app.conf.task_default_routing_key = queue_name(QUEUE_REPORTS)
    app.conf.task_routes = (route_task,)


app.on_after_configure.connect(_configure_queues, weak=False)
app.autodiscover_tasks()


# --- Operations: log ids, metrics and liveness of workers (README, "Operations") -------------


# The ids bound before a task ran (an eager task runs inside a request or another task), put back after it.
_ids_before_task: dict[str, dict[str, Any]] = {}


@signals.task_prerun.connect(weak=False)
def _task_context(task_id: str, task: Any, **_: Any) -> None:
    from tenant_schemas_celery.app import get_schema_name_from_task

    from evplatform import logs, metrics

    _ids_before_task[task_id] = logs.bound_ids()
    logs.clear()  # nothing of the thread's last task stays on this one's lines
    logs.bind(task_id=task_id, task_name=task.name, tenant=get_schema_name_from_task(task, {}) or "public")
    metrics.task_started(task_id)


@signals.task_postrun.connect(weak=False)
def _task_context_end(task_id: str, task: Any, **_: Any) -> None:
    from evplatform import logs, metrics

    metrics.task_finished(task_id, task.name)
    logs.clear()
    logs.bind(**_ids_before_task.pop(task_id, {}))


@signals.task_failure.connect(weak=False)
def _task_failure(sender: Any = None, **_: Any) -> None:
    from evplatform import metrics

    metrics.task_failed(getattr(sender, "name", "unknown"))


class LivenessFile(bootsteps.StartStopStep):
    """Rewrites the worker's liveness file (``evplatform.health``) every ``HEALTHCHECK_INTERVAL_S``.

    A step of the consumer, on its timer: the file stays fresh only while the consumer is
    connected to the broker and its event loop turns; it is removed on a clean shutdown.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Any = None

    def start(self, parent: Any) -> None:
        self._write(parent)
        self.tref = parent.timer.call_repeatedly(float(settings.HEALTHCHECK_INTERVAL_S), self._write, (parent,))

    def stop(self, parent: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def shutdown(self, parent: Any) -> None:
        from evplatform.health import worker_file

        self.stop(parent)
        worker_file(parent.hostname).unlink(missing_ok=True)

    def _write(self, parent: Any) -> None:
        from evplatform.health import liveness_write, worker_file

        try:
            liveness_write(worker_file(parent.hostname), node=parent.hostname)
        except OSError:
            logging.getLogger(__name__).warning("worker: cannot write its liveness file", exc_info=True)


app.steps["consumer"].add(LivenessFile)


@signals.worker_init.connect(weak=False)
def _worker_metrics_dir(**_: Any) -> None:
    from evplatform import metrics

    if settings.WORKER_METRICS_PORT and metrics.multiprocess_dir():
        metrics.forget_dead_processes(keep_pid=os.getpid())  # before the pool forks: a restart's leftovers


@signals.worker_ready.connect(weak=False)
def _worker_metrics_server(sender: Any = None, **_: Any) -> None:
    """Serve the worker's metrics on ``WORKER_METRICS_PORT`` from its main process (all its pool's processes)."""
    from prometheus_client import start_http_server

    from evplatform import metrics

    port = int(settings.WORKER_METRICS_PORT)
    if not port:
        return
    pool = getattr(sender, "pool", None)
    if type(pool).__module__.endswith(".prefork") and metrics.multiprocess_dir() is None:
        logging.getLogger(__name__).error(
            "worker: WORKER_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR with the prefork pool "
            "(tasks run in child processes); not serving metrics"
        )
        return
    start_http_server(port, addr=settings.WORKER_METRICS_ADDR, registry=metrics.process_registry())
    logging.getLogger(__name__).info("worker: metrics on %s:%s/metrics", settings.WORKER_METRICS_ADDR, port)
