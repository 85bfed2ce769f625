"""Platform operators' charger actions: register, move between sites or organisations, reset
a password. Schema: public, reaching into the tenant schemas involved (one place, explicit).

The platform console's charger page (``chargepoint.admin.ChargePointIdentityAdmin``) calls these.
They live with the chargers, not with the identity registry's model (``tenants.models``), because
a move reaches into the sites and limits of the organisations involved.
"""

import secrets
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from balancing.failsafe import site_failsafe_refresh
from balancing.models import ConnectorLimit
from balancing.selectors import circuit_get, site_get
from chargepoint.models import ChargingStation, Connector
from chargepoint.services import charger_register
from tenants.accounts.services import audit_record
from tenants.models import ChargePointIdentity, Tenant

GENERATED_PASSWORD_CHARS = 32


def charger_password_generate() -> str:
    """A random OCPP Basic-auth password within the 16-40 printable characters allowed."""
    return secrets.token_urlsafe(GENERATED_PASSWORD_CHARS)[:GENERATED_PASSWORD_CHARS]


@transaction.atomic
def charger_password_reset(*, identity: ChargePointIdentity, actor: str) -> str:
    """Give a charger a new random password (stored hashed); returns it, to be shown once."""
    password = charger_password_generate()
    with schema_context(get_public_schema_name()):
        identity.set_password(password)
        identity.password_changed_at = timezone.now()
        identity.save(update_fields=["password_hash", "password_changed_at", "updated_at"])
    with tenant_context(identity.tenant):
        audit_record(
            actor=actor,
            action="reset_password",
            object_type="charger",
            object_id=identity.pk,
            label=identity.charge_point_id,
            changes=[("password", "", "reset by the platform")],
        )
    return password


@dataclass(frozen=True)
class MoveOutcome:
    identity: ChargePointIdentity
    new_password: str | None


def charger_move(
    *, identity: ChargePointIdentity, tenant: Tenant, site_slug: str, actor: str, circuit_name: str | None = None
) -> MoveOutcome:
    """Move a registered charger to another site, of the same or another organisation.

    Within an organisation the station keeps its history. Across organisations the old
    station row stays behind as the old organisation's history (its sessions are theirs), the
    charger is registered afresh in the new one with a new password (returned, shown once),
    and the registry points at the new home; the old organisation can no longer reach it.
    """
    old_tenant = identity.tenant
    if tenant.pk == old_tenant.pk:
        with transaction.atomic(), tenant_context(tenant):
            site = site_get(slug=site_slug)
            circuit = circuit_get(site=site, name=circuit_name) if circuit_name else None
            station = ChargingStation.objects.select_for_update().get(charge_point_id=identity.charge_point_id)
            if station.phases > site.phases:
                raise ValidationError(
                    {"site": f"a {station.phases}-phase charger cannot move to single-phase site {site.slug!r}"}
                )
            moved_from = station.site
            station.site, station.circuit = site, circuit
            station.save(update_fields=["site", "circuit", "updated_at"])
            # Both sites' chargers at their fail-safe must still fit (sized again, or refused).
            site_failsafe_refresh(site=site, actor=actor)
            if moved_from.pk != site.pk:
                site_failsafe_refresh(site=moved_from, actor=actor)
            with schema_context(get_public_schema_name()):
                identity.site_slug = site.slug
                identity.save(update_fields=["site_slug", "updated_at"])
            audit_record(
                actor=actor,
                action="move",
                object_type="charger",
                object_id=station.pk,
                label=station.charge_point_id,
                changes=[("site", moved_from.slug, site.slug)],
            )
        return MoveOutcome(identity, None)

    with tenant_context(old_tenant):
        old = ChargingStation.objects.get(charge_point_id=identity.charge_point_id)
        rating_a, phases, wiring = Decimal(old.max_current_a), int(old.phases), str(old.wiring)
        connectors = max(1, Connector.objects.filter(station=old).count())
    password = charger_password_generate()
    with transaction.atomic():
        with schema_context(get_public_schema_name()):
            # Hand the id over first: charger_register refuses an id owned by another organisation.
            identity.tenant = tenant
            identity.save(update_fields=["tenant", "updated_at"])
        charger_register(
            tenant=tenant,
            site_slug=site_slug,
            charge_point_id=identity.charge_point_id,
            password=password,
            circuit_name=circuit_name,
            max_current_a=rating_a,
            phases=phases,
            wiring=wiring,
            connectors=connectors,
        )
        with tenant_context(old_tenant):
            # The old home keeps the history but must not reserve capacity for a charger that left.
            ChargingStation.objects.filter(pk=old.pk).update(is_online=False)
            old.sessions.filter(stopped_at__isnull=True).update(stopped_at=timezone.now(), stop_reason="ChargerMoved")
            ConnectorLimit.objects.filter(connector__station=old).delete()
            audit_record(
                actor=actor,
                action="move_out",
                object_type="charger",
                object_id=old.pk,
                label=old.charge_point_id,
                changes=[("organisation", old_tenant.slug, tenant.slug)],
            )
    identity.refresh_from_db()
    return MoveOutcome(identity, password)
