"""Writes to sites and their circuit trees. Schema: tenant.

Create-or-update functions converge the stored row to their input and return what changed,
so onboarding scripts can run them again safely.
"""

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction

from balancing.models import Circuit, Site
from balancing.selectors import circuit_get
from evplatform.services import Outcome, describe_change, require_tenant_schema


def _apply(obj: Site | Circuit, values: dict[str, object], changes: list[str]) -> None:
    for attr, value in values.items():
        old = getattr(obj, attr)
        if old != value:
            if obj.pk is not None:
                changes.append(describe_change(attr, old, value))
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
    failsafe_a: Decimal = Decimal("6"),
    timezone: str = "UTC",
) -> Outcome[Site]:
    """Create the site ``slug`` or bring it to these values. Raises ``ValidationError`` by field."""
    require_tenant_schema("site_create_or_update")
    site = Site.objects.select_for_update().filter(slug=slug).first()
    created = site is None
    if site is None:
        site = Site(slug=slug)
    changes: list[str] = []
    _apply(
        site,
        {
            "name": name,
            "limit_a": limit_a,
            "voltage_v": voltage_v,
            "phases": phases,
            "demand_cap_kw": demand_cap_kw,
            "failsafe_a": failsafe_a,
            "timezone": timezone,
        },
        changes,
    )
    site.full_clean()
    if not created and phases == 1 and site.stations.filter(phases=3).exists():
        raise ValidationError(
            {"phases": "three-phase chargers are registered at this site; it cannot become single-phase"}
        )
    if site.failsafe_a > site.limit_a:
        raise ValidationError(
            {"failsafe_a": f"fail-safe current {site.failsafe_a} A is above the site limit {site.limit_a} A"}
        )
    site.save()
    return Outcome(site, created, changes)


@transaction.atomic
def circuit_create_or_update(
    *,
    site: Site,
    name: str,
    limit_a: Decimal,
    kind: str = Circuit.Kind.CIRCUIT,
    parent_name: str | None = None,
    limit_kw: Decimal | None = None,
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
    _apply(circuit, {"limit_a": limit_a, "kind": kind, "parent": parent, "limit_kw": limit_kw}, changes)
    circuit.full_clean()
    circuit.save()
    return Outcome(circuit, created, changes)
