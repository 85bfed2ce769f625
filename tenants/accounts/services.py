"""Heartbeats (proof that workers serve every queue) and the audit trail. Schema: tenant."""

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Model
from django.utils import timezone
from django_tenants.utils import tenant_context

from evplatform.celery import QUEUES, queue_name
from tenants.accounts.hooks import GroupGrants, account_hooks
from tenants.accounts.models import AuditEvent, IdempotencyKey, Role, User, WorkerHeartbeat
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


# How long the answer to a request sent with an Idempotency-Key is replayed to its repeats.
IDEMPOTENCY_TTL = timedelta(hours=24)


@dataclass(frozen=True)
class IdempotencyClaim:
    """A key looked up for a request: ``record`` to fill in (``owned``), to replay, or a conflict."""

    record: IdempotencyKey
    owned: bool
    conflict: bool


def idempotency_claim(*, user: User, key: str, request_sha256: str, now: datetime) -> IdempotencyClaim:
    """Take ``key`` for this request, or find the answer it already has. Call inside a transaction.

    The row is inserted with ``ON CONFLICT DO NOTHING`` and then locked: a concurrent request
    with the same key waits at the insert until the first one commits (and then replays its
    answer) or rolls back (and then answers itself). A committed row always holds an answer, so
    a row without one is this transaction's own. An expired row is taken over.
    """
    IdempotencyKey.objects.bulk_create(
        [IdempotencyKey(user=user, key=key, request_sha256=request_sha256, expires_at=now + IDEMPOTENCY_TTL)],
        ignore_conflicts=True,
    )
    record = IdempotencyKey.objects.select_for_update().get(user=user, key=key)
    if record.status_code is None:
        return IdempotencyClaim(record, owned=True, conflict=False)
    if record.expires_at <= now:
        record.request_sha256, record.status_code, record.response_body = request_sha256, None, None
        record.created_at, record.expires_at = now, now + IDEMPOTENCY_TTL
        record.save()
        return IdempotencyClaim(record, owned=True, conflict=False)
    return IdempotencyClaim(record, owned=False, conflict=record.request_sha256 != request_sha256)


def idempotency_answer(*, record: IdempotencyKey, status_code: int, body: Any) -> None:
    """Keep the answer of the request that owns ``record`` (in its transaction)."""
    record.status_code, record.response_body = status_code, body
    record.save(update_fields=["status_code", "response_body"])


def idempotency_keys_prune(*, now: datetime, batch: int, dry_run: bool = False) -> int:
    """Delete the active schema's expired idempotency keys, ``batch`` rows a statement; how many (would) go."""
    expired = IdempotencyKey.objects.filter(expires_at__lte=now)
    if dry_run:
        return expired.count()
    deleted = 0
    while True:
        count, _ = IdempotencyKey.objects.filter(pk__in=expired.order_by("expires_at").values("pk")[:batch]).delete()
        deleted += count
        if count < batch:
            return deleted


def _grants_label(grants: set[tuple[str, str]]) -> str:
    return ", ".join(f"{role} on {slug}" for slug, role in sorted(grants))


def _group_grants_set(*, user: User, grants: GroupGrants) -> tuple[str, str] | None:
    """Make the person's site-group roles exactly ``grants`` (site group slug, role); groups that do
    not exist are skipped; roles on single sites are left alone. The (old, new) labels when changed.
    The site groups are the domain's: it makes the change (``AccountHooks.group_grants_set``)."""
    changed = account_hooks().group_grants_set(user=user, grants=grants)
    if changed is None:
        return None
    old, new = changed
    return _grants_label(old), _grants_label(new)


def user_sso_sync(
    *, user: User, org_role: str, group_grants: frozenset[tuple[str, str]] | None, actor: str
) -> list[str]:
    """Give a person the roles their identity provider's groups map to; audited when they change.

    ``org_role`` is the role on the whole organisation ("" for none; admin also opens the
    organisation's Django admin, as in ``user_update``). ``group_grants`` replaces their roles on
    site groups; None leaves those alone. A user not yet saved (a just-in-time account) only gets
    its fields set: ``user_sso_created`` stores the rest.
    """
    changes: list[tuple[str, Any, Any]] = [("role", user.role, org_role)] if user.role != org_role else []
    user.role = org_role
    user.is_staff = user.is_superuser = org_role == Role.ADMIN
    if user.pk is None:
        return [c[0] for c in changes]
    with transaction.atomic():
        if changes:
            user.save(update_fields=["role", "is_staff", "is_superuser"])
        if group_grants is not None and (labels := _group_grants_set(user=user, grants=group_grants)):
            changes.append(("site_group_roles", *labels))
        if changes:
            audit_record(
                actor=actor, action="update", object_type="user", object_id=user.pk, label=user.email, changes=changes
            )
    return [c[0] for c in changes]


def user_sso_created(*, user: User, group_grants: frozenset[tuple[str, str]] | None, actor: str) -> None:
    """Store and audit a person created on their first sign-in through an identity provider."""
    changes: list[tuple[str, Any, Any]] = [("role", None, user.role)]
    if group_grants and (labels := _group_grants_set(user=user, grants=group_grants)):
        changes.append(("site_group_roles", None, labels[1]))
    audit_record(actor=actor, action="create", object_type="user", object_id=user.pk, label=user.email, changes=changes)


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
