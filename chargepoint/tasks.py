"""Celery tasks of the charger app (``telemetry`` queue). Schema: tenant (the sweeps fan out from public).

The gateway liveness sweep goes to the ``balancing`` queue instead (``evplatform.celery.TASK_QUEUES``;
see its docstring): seconds matter. The charger resync, once here, is ``balancing.tasks.station_resync_task``
(its task name is still ``chargepoint.tasks.station_resync``).

The gateway sends ``telemetry_ingest`` with the charger's tenant schema in the task headers.
Acknowledged only after it finished (acks_late, reject_on_worker_lost): a worker that dies
mid-batch leaves the message on the broker, and the re-run is harmless (idempotent upserts).
"""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import OperationalError
from django.utils import timezone

from chargepoint.liveness import stations_gateway_sweep, stations_offline_sweep
from chargepoint.partitions import partitions_maintain
from chargepoint.telemetry import telemetry_apply
from evplatform.celery import PublicTask, app
from tenants.fanout import tenant_chunk, tenant_chunks_send


@app.task(
    name="chargepoint.tasks.telemetry_ingest",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=None,
)
def telemetry_ingest(events: list[dict[str, Any]]) -> dict[str, int]:
    """One gateway batch of one tenant: states, sessions and meter samples, in order."""
    outcome = telemetry_apply(events=events)
    return {"applied": outcome.applied, "skipped": outcome.skipped, "samples": outcome.samples}


@app.task(name="chargepoint.tasks.stations_offline_sweep")
def stations_offline_sweep_task() -> int:
    """Chargers silent for several heartbeat intervals are taken offline (their gateway died)."""
    stale_after = timedelta(seconds=settings.GATEWAY_HEARTBEAT_INTERVAL_S * settings.GATEWAY_STALE_FACTOR)
    return stations_offline_sweep(now=timezone.now(), stale_after=stale_after).applied


@app.task(base=PublicTask, name="chargepoint.tasks.stations_offline_sweep_all")
def stations_offline_sweep_all() -> int:
    """Beat: run the offline sweep in every active organisation, one chunk of tenants per task."""
    return tenant_chunks_send(stations_offline_sweep_chunk)


@app.task(base=PublicTask, name="chargepoint.tasks.stations_offline_sweep_chunk")
def stations_offline_sweep_chunk(*, schemas: list[str]) -> int:
    """One chunk of the offline sweep: a sweep task in each of these organisations."""
    count = 0
    for _tenant in tenant_chunk(schemas):
        stations_offline_sweep_task.delay()
        count += 1
    return count


@app.task(name="chargepoint.tasks.stations_gateway_sweep")
def stations_gateway_sweep_task() -> int:
    """The chargers of a gateway instance whose heartbeat key expired are taken offline."""
    return stations_gateway_sweep().applied


@app.task(base=PublicTask, name="chargepoint.tasks.stations_gateway_sweep_all")
def stations_gateway_sweep_all() -> int:
    """Beat (every ``GATEWAY_LIVENESS_SWEEP_S``): the gateway liveness sweep in every active organisation.

    The chunks of tenants and each organisation's sweep go to the ``balancing`` queue (seconds
    matter: a dead gateway's chargers should be offline within 30 s of its death, and telemetry
    may be queued behind a backlog); either older than two intervals is dropped unrun, the next
    one does its work.
    """
    return tenant_chunks_send(stations_gateway_sweep_chunk, expires=2 * settings.GATEWAY_LIVENESS_SWEEP_S)


@app.task(base=PublicTask, name="chargepoint.tasks.stations_gateway_sweep_chunk")
def stations_gateway_sweep_chunk(*, schemas: list[str]) -> int:
    """One chunk of the gateway liveness sweep: a sweep task in each of these organisations."""
    count = 0
    for _tenant in tenant_chunk(schemas):
        stations_gateway_sweep_task.apply_async(expires=2 * settings.GATEWAY_LIVENESS_SWEEP_S)
        count += 1
    return count


@app.task(name="chargepoint.tasks.telemetry_partitions_maintain")
def telemetry_partitions_maintain() -> dict[str, list[str]]:
    """Meter reading partitions made ahead, months past the retention period dropped."""
    outcome = partitions_maintain(now=timezone.now())
    return {"created": outcome.created, "dropped": outcome.dropped, "busy": outcome.busy}


@app.task(base=PublicTask, name="chargepoint.tasks.telemetry_partitions_maintain_all")
def telemetry_partitions_maintain_all() -> int:
    """Beat (daily): partition upkeep of the meter readings in every active organisation, by chunks."""
    return tenant_chunks_send(telemetry_partitions_maintain_chunk)


@app.task(base=PublicTask, name="chargepoint.tasks.telemetry_partitions_maintain_chunk")
def telemetry_partitions_maintain_chunk(*, schemas: list[str]) -> int:
    """One chunk of the partition upkeep: an upkeep task in each of these organisations."""
    count = 0
    for _tenant in tenant_chunk(schemas):
        telemetry_partitions_maintain.delay()
        count += 1
    return count
