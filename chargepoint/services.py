"""Registration of chargers. Schema: tenant, plus the public identity registry for onboarding.

``charger_register`` is the onboarding path that writes both sides: the station in the
organisation's schema and its identity (id -> organisation, site, password hash) in public,
in one transaction, so a charger is never half-registered. ``charger_save`` is it audited and
rebalanced (portal, API), ``charger_deactivate`` refuses a charger's connections from then on.

What follows for balancing (the fail-safe sized again, a rebalance) goes out as events of
``chargepoint.listeners``. The charger's telemetry is ``chargepoint.telemetry``, the liveness
sweeps ``chargepoint.liveness``, its command records ``chargepoint.commands``.
"""

import re
import secrets
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from balancing.models import Site
from balancing.selectors import circuit_get, site_get
from chargepoint import listeners
from chargepoint.models import ChargingStation, Connector
from evplatform.services import Outcome, describe_change, require_tenant_schema
from tenants.accounts.services import audit_record
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
    *, charge_point_id: str, password: str | None, max_current_a: Decimal, phases: int, wiring: str, connectors: int
) -> None:
    errors: dict[str, str] = {}
    if not CHARGE_POINT_ID_RE.match(charge_point_id):
        errors["charge_point_id"] = (
            f"{charge_point_id!r} is not a valid charge point id: "
            "1-48 characters of letters, digits, '.', '_', '~', '-'"
        )
    if password is not None and not CHARGER_PASSWORD_RE.match(password):
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
    password: str | None,
    max_current_a: Decimal,
    phases: int = 3,
    wiring: str | None = None,
    circuit_name: str | None = None,
    connectors: int = 1,
    is_site_meter: bool = False,
) -> Outcome[ChargingStation]:
    """Register a charger at a site (or bring its registration to these values).

    Raises ``ValidationError`` naming the bad field, and the selectors' not-found errors for
    an unknown site or circuit. The id must not belong to another organisation. ``password``
    None keeps a registered charger's password (a new charger needs one).
    ``is_site_meter``: an OCPP identity that is the site's meter, reporting on connector 0; it
    gets no connectors, so balancing never plans it as a charger.
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
            if identity is None and password is None:
                raise ValidationError({"password": "required for a charger not registered yet"})
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
            old_site_id = None if created else station.site_id
            values = {
                "site": site,
                "circuit": circuit,
                "max_current_a": max_current_a,
                "phases": phases,
                "wiring": wiring,
                "is_site_meter": is_site_meter,
            }
            for attr, value in values.items():
                old = getattr(station, attr) if not created else None
                if not created and old != value:
                    changes.append(describe_change(attr, old, value))
                setattr(station, attr, value)
            station.full_clean()
            station.save()
            existing = set(station.connectors.values_list("connector_id", flat=True))
            if is_site_meter and existing:
                raise ValidationError(
                    {"is_site_meter": f"{charge_point_id!r} is registered as a charger with connectors; not a meter"}
                )
            for number in range(1, 0 if is_site_meter else connectors + 1):
                if number not in existing:
                    Connector.objects.create(station=station, connector_id=number)
                    if not created:
                        changes.append(f"connector {number} added")
            if created or changes:
                # A charger added, moved or re-rated changes what all of them at their fail-safe draw.
                actor = "system:charger_register"
                listeners.site_chargers_changed.send(site=site, actor=actor, strict=True)
                if old_site_id is not None and old_site_id != site.pk:
                    listeners.site_chargers_changed.send(
                        site=Site.objects.get(pk=old_site_id), actor=actor, strict=True
                    )

        with schema_context(get_public_schema_name()):
            if identity is None:
                if password is None:  # refused above; here only if the registry row went in between
                    raise ValidationError({"password": "required for a charger not registered yet"})
                identity = ChargePointIdentity(charge_point_id=charge_point_id, tenant=tenant)
                identity.set_password(password)
                identity.password_changed_at = timezone.now()
            else:
                if password is not None and not identity.check_password(password):
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


GENERATED_PASSWORD_CHARS = 32


@dataclass(frozen=True)
class ChargerSaved:
    """What ``charger_save`` did; ``password`` is the one generated for a new charger (shown once)."""

    outcome: Outcome[ChargingStation]
    password: str | None
    active: bool


def _charger_state(station: ChargingStation | None, identity: ChargePointIdentity | None) -> dict[str, object]:
    if station is None:
        return {}
    return {
        "site": station.site.slug,
        "circuit": station.circuit.name if station.circuit else None,
        "max_current_a": station.max_current_a,
        "phases": station.phases,
        "wiring": station.wiring,
        "connectors": station.connectors.count(),
        "active": identity.is_active if identity is not None else None,
    }


@transaction.atomic
def charger_save(
    *,
    tenant: Tenant,
    charge_point_id: str,
    site_slug: str,
    max_current_a: Decimal,
    phases: int = 3,
    wiring: str | None = None,
    circuit_name: str | None = None,
    connectors: int = 1,
    password: str | None = None,
    actor: str,
) -> ChargerSaved:
    """Register a charger or bring it to these values (``charger_register``), audited and rebalanced.

    A new charger without ``password`` gets a generated one, returned once (only its hash is
    kept); a registered one keeps its password unless one is given. Connectors are added up to
    ``connectors``, never removed (a charger reports its own). Every changed field is one audit
    row; the charger's site (and the one it left) is rebalanced once the change commits.
    """
    require_tenant_schema("charger_save")
    before_station = (
        ChargingStation.objects.select_related("site", "circuit").filter(charge_point_id=charge_point_id).first()
    )
    identity = _identity_of(charge_point_id)
    before = _charger_state(before_station, identity if identity and identity.tenant_id == tenant.pk else None)
    generated = None
    if password is None and identity is None:
        generated = password = secrets.token_urlsafe(GENERATED_PASSWORD_CHARS)[:GENERATED_PASSWORD_CHARS]
    outcome = charger_register(
        tenant=tenant,
        site_slug=site_slug,
        charge_point_id=charge_point_id,
        password=password,
        max_current_a=max_current_a,
        phases=phases,
        wiring=wiring,
        circuit_name=circuit_name,
        connectors=connectors,
    )
    station = ChargingStation.objects.select_related("site", "circuit").get(pk=outcome.obj.pk)
    after = _charger_state(station, _identity_of(charge_point_id))
    changes: list[tuple[str, object, object]] = [
        (name, before.get(name), value) for name, value in after.items() if before.get(name) != value
    ]
    if "password changed" in outcome.changes:
        changes.append(("password", "", "changed"))
    if changes:
        audit_record(
            actor=actor,
            action="create" if outcome.created else "update",
            object_type="charger",
            object_id=station.pk,
            label=charge_point_id,
            changes=changes,
        )
        listeners.site_inputs_changed.send(site_id=station.site_id, reason="charger changed")
        if before_station is not None and before_station.site_id != station.site_id:
            listeners.site_inputs_changed.send(site_id=before_station.site_id, reason="charger moved away")
    return ChargerSaved(Outcome(station, outcome.created, outcome.changes), generated, True)


def _identity_of(charge_point_id: str) -> ChargePointIdentity | None:
    with schema_context(get_public_schema_name()):
        return identity_find(charge_point_id=charge_point_id)


def charger_is_active(*, charge_point_id: str) -> bool:
    """Whether the charger's identity may connect (``charger_deactivate`` turns it off)."""
    identity = _identity_of(charge_point_id)
    return bool(identity is not None and identity.is_active)


@transaction.atomic
def charger_deactivate(*, tenant: Tenant, station: ChargingStation, actor: str) -> bool:
    """Refuse the charger's connections from now on; its history and registration stay.

    Its identity is deactivated (the gateway refuses its next handshake; a connection open now
    is not cut, and the charger keeps being planned while it is online). Registering it again
    (``charger_save``) re-activates it. False when it was inactive already; audited, rebalanced.
    """
    require_tenant_schema("charger_deactivate")
    with schema_context(get_public_schema_name()):
        identity = (
            ChargePointIdentity.objects.select_for_update()
            .filter(charge_point_id=station.charge_point_id, tenant=tenant)
            .first()
        )
        if identity is None or not identity.is_active:
            return False
        identity.is_active = False
        identity.save(update_fields=["is_active", "updated_at"])
    audit_record(
        actor=actor,
        action="deactivate",
        object_type="charger",
        object_id=station.pk,
        label=station.charge_point_id,
        changes=[("active", True, False)],
    )
    listeners.site_inputs_changed.send(site_id=station.site_id, reason="charger deactivated")
    return True
