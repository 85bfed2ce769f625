"""Balancing tasks on the ``balancing`` queue. Schema: tenant (balance_site, prune_history), public (fan-outs).

The history prune goes to the ``reports`` queue instead (``evplatform.celery.TASK_QUEUES``): it is
patient work that must not hold up a rebalance. The notification deliveries
(``balancing.notifications.tasks``, registered by importing them here) go to ``notifications``.
The charger resync keeps the name it had in the charger app (``chargepoint.tasks.station_resync``),
so resyncs queued before an upgrade still run and its route stays the same.
"""

from typing import Any

from django.conf import settings
from django.utils import timezone
from django_tenants.utils import schema_context

from balancing.dispatch import site_balance, site_rebalance_request
from balancing.notifications import tasks as notification_tasks  # noqa: F401 - registers the delivery tasks
from balancing.resync import station_resync
from balancing.retention import history_prune, sessions_prune
from balancing.selectors import site_ids
from evplatform.celery import PublicTask, app
from evplatform.metrics import balancing_run_observed
from evplatform.services import active_schema
from tenants.fanout import tenant_chunk, tenant_chunks_send

# A first prune of a long history deletes many batches; one cut short resumes the next day.
PRUNE_SOFT_TIME_LIMIT_S = 3600
PRUNE_TIME_LIMIT_S = 3900


@app.task(name="balancing.tasks.balance_site")
def balance_site(*, site_id: int, reason: str = "") -> int | None:
    """Balance one site of the tenant the task was sent for; returns the run id.

    Timed and counted by outcome for Prometheus (``evplatform.metrics``).
    """
    with balancing_run_observed(schema=active_schema(), site_id=site_id) as observed:
        run = site_balance(site_id=site_id, reason=reason or "request")
        observed.ran(run)
    return None if run is None else run.pk


@app.task(base=PublicTask, name="balancing.tasks.sweep_all_sites")
def sweep_all_sites() -> int:
    """Beat: ask for a run of every site, so a lost event never leaves a site unbalanced.

    One ``sweep_sites`` task per chunk of tenants (``tenants.fanout``), run side by side by the
    balancing workers; a chunk not started before the next sweep is due is dropped (that sweep
    covers its sites). Returns the chunks sent.
    """
    return tenant_chunks_send(sweep_sites, expires=settings.BALANCING_SWEEP_SECONDS)


@app.task(base=PublicTask, name="balancing.tasks.sweep_sites")
def sweep_sites(*, schemas: list[str]) -> int:
    """One chunk of the sweep: a run request for every site of these tenants; returns the sites.

    Each request is ``site_rebalance_request``'s: coalesced in Redis, or straight to the broker
    while Redis is unreachable.
    """
    count = 0
    for _tenant in tenant_chunk(schemas):
        for site_id in site_ids():
            site_rebalance_request(site_id=site_id, reason="sweep")
            count += 1
    return count


@app.task(
    name="balancing.tasks.prune_history",
    soft_time_limit=PRUNE_SOFT_TIME_LIMIT_S,
    time_limit=PRUNE_TIME_LIMIT_S,
)
def prune_history() -> dict[str, int]:
    """Delete the tenant's history older than the retention settings (``balancing.retention``); returns the counts."""
    return history_prune(now=timezone.now()).as_dict()


@app.task(base=PublicTask, name="balancing.tasks.prune_history_all_tenants")
def prune_history_all_tenants() -> int:
    """Beat (daily): the platform's own expired sessions, then one prune per active tenant, sent by chunks."""
    with schema_context("public"):
        sessions_prune(now=timezone.now())
    return tenant_chunks_send(prune_history_chunk)


@app.task(base=PublicTask, name="balancing.tasks.prune_history_chunk")
def prune_history_chunk(*, schemas: list[str]) -> int:
    """One chunk of the daily prune: a prune task in each of these organisations."""
    count = 0
    for _tenant in tenant_chunk(schemas):
        prune_history.delay()
        count += 1
    return count


@app.task(name="chargepoint.tasks.station_resync")
def station_resync_task(*, station_id: int, reason: str = "") -> dict[str, Any]:
    """Ask a charger what it does (triggers, composite schedules) and act on a mismatch; at most once a minute."""
    outcome = station_resync(station_id=station_id)
    return {
        "reason": reason,
        "throttled": outcome.throttled,
        "offline": outcome.offline,
        "triggers": outcome.triggers,
        "applied_a": {c.connector_id: c.applied_a for c in outcome.checks},
        "mismatches": [c.connector_id for c in outcome.mismatches],
    }
