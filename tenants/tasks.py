"""Platform-wide periodic tasks. Schema: public (they fan out to tenants, a chunk of them per task)."""

from evplatform.celery import PublicTask, app
from tenants.accounts.services import heartbeat_send
from tenants.fanout import tenant_chunk, tenant_chunks_send


@app.task(base=PublicTask, name="tenants.tasks.heartbeat_all_tenants")
def heartbeat_all_tenants() -> int:
    """Beat: ask for a heartbeat on every queue of every active organisation; returns the chunks sent."""
    return tenant_chunks_send(heartbeat_tenants)


@app.task(base=PublicTask, name="tenants.tasks.heartbeat_tenants")
def heartbeat_tenants(*, schemas: list[str]) -> int:
    """One chunk of the heartbeat fan-out: a heartbeat on every queue of each of these organisations."""
    count = 0
    for tenant in tenant_chunk(schemas):
        heartbeat_send(tenant=tenant)
        count += 1
    return count
