"""Registering chargers. Schema: tenant, plus the public identity registry.

``charger_register`` is the onboarding path that writes both sides: the station in the
organisation's schema and its identity (id -> organisation, site, password hash) in public,
in one transaction, so a charger is never half-registered.
"""

import re
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from balancing.selectors import circuit_get, site_get
from chargepoint.models import ChargingStation, Connector
from evplatform.services import Outcome, describe_change
from tenants.models import ChargePointIdentity, Tenant
from tenants.selectors import identity_find
from tenants.validators import CHARGE_POINT_ID_RE

# OCPP security profiles 1/2: the Basic-auth password is 16 to 40 printable ASCII characters
# (OCPP 1.6 security whitepaper, OCPP 2.0.1 BasicAuthPassword).
CHARGER_PASSWORD_RE = re.compile(r"^[\x21-\x7e]{16,40}$")
MIN_CHARGING_CURRENT_A = Decimal(6)  # IEC 61851 / SAE J1772 lowest pilot current
MAX_STATION_CURRENT_A = Decimal(1000)
WIRING_BY_PHASES = {1: ChargingStation.Wiring.L1, 3: ChargingStation.Wiring.L1L2L3}
MAX_CONNECTORS = 16


def _validate(
    *, charge_point_id: str, password: str, max_current_a: Decimal, phases: int, wiring: str, connectors: int
) -> None:
    errors: dict[str, str] = {}
    if not CHARGE_POINT_ID_RE.match(charge_point_id):
        errors["charge_point_id"] = (
            f"{charge_point_id!r} is not a valid charge point id: "
            "1-48 characters of letters, digits, '.', '_', '~', '-'"
        )
    if not CHARGER_PASSWORD_RE.match(password):
        errors["password"] = "must be 16 to 40 printable ASCII characters without spaces (OCPP security profile 1/2)"  # noqa: S105
    if not MIN_CHARGING_CURRENT_A <= max_current_a <= MAX_STATION_CURRENT_A:
        errors["max_current_a"] = (
            f"{max_current_a} A is outside {MIN_CHARGING_CURRENT_A}-{MAX_STATION_CURRENT_A} A "
            "(a charger offers at least 6 A per IEC 61851)"
        )
    if phases not in WIRING_BY_PHASES:
        errors["phases"] = f"{phases} is not a phase count; use 1 or 3"
    elif len(wiring) != 2 * phases or wiring not in ChargingStation.Wiring.values:
        allowed = [w for w in ChargingStation.Wiring.values if len(w) == 2 * phases]
        errors["wiring"] = f"{wiring!r} does not fit a {phases}-phase charger; use one of {', '.join(allowed)}"
    if not 1 <= connectors <= MAX_CONNECTORS:
        errors["connectors"] = f"{connectors} is outside 1-{MAX_CONNECTORS}"
    if errors:
        raise ValidationError(errors)


def charger_register(
    *,
    tenant: Tenant,
    site_slug: str,
    charge_point_id: str,
    password: str,
    max_current_a: Decimal,
    phases: int = 3,
    wiring: str | None = None,
    circuit_name: str | None = None,
    connectors: int = 1,
) -> Outcome[ChargingStation]:
    """Register a charger at a site (or bring its registration to these values).

    Raises ``ValidationError`` naming the bad field, and the selectors' not-found errors for
    an unknown site or circuit. The id must not belong to another organisation.
    """
    wiring = wiring or str(WIRING_BY_PHASES.get(phases, ""))
    _validate(
        charge_point_id=charge_point_id,
        password=password,
        max_current_a=max_current_a,
        phases=phases,
        wiring=wiring,
        connectors=connectors,
    )
    changes: list[str] = []
    with transaction.atomic():
        with schema_context(get_public_schema_name()):
            identity = identity_find(charge_point_id=charge_point_id)
            if identity is not None and identity.tenant_id != tenant.pk:
                raise ValidationError(
                    {"charge_point_id": f"{charge_point_id!r} is already registered to another organisation"}
                )
            if identity is not None and identity.charge_point_id != charge_point_id:
                raise ValidationError(
                    {"charge_point_id": f"{charge_point_id!r} is already registered as {identity.charge_point_id!r}"}
                )

        with tenant_context(tenant):
            site = site_get(slug=site_slug)
            if phases > site.phases:
                raise ValidationError(
                    {"phases": f"a {phases}-phase charger cannot be wired to single-phase site {site.slug!r}"}
                )
            circuit = circuit_get(site=site, name=circuit_name) if circuit_name else None
            station = ChargingStation.objects.select_for_update().filter(charge_point_id=charge_point_id).first()
            created = station is None
            if station is None:
                station = ChargingStation(charge_point_id=charge_point_id)
            values = {
                "site": site,
                "circuit": circuit,
                "max_current_a": max_current_a,
                "phases": phases,
                "wiring": wiring,
            }
            for attr, value in values.items():
                old = getattr(station, attr) if not created else None
                if not created and old != value:
                    changes.append(describe_change(attr, old, value))
                setattr(station, attr, value)
            station.full_clean()
            station.save()
            existing = set(station.connectors.values_list("connector_id", flat=True))
            for number in range(1, connectors + 1):
                if number not in existing:
                    Connector.objects.create(station=station, connector_id=number)
                    if not created:
                        changes.append(f"connector {number} added")

        with schema_context(get_public_schema_name()):
            if identity is None:
                identity = ChargePointIdentity(charge_point_id=charge_point_id, tenant=tenant)
                identity.set_password(password)
                identity.password_changed_at = timezone.now()
            else:
                if not identity.check_password(password):
                    identity.set_password(password)
                    identity.password_changed_at = timezone.now()
                    changes.append("password changed")
                if not identity.is_active:
                    changes.append("identity re-activated")
            identity.site_slug = site_slug
            identity.is_active = True
            identity.full_clean()
            identity.save()
    return Outcome(station, created, changes)
