"""Heartbeats: proof that workers serve every queue for a tenant. Schema: tenant."""

import secrets
from datetime import datetime

from django.utils import timezone
from django_tenants.utils import tenant_context

from evplatform.celery import QUEUES, queue_name
from tenants.accounts.models import WorkerHeartbeat
from tenants.models import Tenant


def heartbeat_send(*, tenant: Tenant, queues: tuple[str, ...] = QUEUES) -> dict[str, str]:
    """Ask a worker on each queue to record a heartbeat in this tenant's schema.

    Returns the token sent per queue; ``WorkerHeartbeat.token`` equals it once a worker ran it.
    """
    from tenants.accounts.tasks import worker_heartbeat

    tokens: dict[str, str] = {}
    sent_at = timezone.now().isoformat()
    with tenant_context(tenant):
        for queue in queues:
            token = secrets.token_hex(16)
            worker_heartbeat.apply_async(
                kwargs={"queue": queue, "token": token, "sent_at": sent_at}, queue=queue_name(queue)
            )
            tokens[queue] = token
    return tokens


def heartbeat_record(*, queue: str, token: str, sent_at: datetime, worker: str) -> WorkerHeartbeat:
    """Store that a worker ran a heartbeat for the active tenant on ``queue``."""
    heartbeat, _ = WorkerHeartbeat.objects.update_or_create(
        queue=queue,
        defaults={"token": token, "sent_at": sent_at, "completed_at": timezone.now(), "worker": worker},
    )
    return heartbeat


def heartbeat_tokens() -> dict[str, str]:
    """The last token each queue's worker stored for the active tenant."""
    return dict(WorkerHeartbeat.objects.values_list("queue", "token"))
