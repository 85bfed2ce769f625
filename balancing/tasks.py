"""Balancing tasks on the ``balancing`` queue. Schema: tenant (balance_site), public (the sweep and its chunks)."""

from django.conf import settings

from balancing.selectors import site_ids
from balancing.services import site_balance, site_rebalance_request
from evplatform.celery import PublicTask, app
from tenants.fanout import tenant_chunk, tenant_chunks_send


@app.task(name="balancing.tasks.balance_site")
def balance_site(*, site_id: int, reason: str = "") -> int | None:
    """Balance one site of the tenant the task was sent for; returns the run id."""
    run = site_balance(site_id=site_id, reason=reason or "request")
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
