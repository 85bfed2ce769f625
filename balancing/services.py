"""Writes to sites and their circuit trees. Schema: tenant.

Create-or-update functions converge the stored row to their input and return what changed,
so onboarding scripts can run them again safely.
"""

import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from balancing.failsafe import site_failsafe_refresh
from balancing.models import BalancingRun, Circuit, Site, SiteLimitSchedule
from balancing.push import GatewayPusher, Pusher
from balancing.selectors import circuit_get
from evplatform.redis import get_redis, tenant_key
from evplatform.services import Outcome, active_schema, describe_change, require_tenant_schema
from tenants.accounts.services import audit_record

logger = logging.getLogger(__name__)

# A pending request older than this is forgotten, so a lost task cannot block a site forever.
PENDING_TTL_S = 120
# Longest a run may hold the site's lock (pushes wait up to 30 s per phase).
RUN_LOCK_TTL_S = 120
RUN_LOCK_WAIT_S = 2.0


def _apply(
    obj: Site | Circuit, values: dict[str, object], changes: list[str], audit: list[tuple[str, object, object]]
) -> None:
    for attr, value in values.items():
        old = getattr(obj, attr)
        if old != value:
            if obj.pk is not None:
                changes.append(describe_change(attr, old, value))
            audit.append((attr, None if obj.pk is None else old, value))
            setattr(obj, attr, value)


@transaction.atomic
def site_create_or_update(
    *,
    slug: str,
    name: str,
    limit_a: Decimal,
    voltage_v: Decimal = Decimal("230"),
    phases: int = 3,
    demand_cap_kw: Decimal | None = None,
    failsafe_a: Decimal | None = None,
    max_raise_a: Decimal | None = None,
    timezone: str = "UTC",
    actor: str = "system",
    failsafe_auto: bool | None = None,
    building_allowance_kw: Decimal | None = None,
) -> Outcome[Site]:
    """Create the site ``slug`` or bring it to these values. Raises ``ValidationError`` by field.

    The fail-safe: ``failsafe_auto`` true sizes it to the site (``balancing.failsafe``) and
    ignores ``failsafe_a``; false keeps ``failsafe_a`` (or the stored value) as set by hand,
    refused when it breaks a limit. ``failsafe_auto`` None keeps the site's mode (a new site is
    sized), except that a ``failsafe_a`` given alone means a value set by hand.
    ``building_allowance_kw``: building load (kW) the sizing leaves under the demand cap; None
    keeps it.

    Every changed limit is audited with ``actor`` (an email, or ``system:<command>``), and a
    change that matters to balancing asks for a run of the site.
    """
    require_tenant_schema("site_create_or_update")
    site = Site.objects.select_for_update().filter(slug=slug).first()
    created = site is None
    if site is None:
        site = Site(slug=slug)
    if failsafe_auto is None:
        failsafe_auto = site.failsafe_auto if failsafe_a is None else False
    if failsafe_auto or failsafe_a is None:
        failsafe_a = site.failsafe_a  # sized below, or kept as set by hand
    changes: list[str] = []
    audit: list[tuple[str, object, object]] = []
    _apply(
        site,
        {
            "name": name,
            "limit_a": limit_a,
            "voltage_v": voltage_v,
            "phases": phases,
            "demand_cap_kw": demand_cap_kw,
            "failsafe_auto": failsafe_auto,
            "failsafe_a": failsafe_a,
            "building_allowance_kw": (
                site.building_allowance_kw if building_allowance_kw is None else building_allowance_kw
            ),
            "max_raise_a": max_raise_a,
            "timezone": timezone,
        },
        changes,
        audit,
    )
    site.full_clean()
    if not created and phases == 1 and site.stations.filter(phases=3).exists():
        raise ValidationError(
            {"phases": "three-phase chargers are registered at this site; it cannot become single-phase"}
        )
    site.save()
    if audit:
        audit_record(
            actor=actor,
            action="create" if created else "update",
            object_type="site",
            object_id=site.pk,
            label=site.name,
            changes=audit,
        )
    if not created and audit:
        site_rebalance_request(site_id=site.pk, reason="limits changed")
    # After the request above, so a run it causes keeps the reason people changed something for.
    site_failsafe_refresh(site=site, actor=actor)
    return Outcome(site, created, changes)


SITE_LIMIT_FIELDS = ("limit_a", "demand_cap_kw", "failsafe_a", "max_raise_a")
"""The load-management settings people change on an existing site (portal and API)."""


def site_limits_update(*, site: Site, limits: Mapping[str, Any], actor: str) -> Outcome[Site]:
    """Bring ``site``'s ``SITE_LIMIT_FIELDS`` to ``limits``; everything else about it stays.

    The fail-safe's mode comes from ``failsafe_auto`` where ``limits`` has it. Otherwise a sized
    site stays sized while ``failsafe_a`` comes back as stored (a form sent back unchanged) and
    becomes set by hand (and checked) when a person changed it.
    """
    values = {name: limits[name] for name in SITE_LIMIT_FIELDS}
    if "failsafe_auto" not in values:
        unchanged = Decimal(str(values["failsafe_a"])) == site.failsafe_a
        values["failsafe_auto"] = limits.get("failsafe_auto", site.failsafe_auto and unchanged)
    return site_create_or_update(
        slug=site.slug,
        name=site.name,
        voltage_v=site.voltage_v,
        phases=site.phases,
        timezone=site.timezone,
        actor=actor,
        **values,
    )


@transaction.atomic
def circuit_create_or_update(
    *,
    site: Site,
    name: str,
    limit_a: Decimal,
    kind: str = Circuit.Kind.CIRCUIT,
    parent_name: str | None = None,
    limit_kw: Decimal | None = None,
    actor: str = "system",
) -> Outcome[Circuit]:
    """Create circuit ``name`` under ``parent_name`` (or the grid connection), or update it."""
    require_tenant_schema("circuit_create_or_update")
    parent = circuit_get(site=site, name=parent_name) if parent_name else None
    circuit = Circuit.objects.select_for_update().filter(site=site, name=name).first()
    created = circuit is None
    if circuit is None:
        circuit = Circuit(site=site, name=name)
    # A circuit may not hang below itself: walk up from the new parent.
    node = parent
    while node is not None:
        if circuit.pk is not None and node.pk == circuit.pk:
            raise ValidationError({"parent": f"{parent_name!r} is below {name!r}; that would make a loop"})
        node = node.parent
    changes: list[str] = []
    audit: list[tuple[str, object, object]] = []
    _apply(circuit, {"limit_a": limit_a, "kind": kind, "parent": parent, "limit_kw": limit_kw}, changes, audit)
    circuit.full_clean()
    circuit.save()
    if audit:
        audit_record(
            actor=actor,
            action="create" if created else "update",
            object_type="circuit",
            object_id=circuit.pk,
            label=f"{site.name} / {circuit.name}",
            changes=audit,
        )
    if not created and audit:
        site_rebalance_request(site_id=site.pk, reason="limits changed")
    site_failsafe_refresh(site=site, actor=actor)
    return Outcome(circuit, created, changes)


def site_rebalance_request(*, site_id: int, reason: str) -> None:
    """Ask for a balancing run of a site soon; a burst of requests becomes one run.

    Call it in the site's tenant schema. The request takes effect when the current transaction
    commits (so the run reads what the caller wrote, and a rolled-back change asks for
    nothing); while a run is already pending, further requests join it.
    """
    require_tenant_schema("site_rebalance_request")
    schema = active_schema()

    def send() -> None:
        key = tenant_key(schema, "rebalance-pending", site_id)
        if not get_redis().set(key, reason[:100], nx=True, ex=PENDING_TTL_S):
            return  # the pending run will see this change too
        from balancing.tasks import balance_site

        balance_site.apply_async(
            kwargs={"site_id": site_id, "reason": reason[:100]},
            countdown=settings.BALANCING_COALESCE_SECONDS,
            headers={"_schema_name": schema},
        )

    transaction.on_commit(send)


def site_balance(*, site_id: int, reason: str, pusher: Pusher | None = None) -> BalancingRun | None:
    """Run balancing for one site under its lock (one run per site at a time).

    Returns the run, or None when the site no longer exists or another run holds the lock (then
    a new request is queued, so the change that caused this call is not lost).
    """
    from balancing.runs import site_balance_run

    require_tenant_schema("site_balance")
    schema = active_schema()
    redis = get_redis()
    redis.delete(tenant_key(schema, "rebalance-pending", site_id))
    site = Site.objects.filter(pk=site_id).first()
    if site is None:
        logger.info("site %s is gone; nothing to balance", site_id)
        return None
    lock = redis.lock(tenant_key(schema, "balance-lock", site_id), timeout=RUN_LOCK_TTL_S)
    if not lock.acquire(blocking=True, blocking_timeout=RUN_LOCK_WAIT_S):
        site_rebalance_request(site_id=site_id, reason=f"retry: {reason}")
        return None
    try:
        return site_balance_run(site=site, reason=reason, pusher=pusher or GatewayPusher())
    finally:
        lock.release()


@transaction.atomic
def schedule_create(*, schedule: SiteLimitSchedule, actor: str) -> SiteLimitSchedule:
    """Store a validated (unsaved) limit schedule, audit it and rebalance its site."""
    require_tenant_schema("schedule_create")
    schedule.full_clean()
    schedule.save()
    audit_record(
        actor=actor,
        action="create",
        object_type="schedule",
        object_id=schedule.pk,
        label=f"{schedule.site.name}: {schedule.name}",
        changes=[
            (f, None, getattr(schedule, f)) for f in ("weekdays", "start_time", "end_time", "limit_kw", "limit_a")
        ],
    )
    site_rebalance_request(site_id=schedule.site_id, reason="schedule added")
    site_failsafe_refresh(site=schedule.site, actor=actor)
    return schedule


@transaction.atomic
def schedule_delete(*, schedule: SiteLimitSchedule, actor: str) -> None:
    """Remove a limit schedule, audit it and rebalance its site."""
    require_tenant_schema("schedule_delete")
    audit_record(
        actor=actor,
        action="delete",
        object_type="schedule",
        object_id=schedule.pk,
        label=f"{schedule.site.name}: {schedule.name}",
        changes=[("limit_kw", schedule.limit_kw, None), ("limit_a", schedule.limit_a, None)],
    )
    site_id = schedule.site_id
    site = schedule.site
    schedule.delete()
    site_rebalance_request(site_id=site_id, reason="schedule removed")
    site_failsafe_refresh(site=site, actor=actor)
