"""Writes to sites and their circuit trees, limits, schedules and overrides. Schema: tenant.

Create-or-update functions converge the stored row to their input and return what changed,
so onboarding scripts can run them again safely. A write that changes what limits a site asks
for a balancing run (``balancing.dispatch``), which starts once the write commits.
"""

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from balancing.dispatch import site_rebalance_request
from balancing.failsafe import site_failsafe_refresh
from balancing.models import Circuit, LimitOverride, Site, SiteLimitSchedule
from balancing.selectors import circuit_get
from evplatform.services import Outcome, describe_change, require_tenant_schema
from tenants.accounts.services import audit_record


def _apply(
    obj: Site | Circuit | SiteLimitSchedule,
    values: Mapping[str, object],
    changes: list[str],
    audit: list[tuple[str, object, object]],
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
    failsafe_auto: bool | None = None,
    idle_default_zero: bool = False,
    building_allowance_kw: Decimal | None = None,
    overdraw_escalation: str = Site.Escalation.NONE,
    overdraw_escalation_after_s: int = 300,
    balancing_policy: str | None = None,
    peak_margin_kw: Decimal | None = None,
    actor: str = "system",
) -> Outcome[Site]:
    """Create the site ``slug`` or bring it to these values. Raises ``ValidationError`` by field.

    The fail-safe: ``failsafe_auto`` true sizes it to the site (``balancing.failsafe``) and
    ignores ``failsafe_a``; false keeps ``failsafe_a`` (or the stored value) as set by hand,
    refused when it breaks a limit. ``failsafe_auto`` None keeps the site's mode (a new site is
    sized), except that a ``failsafe_a`` given alone means a value set by hand.
    ``building_allowance_kw``: building load (kW) the sizing leaves under the demand cap; None
    keeps it. ``balancing_policy`` (``Site.Policy``) and ``peak_margin_kw`` (kW, at least 0):
    None keeps them.

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
            "idle_default_zero": idle_default_zero,
            "overdraw_escalation": overdraw_escalation,
            "overdraw_escalation_after_s": overdraw_escalation_after_s,
            "balancing_policy": site.balancing_policy if balancing_policy is None else balancing_policy,
            "peak_margin_kw": site.peak_margin_kw if peak_margin_kw is None else peak_margin_kw,
        },
        changes,
        audit,
    )
    _policy_check(site)
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


def _policy_check(site: Site) -> None:
    """The balancing policy's settings, with errors a person can act on."""
    errors: dict[str, str] = {}
    if site.balancing_policy not in Site.Policy.values:
        choices = ", ".join(f"'{value}'" for value in Site.Policy.values)
        errors["balancing_policy"] = f"{site.balancing_policy!r} is not a balancing policy; choose {choices}"
    try:
        margin = Decimal(str(site.peak_margin_kw))
    except InvalidOperation:
        margin = Decimal("NaN")
    if not margin.is_finite() or margin < 0:
        errors["peak_margin_kw"] = f"the peak margin must be 0 kW or more (got {site.peak_margin_kw})"
    if errors:
        raise ValidationError(errors)


SITE_LIMIT_FIELDS = (
    "limit_a",
    "demand_cap_kw",
    "failsafe_a",
    "max_raise_a",
    "failsafe_auto",
    "idle_default_zero",
    "building_allowance_kw",
    "overdraw_escalation",
    "overdraw_escalation_after_s",
    "balancing_policy",
    "peak_margin_kw",
)
"""The load-management settings people change on an existing site (portal and API)."""


def site_limits_update(*, site: Site, limits: Mapping[str, Any], actor: str) -> Outcome[Site]:
    """Bring ``site``'s ``SITE_LIMIT_FIELDS`` to ``limits``; everything else about it stays.

    The fail-safe's mode comes from ``failsafe_auto`` where ``limits`` has it. Otherwise a sized
    site stays sized while ``failsafe_a`` comes back as stored (a form sent back unchanged) and
    becomes set by hand (and checked) when a person changed it.
    """
    values = {name: limits[name] if name in limits else getattr(site, name) for name in SITE_LIMIT_FIELDS}
    if "failsafe_auto" not in limits:
        unchanged = Decimal(str(values["failsafe_a"])) == site.failsafe_a
        values["failsafe_auto"] = site.failsafe_auto and unchanged
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


@transaction.atomic
def circuit_update(
    *,
    circuit: Circuit,
    name: str,
    limit_a: Decimal,
    kind: str = Circuit.Kind.CIRCUIT,
    parent_name: str | None = None,
    limit_kw: Decimal | None = None,
    actor: str,
) -> Outcome[Circuit]:
    """Bring an existing circuit to these values, its name too (unique within its site)."""
    require_tenant_schema("circuit_update")
    circuit = Circuit.objects.select_for_update().select_related("site").get(pk=circuit.pk)
    site = circuit.site
    renamed: list[str] = []
    if name != circuit.name:
        if Circuit.objects.filter(site=site, name=name).exists():
            raise ValidationError({"name": f"site {site.slug!r} has a circuit named {name!r} already"})
        audit_record(
            actor=actor,
            action="update",
            object_type="circuit",
            object_id=circuit.pk,
            label=f"{site.name} / {name}",
            changes=[("name", circuit.name, name)],
        )
        renamed.append(describe_change("name", circuit.name, name))
        circuit.name = name
        circuit.full_clean()
        circuit.save(update_fields=["name", "updated_at"])
    outcome = circuit_create_or_update(
        site=site, name=name, limit_a=limit_a, kind=kind, parent_name=parent_name, limit_kw=limit_kw, actor=actor
    )
    return Outcome(outcome.obj, False, renamed + outcome.changes)


@transaction.atomic
def circuit_delete(*, circuit: Circuit, actor: str) -> None:
    """Remove a circuit that feeds nothing (no circuit below it, no charger on it); audited, rebalanced.

    A ``ValidationError`` on ``circuit`` says what still hangs below it.
    """
    require_tenant_schema("circuit_delete")
    circuit = Circuit.objects.select_for_update().select_related("site").get(pk=circuit.pk)
    children = list(circuit.children.order_by("name").values_list("name", flat=True)[:5])
    if children:
        raise ValidationError({"circuit": f"circuits {', '.join(children)} hang below it: move or remove them first"})
    chargers = list(circuit.stations.order_by("charge_point_id").values_list("charge_point_id", flat=True)[:5])
    if chargers:
        raise ValidationError({"circuit": f"chargers {', '.join(chargers)} are on it: move them first"})
    audit_record(
        actor=actor,
        action="delete",
        object_type="circuit",
        object_id=circuit.pk,
        label=f"{circuit.site.name} / {circuit.name}",
        changes=[("limit_a", circuit.limit_a, None), ("limit_kw", circuit.limit_kw, None)],
    )
    site_id = circuit.site_id
    circuit.delete()
    site_limits_refresh(site_id=site_id, actor=actor, reason="circuit removed")


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


SCHEDULE_FIELDS = ("name", "weekdays", "start_time", "end_time", "limit_kw", "limit_a", "is_active")


@transaction.atomic
def schedule_update(
    *, schedule: SiteLimitSchedule, values: Mapping[str, Any], actor: str
) -> Outcome[SiteLimitSchedule]:
    """Bring a limit schedule to ``values`` (any of ``SCHEDULE_FIELDS``); audited, its site rebalanced."""
    require_tenant_schema("schedule_update")
    schedule = SiteLimitSchedule.objects.select_for_update().select_related("site").get(pk=schedule.pk)
    changes: list[str] = []
    audit: list[tuple[str, object, object]] = []
    _apply(schedule, {name: values[name] for name in SCHEDULE_FIELDS if name in values}, changes, audit)
    if not audit:
        return Outcome(schedule, False, [])
    schedule.full_clean()
    schedule.save()
    audit_record(
        actor=actor,
        action="update",
        object_type="schedule",
        object_id=schedule.pk,
        label=f"{schedule.site.name}: {schedule.name}",
        changes=audit,
    )
    site_rebalance_request(site_id=schedule.site_id, reason="schedule changed")
    site_failsafe_refresh(site=schedule.site, actor=actor)
    return Outcome(schedule, False, changes)


@transaction.atomic
def override_create(
    *,
    site: Site,
    reason: str,
    starts_at: datetime,
    ends_at: datetime,
    limit_a: Decimal | None = None,
    limit_kw: Decimal | None = None,
    actor: str,
) -> LimitOverride:
    """A temporary lower limit of ``site`` from ``starts_at`` until ``ends_at``; audited, rebalanced.

    Raises ``ValidationError`` by field (no limit given, ending before it starts). Every
    override in force binds at once (the lowest wins, ``balancing.limits``); the fail-safe is
    not sized to overrides, which are temporary by nature.
    """
    require_tenant_schema("override_create")
    if limit_a is None and limit_kw is None:
        raise ValidationError({"limit_kw": "set limit_kw, limit_a or both"})
    if ends_at <= starts_at:
        raise ValidationError({"ends_at": "must be after starts_at"})
    override = LimitOverride(
        site=site,
        reason=reason,
        starts_at=starts_at,
        ends_at=ends_at,
        limit_a=limit_a,
        limit_kw=limit_kw,
        created_by=actor,
    )
    override.full_clean()
    override.save()
    audit_record(
        actor=actor,
        action="create",
        object_type="override",
        object_id=override.pk,
        label=f"{site.name}: {reason}",
        changes=[(f, None, getattr(override, f)) for f in ("limit_kw", "limit_a", "starts_at", "ends_at")],
    )
    site_rebalance_request(site_id=site.pk, reason="limit override set")
    return override


@transaction.atomic
def override_end(*, override: LimitOverride, now: datetime, actor: str) -> bool:
    """End an override now (one not started yet is removed); False when it had ended already."""
    require_tenant_schema("override_end")
    override = LimitOverride.objects.select_for_update().select_related("site").get(pk=override.pk)
    if override.ends_at <= now:
        return False
    label = f"{override.site.name}: {override.reason}"
    if override.starts_at >= now:
        audit_record(
            actor=actor,
            action="delete",
            object_type="override",
            object_id=override.pk,
            label=label,
            changes=[("ends_at", override.ends_at, None)],
        )
        override.delete()
    else:
        audit_record(
            actor=actor,
            action="update",
            object_type="override",
            object_id=override.pk,
            label=label,
            changes=[("ends_at", override.ends_at, now)],
        )
        override.ends_at = now
        override.save(update_fields=["ends_at"])
    site_rebalance_request(site_id=override.site_id, reason="limit override ended")
    return True


def site_limits_refresh(*, site_id: int, actor: str, reason: str) -> None:
    """After a change to what limits a site made elsewhere than the portal (the Django admin).

    The fail-safe is sized again (not strictly: the change is made, and a ``failsafe`` alert
    says if a fixed fail-safe no longer fits) and a balancing run is requested. Call it in the
    change's transaction: the run reads what was written. A site deleted meanwhile is skipped.
    """
    require_tenant_schema("site_limits_refresh")
    site = Site.objects.filter(pk=site_id).first()
    if site is None:
        return
    site_failsafe_refresh(site=site, actor=actor, strict=False)
    site_rebalance_request(site_id=site_id, reason=reason)
