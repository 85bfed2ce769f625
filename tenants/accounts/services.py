"""Heartbeats (proof that workers serve every queue) and the audit trail. Schema: tenant."""

import secrets
from datetime import datetime

from django.utils import timezone
from django_tenants.utils import tenant_context

from evplatform.celery import QUEUES, queue_name
from tenants.accounts.models import AuditEvent, WorkerHeartbeat
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


def audit_record(
    *,
    actor: str,
    action: str,
    object_type: str,
    object_id: object,
    label: str,
    changes: list[tuple[str, object, object]],
) -> list[AuditEvent]:
    """One audit row per changed field: who, when, what, old value, new value."""
    return AuditEvent.objects.bulk_create(
        [
            AuditEvent(
                actor=actor,
                action=action,
                object_type=object_type,
                object_id=str(object_id),
                object_label=label[:200],
                field=field,
                old_value="" if old is None else str(old),
                new_value="" if new is None else str(new),
            )
            for field, old, new in changes
        ]
    )
