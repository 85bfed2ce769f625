"""Writes of the charger app. Schema: tenant, plus the public identity registry for onboarding.

``charger_register`` is the onboarding path that writes both sides: the station in the
organisation's schema and its identity (id -> organisation, site, password hash) in public,
in one transaction, so a charger is never half-registered.

``telemetry_apply`` is what a worker does with a batch of gateway events (boot, status,
transactions, meter values, online/offline) in the charger's tenant schema; the command
record functions keep the platform's calls to chargers on file (``chargepoint.commands``).
"""

import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from balancing.failsafe import site_failsafe_refresh
from balancing.models import ConnectorLimit, Site
from balancing.selectors import circuit_get, site_get
from chargepoint.models import ChargerCommand, ChargingSession, ChargingStation, Connector
from chargepoint.partitions import retention_cutoff
from chargepoint.readings import CURRENT, ReadingRows, readings_store
from chargepoint.resync import station_resync_request
from chargepoint.selectors import gateway_instances_gone, station_gateway_ids_online
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
# A missing gateway heartbeat key is looked at again after this (s): twice the gateway's
# retry after a failed heartbeat (``chargepoint.gateway.server.HEARTBEAT_RETRY_S``).
GATEWAY_RECHECK_S = 2.0


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
                site_failsafe_refresh(site=site, actor=actor)
                if old_site_id is not None and old_site_id != site.pk:
                    site_failsafe_refresh(site=Site.objects.get(pk=old_site_id), actor=actor)

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
    from balancing.services import site_rebalance_request  # balancing reads chargepoint: import late

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
        site_rebalance_request(site_id=station.site_id, reason="charger changed")
        if before_station is not None and before_station.site_id != station.site_id:
            site_rebalance_request(site_id=before_station.site_id, reason="charger moved away")
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
    from balancing.services import site_rebalance_request  # balancing reads chargepoint: import late

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
    site_rebalance_request(site_id=station.site_id, reason="charger deactivated")
    return True


# --- Telemetry from the gateway (runs in a worker, in the charger's tenant schema) ----------------

logger = logging.getLogger("chargepoint.telemetry")
ENERGY_QUANTUM = Decimal("0.001")
MAX_NEEDED_KWH = Decimal(10000)
MAX_EV_CURRENT_A = Decimal(1000)


@dataclass
class TelemetryOutcome:
    """What one batch did; ``rebalance`` maps site ids to why they need a balancing run."""

    applied: int = 0
    skipped: int = 0
    samples: int = 0
    rebalance: dict[int, str] = field(default_factory=dict)


def transaction_id_next() -> int:
    """The next OCPP 1.6 transactionId of this tenant (a PostgreSQL sequence: durable, unique)."""
    require_tenant_schema("transaction_id_next")
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval('chargepoint_transaction_id_seq')")
        row = cursor.fetchone()
    if row is None:
        raise RuntimeError("chargepoint_transaction_id_seq returned nothing")
    return int(row[0])


def _at(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _decimal(value: object) -> Decimal:
    result = Decimal(str(value))
    if not result.is_finite():
        raise ValueError(f"{value!r} is not finite")
    return result


class _Batch:
    """State of one telemetry batch: the stations, connectors and open sessions it touches."""

    def __init__(self, stations: dict[str, ChargingStation]) -> None:
        self.stations = stations
        self.station_ids = ids = [s.pk for s in stations.values()]
        self.connectors = {(c.station_id, c.connector_id): c for c in Connector.objects.filter(station_id__in=ids)}
        self.open_sessions = {
            s.connector_id: s for s in ChargingSession.objects.filter(station_id__in=ids, stopped_at__isnull=True)
        }
        self._limits: dict[int, ConnectorLimit] | None = None  # by connector pk, read when first needed
        self.dirty_stations: set[int] = set()
        self.dirty_connectors: dict[int, Connector] = {}
        self.grown_sites: set[int] = set()  # a charger reported a connector nobody registered
        self.readings = ReadingRows()
        self.outcome = TelemetryOutcome()

    def connector(self, station: ChargingStation, number: int) -> Connector:
        found = self.connectors.get((station.pk, number))
        if found is None:
            if not 1 <= number <= MAX_CONNECTORS:
                raise ValueError(f"connector {number} is outside 1-{MAX_CONNECTORS}")
            found, created = Connector.objects.get_or_create(station=station, connector_id=number)
            self.connectors[(station.pk, number)] = found
            if created:
                self.grown_sites.add(station.site_id)
        return found

    def limit(self, connector: Connector) -> ConnectorLimit | None:
        """The connector's accepted limit on the books; one query for all the batch's stations."""
        if self._limits is None:
            booked = ConnectorLimit.objects.filter(connector__station_id__in=self.station_ids, limit_a__isnull=False)
            self._limits = {limit.connector_id: limit for limit in booked}
        return self._limits.get(connector.pk)

    def session(self, station: ChargingStation, transaction_id: str) -> ChargingSession | None:
        for session in self.open_sessions.values():
            if session.station_id == station.pk and session.transaction_id == transaction_id:
                return session
        return ChargingSession.objects.filter(station=station, transaction_id=transaction_id).first()

    def rebalance(self, station: ChargingStation, reason: str) -> None:
        self.outcome.rebalance.setdefault(station.site_id, f"{station.charge_point_id}: {reason}")


def _on_connected(batch: _Batch, station: ChargingStation, event: dict[str, Any]) -> None:
    started = _at(event["connected_at"])
    if station.connected_at is not None and started < station.connected_at:
        return  # an older connection's news
    if station.connected_at is not None:  # back after an earlier connection: ask it what it does (after commit)
        station_resync_request(station_id=station.pk, reason="reconnected")
    was_online = station.is_online
    station.is_online = True
    station.connected_at = started
    station.gateway_id = str(event.get("gateway") or "")[:64]
    if event.get("ocpp_version") in ("1.6", "2.0.1"):
        station.ocpp_version = event["ocpp_version"]
    batch.dirty_stations.add(station.pk)
    if not was_online:
        batch.rebalance(station, "online")


def _on_disconnected(batch: _Batch, station: ChargingStation, event: dict[str, Any]) -> None:
    started = _at(event["connected_at"])
    if station.connected_at is not None and started < station.connected_at:
        return  # the charger has reconnected since: this connection no longer counts
    if station.gateway_id:
        station.gateway_id = ""
        batch.dirty_stations.add(station.pk)
    if station.is_online:
        station.is_online = False
        batch.dirty_stations.add(station.pk)
        batch.rebalance(station, "offline")


def _on_boot(batch: _Batch, station: ChargingStation, event: dict[str, Any]) -> None:
    for attr in ("vendor", "model", "serial_number", "firmware_version"):
        setattr(station, attr, str(event.get(attr) or "")[:50])
    if event.get("ocpp_version") in ("1.6", "2.0.1"):
        station.ocpp_version = event["ocpp_version"]
    station.last_boot_at = _at(event["ts"])
    batch.dirty_stations.add(station.pk)
    batch.rebalance(station, "boot")


def _on_status(batch: _Batch, station: ChargingStation, event: dict[str, Any]) -> None:
    connector = batch.connector(station, int(event["connector"]))
    at = _at(event["at"])
    if connector.status_changed_at is not None and at < connector.status_changed_at:
        return  # older than what we have
    status = event["status"] if event["status"] in Connector.Status.values else Connector.Status.UNKNOWN
    was = connector.status
    connector.status = status
    connector.error_code = str(event.get("error_code") or "")[:50]
    connector.status_changed_at = at
    batch.dirty_connectors[connector.pk] = connector
    if was != status:
        batch.rebalance(station, f"connector {connector.connector_id} {status}")
    _fault_note(station, connector, status=status, was=was, event=event)


def _on_station_status(batch: _Batch, station: ChargingStation, event: dict[str, Any]) -> None:
    """The station as a whole (OCPP connector 0): only a fault matters here, as a station alert."""
    status = event["status"] if event["status"] in Connector.Status.values else Connector.Status.UNKNOWN
    _fault_note(station, None, status=status, was=None, event=event)


def _fault_note(
    station: ChargingStation, connector: Connector | None, *, status: str, was: str | None, event: dict[str, Any]
) -> None:
    """Open the FAULTED alert of a connector (or station) reporting Faulted; close it when it reports anything else.

    A repeated Faulted refreshes the open alert (its error code may change); it never opens a second one.
    """
    from balancing.alerts import alert_clear, alert_raise  # balancing reads chargepoint: import late
    from balancing.models import SiteAlert

    where = f"connector {connector.connector_id}" if connector is not None else "station"
    if status == Connector.Status.FAULTED:
        code = str(event.get("error_code") or "")[:50]
        vendor_code = str(event.get("vendor_error_code") or "")[:50]
        detail = f"{station.charge_point_id} {where} reports Faulted: " + (
            code or "no error code given (OCPP 2.0.1 StatusNotification has none)"
        )
        if vendor_code:
            detail += f" (vendor code {vendor_code})"
        alert_raise(
            site=station.site,
            kind=SiteAlert.Kind.FAULTED,
            detail=detail,
            now=timezone.now(),
            station=station,
            connector=connector,
        )
    elif was is None or was == Connector.Status.FAULTED:
        alert_clear(
            site=station.site,
            kind=SiteAlert.Kind.FAULTED,
            now=timezone.now(),
            station=station,
            connector=connector,
            why=f"{where} now {status}",
        )


def _on_start(batch: _Batch, station: ChargingStation, event: dict[str, Any]) -> None:
    connector = batch.connector(station, int(event["connector"]))
    transaction_id = str(event["transaction_id"])[:64]
    if ChargingSession.objects.filter(station=station, transaction_id=transaction_id).exists():
        return  # already recorded (a redelivered batch)
    started_at = _at(event["at"])
    previous = batch.open_sessions.get(connector.pk)
    if previous is not None:
        # The charger never told us this one ended (a lost StopTransaction): close it here.
        previous.stopped_at = max(started_at, previous.started_at)
        previous.stop_reason = "Superseded"
        previous.save(update_fields=["stopped_at", "stop_reason"])
    session = ChargingSession.objects.create(
        station=station,
        connector=connector,
        transaction_id=transaction_id,
        id_tag=str(event.get("id_tag") or "")[:36],
        started_at=started_at,
        meter_start_wh=_decimal(event.get("meter_start_wh") or 0),
    )
    batch.open_sessions[connector.pk] = session
    batch.rebalance(station, f"session {transaction_id} started")


def _on_stop(batch: _Batch, station: ChargingStation, event: dict[str, Any]) -> None:
    transaction_id = str(event["transaction_id"])[:64]
    session = batch.session(station, transaction_id)
    if session is None:
        logger.warning("%s: stop of unknown transaction %s", station.charge_point_id, transaction_id)
        return
    if session.stopped_at is not None:
        return
    session.stopped_at = max(_at(event["at"]), session.started_at)
    session.stop_reason = str(event.get("reason") or "")[:40]
    if event.get("meter_stop_wh") is not None:
        session.meter_stop_wh = _decimal(event["meter_stop_wh"])
        session.energy_kwh = max(Decimal(0), (session.meter_stop_wh - session.meter_start_wh) / 1000).quantize(
            ENERGY_QUANTUM
        )
    session.save(update_fields=["stopped_at", "stop_reason", "meter_stop_wh", "energy_kwh"])
    batch.open_sessions.pop(session.connector_id, None)
    batch.rebalance(station, f"session {transaction_id} stopped")


def _on_meter(batch: _Batch, station: ChargingStation, event: dict[str, Any]) -> None:
    number = event.get("connector")
    if station.is_site_meter and not number and not event.get("transaction_id"):
        from balancing.meter import site_meter_record_samples  # balancing reads chargepoint: import late

        site_meter_record_samples(site=station.site, samples=event["samples"], now=timezone.now())
        return
    connector = batch.connector(station, int(number)) if number else None
    session = None
    if event.get("transaction_id"):
        session = batch.session(station, str(event["transaction_id"])[:64])
    elif connector is not None:
        session = batch.open_sessions.get(connector.pk)
    now = timezone.now()
    oldest = retention_cutoff(now)
    currents: list[Decimal] = []
    for sample in event["samples"]:
        why = _implausible(station, sample, now, oldest)
        if why:
            logger.warning(
                "%s: reading refused, never used: %s %s %s on connector %s at %s: %s",
                station.charge_point_id,
                sample.get("measurand"),
                sample.get("value"),
                sample.get("unit") or "",
                number or 0,
                sample.get("at"),
                why,
            )
            continue
        measurand = str(sample["measurand"])[:64]
        value = _decimal(sample["value"])
        batch.readings.add(
            station_id=station.pk,
            connector_no=connector.connector_id if connector is not None else 0,
            at=_at(sample["at"]),
            session_id=session.pk if session is not None else None,
            measurand=measurand,
            phase=str(sample.get("phase") or "")[:8],
            location=str(sample.get("location") or "")[:10],
            context=str(sample.get("context") or "")[:30],
            unit=str(sample.get("unit") or "")[:16],
            value=float(value),
        )
        if measurand == CURRENT:
            currents.append(value)
    if connector is not None and session is not None:
        _rebalance_if_over_books(batch, station, connector, session, currents)


# Measurands that cannot be negative, and how far ahead of our clock a reading may be dated.
IMPORT_MEASURANDS = frozenset({"Current.Import", "Power.Active.Import", "Energy.Active.Import.Register"})
READING_MAX_AHEAD = timedelta(minutes=1)
# A current above this many times the station's rating cannot be real (a CT on the wrong range).
CURRENT_MAX_RATING_FACTOR = 2


def _implausible(station: ChargingStation, sample: dict[str, Any], now: datetime, oldest: datetime) -> str:
    """Why a charger's reading cannot be true (it is then not stored, so it never moves a limit)."""
    try:
        value = _decimal(sample["value"])
        at = _at(sample["at"])
    except (KeyError, ValueError, ArithmeticError) as exc:
        return f"unreadable ({exc})"
    measurand = str(sample.get("measurand") or "")
    if at > now + READING_MAX_AHEAD:
        return f"dated {(at - now).total_seconds():.0f} s in the future"
    if at < oldest:
        return "older than the retention period of raw readings"
    if measurand in IMPORT_MEASURANDS and value < 0:
        return "negative"
    if measurand == "Current.Import" and value > CURRENT_MAX_RATING_FACTOR * station.max_current_a:
        return f"above {CURRENT_MAX_RATING_FACTOR}x the station's rating of {station.max_current_a} A"
    return ""


def _rebalance_if_over_books(
    batch: _Batch, station: ChargingStation, connector: Connector, session: ChargingSession, currents: list[Decimal]
) -> None:
    """A Current.Import above the connector's accepted limit (plus tolerance) asks for a run now.

    So an overdraw is acted on one meter interval plus one run after it shows, not at the next
    sweep; the run itself decides whether the charger is non-compliant.
    """
    if not currents:
        return
    from balancing.problem import overdraw_tolerance_a

    limit = batch.limit(connector)
    if limit is None or limit.limit_a is None or limit.transaction_id != session.transaction_id:
        return
    allowed = float(limit.limit_a)
    drawn = float(max(currents))
    if limit.overdraw_since is not None and limit.overdraw_a is not None:
        allowed = max(allowed, float(limit.overdraw_a))  # already booked at its draw: news only if it grows
    if drawn > allowed + overdraw_tolerance_a(allowed):
        batch.rebalance(station, f"connector {connector.connector_id} draws {drawn:.1f} A over {allowed:g} A")


def _on_needs(batch: _Batch, station: ChargingStation, event: dict[str, Any]) -> None:
    connector = batch.connector(station, int(event["connector"]))
    session = batch.open_sessions.get(connector.pk)
    if session is None:
        logger.info("%s: charging needs for EVSE %s without a session", station.charge_point_id, event["connector"])
        return
    if event.get("departure_at"):
        session.departure_at = _at(event["departure_at"])
    if event.get("energy_needed_kwh") is not None:
        session.energy_needed_kwh = min(max(_decimal(event["energy_needed_kwh"]), Decimal(0)), MAX_NEEDED_KWH)
    if event.get("ev_max_current_a") is not None:
        session.ev_max_current_a = min(max(_decimal(event["ev_max_current_a"]), Decimal(0)), MAX_EV_CURRENT_A)
    session.save(update_fields=["departure_at", "energy_needed_kwh", "ev_max_current_a"])
    batch.rebalance(station, "charging needs")


def _on_limit(batch: _Batch, station: ChargingStation, event: dict[str, Any]) -> None:
    """A limit set outside the platform (or its removal) on one EVSE or, with 0, all of them."""
    number = int(event["connector"])
    connectors = [batch.connector(station, number)] if number else list(station.connectors.all())
    raw = event.get("limit_a")
    limit = None if raw is None else min(max(_decimal(raw), Decimal(0)), MAX_EV_CURRENT_A)
    for connector in connectors:
        connector.external_limit_a = limit
        connector.external_limit_source = str(event.get("source", ""))[:20] if limit is not None else ""
        connector.external_limit_at = _at(event["ts"])
        connector.save(update_fields=["external_limit_a", "external_limit_source", "external_limit_at"])
    batch.rebalance(station, "charger reported a limit" if limit is not None else "charger cleared a limit")


def _on_seen(batch: _Batch, station: ChargingStation, event: dict[str, Any]) -> None:
    pass  # last_seen_at is kept for every event


_HANDLERS = {
    "connected": _on_connected,
    "disconnected": _on_disconnected,
    "boot": _on_boot,
    "status": _on_status,
    "start": _on_start,
    "stop": _on_stop,
    "meter": _on_meter,
    "needs": _on_needs,
    "limit": _on_limit,
    "seen": _on_seen,
    "station_status": _on_station_status,
}
_SESSION_EVENTS = {"start", "stop", "needs"}


def telemetry_apply(*, events: list[dict[str, Any]]) -> TelemetryOutcome:
    """Apply one batch of gateway events in order, idempotently, in one transaction.

    Re-running a batch (a worker died before acknowledging it) changes nothing: sessions are
    keyed by transaction id, samples by the reading's natural key, states by their time.
    An event that does not fit (unknown charger, broken field) is skipped and logged; it
    does not cost the rest of the batch.
    """
    require_tenant_schema("telemetry_apply")
    cp_ids = sorted({str(e.get("cp")) for e in events})
    with transaction.atomic():
        # Locked in id order: two batches of the same charger apply one after the other.
        stations = {
            s.charge_point_id: s
            for s in ChargingStation.objects.select_for_update().filter(charge_point_id__in=cp_ids).order_by("pk")
        }
        batch = _Batch(stations)
        for event in events:
            station = stations.get(str(event.get("cp")))
            handler = _HANDLERS.get(str(event.get("type")))
            if station is None or handler is None:
                batch.outcome.skipped += 1
                logger.warning("skipped %s event of unknown charger %s", event.get("type"), event.get("cp"))
                continue
            try:
                if event["type"] in _SESSION_EVENTS:
                    with transaction.atomic():
                        handler(batch, station, event)
                else:
                    handler(batch, station, event)
                seen = _at(event["ts"])
            except (KeyError, ValueError, TypeError, ArithmeticError, ValidationError, IntegrityError):
                batch.outcome.skipped += 1
                logger.warning("skipped malformed %s event of %s", event.get("type"), event.get("cp"), exc_info=True)
                continue
            if station.last_seen_at is None or seen > station.last_seen_at:
                station.last_seen_at = seen
                batch.dirty_stations.add(station.pk)
            batch.outcome.applied += 1
        dirty = [s for s in stations.values() if s.pk in batch.dirty_stations]
        if dirty:
            ChargingStation.objects.bulk_update(
                dirty,
                [
                    "is_online",
                    "gateway_id",
                    "connected_at",
                    "last_seen_at",
                    "last_boot_at",
                    "ocpp_version",
                    "vendor",
                    "model",
                    "serial_number",
                    "firmware_version",
                ],
            )
        if batch.dirty_connectors:
            Connector.objects.bulk_update(
                list(batch.dirty_connectors.values()), ["status", "error_code", "status_changed_at"]
            )
        if batch.readings:
            readings_store(batch.readings)
            batch.outcome.samples = batch.readings.values
        for site_id in sorted(batch.grown_sites):  # one more connector at the fail-safe
            site_failsafe_refresh(site=Site.objects.get(pk=site_id), actor="system:telemetry", strict=False)
        if batch.outcome.rebalance:
            reasons = dict(batch.outcome.rebalance)
            transaction.on_commit(lambda: _request_rebalances(reasons))
    return batch.outcome


def _request_rebalances(reasons: dict[int, str]) -> None:
    from balancing.services import site_rebalance_request  # balancing reads chargepoint: import late

    for site_id, reason in reasons.items():
        site_rebalance_request(site_id=site_id, reason=reason)


def stations_offline_sweep(*, now: datetime, stale_after: timedelta) -> TelemetryOutcome:
    """Chargers silent for ``stale_after`` (a gateway died without saying so) go offline."""
    require_tenant_schema("stations_offline_sweep")
    outcome = TelemetryOutcome()
    with transaction.atomic():
        stale = list(
            ChargingStation.objects.select_for_update(skip_locked=True).filter(
                is_online=True, last_seen_at__lt=now - stale_after
            )
        )
        for station in stale:
            station.is_online = False
            station.gateway_id = ""
            outcome.rebalance.setdefault(station.site_id, f"{station.charge_point_id}: silent, taken offline")
        ChargingStation.objects.bulk_update(stale, ["is_online", "gateway_id"])
        outcome.applied = len(stale)
        if outcome.rebalance:
            reasons = dict(outcome.rebalance)
            transaction.on_commit(lambda: _request_rebalances(reasons))
    return outcome


def stations_gateway_sweep() -> TelemetryOutcome:
    """Online chargers whose gateway instance is gone (its heartbeat key expired) go offline.

    A killed gateway says nothing, and its chargers may stay silent for minutes (their
    heartbeat interval) before the stale sweep would notice; its registry key expires within
    ``GATEWAY_REGISTRY_TTL_S``. Nothing changes while Redis cannot tell (see
    ``gateway_instances_gone``). Each affected site is rebalanced ("gateway <id> gone"): its
    offline chargers keep their last limit booked. A charger that reconnects elsewhere comes
    back online with its new connection's ``connected`` event; a live instance that had lost
    its key announces its chargers again.
    """
    require_tenant_schema("stations_gateway_sweep")
    outcome = TelemetryOutcome()
    holders = station_gateway_ids_online()
    gone = gateway_instances_gone(instance_ids=holders) if holders else None
    if gone:
        # A live instance whose heartbeat failed while Redis was away writes its key again within
        # a second of Redis answering: only what is still missing a moment later is gone.
        time.sleep(GATEWAY_RECHECK_S)
        again = gateway_instances_gone(instance_ids=gone)
        gone = None if again is None else gone & again
    if not gone:
        return outcome
    with transaction.atomic():
        # Re-checked on the locked rows: a charger that reconnected through a live instance meanwhile stays.
        stations = list(
            ChargingStation.objects.select_for_update(skip_locked=True).filter(is_online=True, gateway_id__in=gone)
        )
        for station in stations:
            outcome.rebalance.setdefault(station.site_id, f"gateway {station.gateway_id} gone")
            station.is_online = False
            station.gateway_id = ""
        ChargingStation.objects.bulk_update(stations, ["is_online", "gateway_id"])
        outcome.applied = len(stations)
        if outcome.rebalance:
            reasons = dict(outcome.rebalance)
            transaction.on_commit(lambda: _request_rebalances(reasons))
    if stations:
        logger.warning(
            "gateway instance(s) %s gone: %d charger(s) taken offline", ", ".join(sorted(gone)), len(stations)
        )
    return outcome


# --- Command records (written by the sender, see chargepoint.commands) ----------------------------


def command_records_create(
    *, request_ids: list[uuid.UUID], commands: list[tuple[str, str, dict[str, Any]]], requested_at: datetime
) -> list[ChargerCommand]:
    """One Pending row per command (charge point id, action, payload), before anything is sent."""
    require_tenant_schema("command_records_create")
    stations = {
        s.charge_point_id.lower(): s
        for s in ChargingStation.objects.filter(charge_point_id__in=[cp for cp, _, _ in commands])
    }
    records = [
        ChargerCommand(
            request_id=request_id,
            station=stations.get(cp.lower()),
            charge_point_id=cp[:48],
            action=action[:40],
            payload=payload,
            requested_at=requested_at,
        )
        for request_id, (cp, action, payload) in zip(request_ids, commands, strict=True)
    ]
    return ChargerCommand.objects.bulk_create(records)


def command_records_finish(*, records: list[ChargerCommand]) -> None:
    """Store the answers (status, response, error, timings) set on ``records``."""
    require_tenant_schema("command_records_finish")
    ChargerCommand.objects.bulk_update(
        records, ["status", "charger_status", "response", "error", "gateway", "answered_at", "duration_ms"]
    )
