"""Platform-wide periodic tasks. Schema: public (they fan out to tenants)."""

from django_tenants.utils import schema_context

from evplatform.celery import PublicTask, app
from tenants.accounts.services import heartbeat_send
from tenants.selectors import tenant_list_active


@app.task(base=PublicTask, name="tenants.tasks.heartbeat_all_tenants")
def heartbeat_all_tenants() -> int:
    """Beat: ask for a heartbeat on every queue of every active organisation."""
    with schema_context("public"):
        tenants = tenant_list_active()
    for tenant in tenants:
        heartbeat_send(tenant=tenant)
    return len(tenants)
