"""Heartbeats (proof that workers serve every queue) and the audit trail. Schema: tenant."""

import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Model
from django.utils import timezone
from django_tenants.utils import tenant_context

from evplatform.celery import QUEUES, queue_name
from tenants.accounts.models import AuditEvent, Role, User, WorkerHeartbeat
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
    changes: Sequence[tuple[str, Any, Any]],
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


def user_invite(*, email: str, full_name: str, role: str, actor: str) -> tuple[User, bool]:
    """Add a person to the organisation with a role; they set their password via the reset link.

    Returns the user and whether it is new. An existing user keeps its password.
    """
    email = email.strip().lower()
    user = User.objects.filter(email__iexact=email).first()
    created = user is None
    if user is None:
        # A random password nobody knows: the person sets their own through the reset link.
        user = User.objects.create_user(email=email, password=secrets.token_urlsafe(32), full_name=full_name, role=role)
        audit_record(
            actor=actor,
            action="create",
            object_type="user",
            object_id=user.pk,
            label=email,
            changes=[("role", None, role)],
        )
    return user, created


def user_update(*, user: User, role: str, is_active: bool, actor: str) -> list[str]:
    """Change a person's role or access; audited. An admin cannot lock themself out."""
    if user.email == actor and (role != Role.ADMIN or not is_active):
        raise ValidationError("You cannot remove your own admin role or deactivate yourself.")
    changes = [(f, getattr(user, f), v) for f, v in (("role", role), ("is_active", is_active)) if getattr(user, f) != v]
    for field_name, _, value in changes:
        setattr(user, field_name, value)
    if changes:
        user.is_staff = user.is_superuser = user.role == Role.ADMIN
        user.save()
        audit_record(
            actor=actor, action="update", object_type="user", object_id=user.pk, label=user.email, changes=changes
        )
    return [c[0] for c in changes]


def user_role_sync(*, user: User, role: str, actor: str) -> list[str]:
    """Give a person the role their identity provider's groups map to; audited when it changes.

    Like ``user_update``, the admin role also opens the organisation's Django admin. A user not
    yet saved (a just-in-time account) only gets the fields set: ``user_sso_created`` audits it.
    """
    changes = [("role", user.role, role)] if user.role != role else []
    user.role = role
    user.is_staff = user.is_superuser = role == Role.ADMIN
    if user.pk is not None and changes:
        user.save(update_fields=["role", "is_staff", "is_superuser"])
        audit_record(
            actor=actor, action="update", object_type="user", object_id=user.pk, label=user.email, changes=changes
        )
    return [c[0] for c in changes]


def user_sso_created(*, user: User, actor: str) -> None:
    """Audit a person created on their first sign-in through an identity provider."""
    audit_record(
        actor=actor,
        action="create",
        object_type="user",
        object_id=user.pk,
        label=user.email,
        changes=[("role", None, user.role)],
    )


def sign_in_settings_save(*, instance: Model, changes: Sequence[tuple[str, Any, Any]], actor: str) -> None:
    """Save an identity provider or the sign-in policy and audit each changed field (secrets masked)."""
    with transaction.atomic():
        created = instance.pk is None
        instance.save()
        audit_record(
            actor=actor,
            action="create" if created else "update",
            object_type=instance._meta.model_name or "",
            object_id=instance.pk,
            label=str(instance),
            changes=changes,
        )


def authenticator_remove(*, authenticator: Any, actor: str) -> None:
    """Delete a person's second factor (an admin's reset for a lost phone or key); audited."""
    user = authenticator.user
    kind = authenticator.type
    authenticator.delete()
    audit_record(
        actor=actor,
        action="delete",
        object_type="authenticator",
        object_id=user.pk,
        label=user.email,
        changes=[("type", kind, None)],
    )
