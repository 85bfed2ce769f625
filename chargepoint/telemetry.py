"""Telemetry from the gateway: what a worker does with a batch of a charger's events. Schema: tenant.

``telemetry_apply`` applies one batch (boot, status, transactions, meter values, charging
needs, external limits, online/offline) in the charger's tenant schema, in one transaction,
idempotently. What balancing must hear of (a site to rebalance, a connector the fail-safe must
count, a Faulted alert, a site meter's samples, a reconnect to resync) goes out as an event of
``chargepoint.listeners``; the charger app never calls balancing's services.

``transaction_id_next`` numbers the OCPP 1.6 transactions the gateway starts.
"""

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from balancing.models import ConnectorLimit, Site
from balancing.problem import overdraw_tolerance_a
from chargepoint import listeners
from chargepoint.models import ChargingSession, ChargingStation, Connector
from chargepoint.partitions import retention_cutoff
from chargepoint.readings import CURRENT, ReadingRows, readings_store
from chargepoint.services import MAX_CONNECTORS
from evplatform.services import require_tenant_schema

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
        listeners.station_reconnected.send(station_id=station.pk)
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

    The alert is balancing's (its listeners of ``station_fault_raised`` and ``station_fault_cleared``): a
    repeated Faulted refreshes the open alert (its error code may change); it never opens a second one.
    """
    where = f"connector {connector.connector_id}" if connector is not None else "station"
    if status == Connector.Status.FAULTED:
        code = str(event.get("error_code") or "")[:50]
        vendor_code = str(event.get("vendor_error_code") or "")[:50]
        detail = f"{station.charge_point_id} {where} reports Faulted: " + (
            code or "no error code given (OCPP 2.0.1 StatusNotification has none)"
        )
        if vendor_code:
            detail += f" (vendor code {vendor_code})"
        listeners.station_fault_raised.send(station=station, connector=connector, detail=detail, now=timezone.now())
    elif was is None or was == Connector.Status.FAULTED:
        listeners.station_fault_cleared.send(
            station=station, connector=connector, why=f"{where} now {status}", now=timezone.now()
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
        listeners.meter_samples_arrived.send(site=station.site, samples=event["samples"], now=timezone.now())
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
            listeners.site_chargers_changed.send(
                site=Site.objects.get(pk=site_id), actor="system:telemetry", strict=False
            )
        if batch.outcome.rebalance:
            reasons = dict(batch.outcome.rebalance)
            transaction.on_commit(lambda: rebalances_request(reasons))
    return batch.outcome


def rebalances_request(reasons: dict[int, str]) -> None:
    """Tell the listeners which sites' inputs changed and why (``TelemetryOutcome.rebalance``)."""
    for site_id, reason in reasons.items():
        listeners.site_inputs_changed.send(site_id=site_id, reason=reason)
