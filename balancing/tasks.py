"""Balancing tasks on the ``balancing`` queue. Schema: tenant (balance_site), public (sweep)."""

from django_tenants.utils import schema_context, tenant_context

from balancing.selectors import site_ids
from balancing.services import site_balance, site_rebalance_request
from evplatform.celery import PublicTask, app
from tenants.selectors import tenant_list_active


@app.task(name="balancing.tasks.balance_site")
def balance_site(*, site_id: int, reason: str = "") -> int | None:
    """Balance one site of the tenant the task was sent for; returns the run id."""
    run = site_balance(site_id=site_id, reason=reason or "request")
    return None if run is None else run.pk


@app.task(base=PublicTask, name="balancing.tasks.sweep_all_sites")
def sweep_all_sites() -> int:
    """Beat: ask for a run of every site, so a lost event never leaves a site unbalanced."""
    with schema_context("public"):
        tenants = tenant_list_active()
    count = 0
    for tenant in tenants:
        with tenant_context(tenant):
            for site_id in site_ids():
                site_rebalance_request(site_id=site_id, reason="sweep")
                count += 1
    return count
