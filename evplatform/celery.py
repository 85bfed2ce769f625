"""The Celery app: three queues split by latency, tenant schema carried on every task.

Tasks sent while a tenant schema is active (``tenant_context``, a tenant request, or another
tenant task) carry that schema in the ``_schema_name`` header (tenant-schemas-celery); the
worker switches to it before the task runs and back afterwards.
"""

import os
from typing import Any

from django.conf import settings
from kombu import Exchange, Queue
from tenant_schemas_celery.app import CeleryApp
from tenant_schemas_celery.task import TenantTask as SchemaCarryingTask

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evplatform.settings.production")

QUEUE_BALANCING = "balancing"  # seconds matter: rebalancing, profile pushes
QUEUE_TELEMETRY = "telemetry"  # volume: meter values, status, transactions
QUEUE_REPORTS = "reports"  # heavy and patient: rollups, monthly reports
QUEUES = (QUEUE_BALANCING, QUEUE_TELEMETRY, QUEUE_REPORTS)

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
