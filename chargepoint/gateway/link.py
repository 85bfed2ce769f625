"""What the OCPP handlers of one connection may do: the gateway's services for a charger.

Schema: the charger's tenant schema, named on each call. Telemetry becomes events for the
worker (no DB write here). A handler of a data-bearing message awaits ``stored()`` before it
answers: the charger's acknowledgement means the events are on the broker. If they are not
there within ``GATEWAY_ACK_TIMEOUT_S`` (the broker is unreachable) the answer is a CALLERROR
InternalError: OCPP 1.6 (transaction-related messages, TransactionMessageAttempts) and 2.0.1
(E13, MessageAttemptsTransactionEvent) have the charger send a transaction-related message
again after a CALLERROR or no answer, and the worker stores a reading sent twice once (unique
readings, idempotent upserts). A repeated 1.6 StartTransaction gets the transactionId its
first try got, so it opens no second session, also when the retry reaches another gateway
instance (the ids given are kept in Redis for ``STARTS_TTL_S``; without Redis, per instance).

The two tenant reads the gateway must answer at once, the idTag allow-list (Authorize,
StartTransaction) and a 1.6 transactionId, run in the gateway's DB threads inside
``schema_context(schema)`` for that one call, so no connection ever carries one charger's
schema into another charger's work. Answers are cached briefly.
"""

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import redis.asyncio as aioredis
from django.conf import settings
from django.db import close_old_connections
from django_tenants.utils import schema_context
from ocpp.exceptions import InternalError

from chargepoint.gateway import keys, normalise
from chargepoint.gateway.auth import ChargerIdentity
from chargepoint.gateway.telemetry import TelemetryBuffer
from chargepoint.models import ChargingStation
from chargepoint.selectors import idtag_status
from chargepoint.telemetry import transaction_id_next

logger = logging.getLogger("chargepoint.gateway")
T = TypeVar("T")
AUTH_CACHE_SECONDS = 30.0
MAX_ID_TAG_LENGTH = 36
STARTS_REMEMBERED = 20_000
STARTS_TTL_S = 24 * 3600


def utcnow() -> datetime:
    return datetime.now(UTC)


def ocpp_time(value: datetime | None = None) -> str:
    """``2026-05-01T09:00:00.000Z``: the form every charger parses."""
    value = value or utcnow()
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


class TenantReads:
    """The gateway's few tenant-schema reads, in DB threads, with a short cache."""

    def __init__(self, executor: Executor, redis: Callable[[], aioredis.Redis] | None = None) -> None:
        self._executor = executor
        self._redis = redis  # shared memory of the ids given, across gateway instances
        self._auth_cache: dict[tuple[str, str, str], tuple[str, float]] = {}
        # (schema, charger, connector, timestamp, meterStart) -> the transactionId it was given
        self._starts: OrderedDict[tuple[Any, ...], int] = OrderedDict()

    async def _run(self, schema_name: str, fn: Callable[[], T]) -> T:
        def in_schema() -> T:
            close_old_connections()
            with schema_context(schema_name):
                return fn()

        return await asyncio.get_running_loop().run_in_executor(self._executor, in_schema)

    async def authorization(self, identity: ChargerIdentity, id_tag: str) -> str:
        if not id_tag or len(id_tag) > MAX_ID_TAG_LENGTH:
            return "Invalid"
        key = (identity.schema_name, identity.site_slug, id_tag)
        hit = self._auth_cache.get(key)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        status = await self._run(
            identity.schema_name, lambda: idtag_status(site_slug=identity.site_slug, id_tag=id_tag, now=utcnow())
        )
        if len(self._auth_cache) > 50_000:
            self._auth_cache.clear()
        self._auth_cache[key] = (status, now + AUTH_CACHE_SECONDS)
        return status

    async def limits(self, identity: ChargerIdentity) -> normalise.Limits:
        """What the charger is registered with: its connectors and its rating (once per connection)."""

        def read() -> normalise.Limits:
            station = ChargingStation.objects.filter(charge_point_id__iexact=identity.charge_point_id).first()
            if station is None:
                return normalise.ANY_CHARGER
            return normalise.Limits.for_station(
                connectors=station.connectors.count(), rating_a=station.max_current_a, site_meter=station.is_site_meter
            )

        return await self._run(identity.schema_name, read)

    async def transaction_id(self, identity: ChargerIdentity, start: tuple[Any, ...]) -> int:
        """A new id from the tenant's sequence, or the one a repeat of the same start got."""
        key = (identity.schema_name, identity.charge_point_id, *start)
        known = self._starts.get(key)
        if known is not None:
            return known

        async def draw() -> int:
            return await self._run(identity.schema_name, transaction_id_next)

        if self._redis is None:
            known = await draw()
        else:
            shared = keys.start_key(identity.schema_name, identity.charge_point_id, start)
            known = await self._shared_id(self._redis(), shared, draw)
        self._starts[key] = known
        while len(self._starts) > STARTS_REMEMBERED:
            self._starts.popitem(last=False)
        return known

    async def _shared_id(self, client: aioredis.Redis, key: str, draw: Callable[[], Awaitable[int]]) -> int:
        """The id another instance recorded for this start, or a new one recorded (first writer wins)."""
        drawn: int | None = None
        try:
            value = await client.get(key)
            if value is None:
                drawn = await draw()
                if await client.set(key, drawn, nx=True, ex=STARTS_TTL_S):
                    return drawn
                value = await client.get(key)
        except (aioredis.ConnectionError, aioredis.TimeoutError):
            logger.warning("Redis unreachable: a StartTransaction retried through another gateway gets a new id")
            value = None
        if value is not None:
            return int(value)
        return drawn if drawn is not None else await draw()


class ChargerLink:
    """One connection's context: who the charger is and where its events go."""

    def __init__(
        self,
        *,
        identity: ChargerIdentity,
        ocpp_version: str,
        telemetry: TelemetryBuffer,
        reads: TenantReads,
        gateway_id: str,
    ) -> None:
        self.identity = identity
        self.ocpp_version = ocpp_version
        self.connected_at = utcnow()
        self._telemetry = telemetry
        self._reads = reads
        self.gateway_id = gateway_id
        self.heartbeat_interval_s: int = settings.GATEWAY_HEARTBEAT_INTERVAL_S
        self.ack_timeout_s: float = settings.GATEWAY_ACK_TIMEOUT_S
        self._last_batch: asyncio.Future[bool] | None = None
        self.data_transfer_vendors = set(settings.GATEWAY_DATA_TRANSFER_VENDORS)
        # 2.0.1: which EVSE a transaction runs on (Updated/Ended events may omit it).
        self.transaction_evse: dict[str, int] = {}
        self.limits = normalise.ANY_CHARGER  # the registered ones once read (``TenantReads.limits``)

    @property
    def charge_point_id(self) -> str:
        return self.identity.charge_point_id

    def _connector(self, value: Any, *, allow_zero: bool = True) -> int:
        return normalise.connector_id(value, allow_zero=allow_zero, limits=self.limits)

    # -- events for the worker -------------------------------------------------------------

    def emit(self, kind: str, **fields: Any) -> None:
        event = {"type": kind, "cp": self.identity.charge_point_id, "ts": utcnow().isoformat(), **fields}
        self._last_batch = self._telemetry.add(self.identity.schema_name, event)

    async def stored(self) -> None:
        """Return once every event this connection emitted is on the broker.

        Batches are published in order, so the last one standing for all is enough. Raises
        InternalError (the charger's cue to send again) after ``ack_timeout_s`` or if the
        batch was dropped; the events stay in line meanwhile and land once (see module doc).
        """
        batch = self._last_batch
        if batch is None or (batch.done() and batch.result()):
            return
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.ack_timeout_s):
                stored = await asyncio.shield(batch)
            self._telemetry.ack_waits.append(time.monotonic() - started)
        except TimeoutError:
            logger.warning("%s: telemetry not on the broker after %.0fs", self.charge_point_id, self.ack_timeout_s)
            raise InternalError(description="not stored yet, send it again") from None
        if not stored:
            raise InternalError(description="not stored, send it again")

    def connected(self) -> None:
        self.emit(
            "connected",
            connected_at=self.connected_at.isoformat(),
            ocpp_version=self.ocpp_version,
            gateway=self.gateway_id,
        )

    def disconnected(self, reason: str) -> None:
        self.emit("disconnected", connected_at=self.connected_at.isoformat(), reason=reason[:100])

    def boot(self, *, vendor: str, model: str, serial_number: str = "", firmware_version: str = "") -> None:
        self.emit(
            "boot",
            vendor=vendor[:50],
            model=model[:50],
            serial_number=(serial_number or "")[:50],
            firmware_version=(firmware_version or "")[:50],
            ocpp_version=self.ocpp_version,
        )

    def heartbeat(self) -> None:
        self.emit("seen")

    def status(
        self,
        *,
        connector_id: int,
        status: str,
        error_code: str = "",
        at: str | None = None,
        vendor_error_code: str = "",
    ) -> None:
        now = utcnow()
        when = normalise.timestamp(at, now=now) if at else now
        number = self._connector(connector_id)
        codes = {"error_code": (error_code or "")[:50], "vendor_error_code": (vendor_error_code or "")[:50]}
        if number == 0:  # the station as a whole (its connectors' own notifications follow): a fault is an alert
            self.emit("station_status", status=status, at=when.isoformat(), **codes)
            return
        self.emit("status", connector=number, status=status, at=when.isoformat(), **codes)

    def meter_values(
        self, *, connector_id: int, samples: list[dict[str, str]], transaction_id: str | None = None
    ) -> None:
        number = self._connector(connector_id)
        if samples:
            self.emit("meter", connector=number or None, transaction_id=transaction_id, samples=samples)

    def transaction_started(
        self, *, connector_id: int, transaction_id: str, id_tag: str, meter_start_wh: Decimal, at: datetime
    ) -> None:
        self.emit(
            "start",
            connector=self._connector(connector_id, allow_zero=False),
            transaction_id=transaction_id,
            id_tag=id_tag[:MAX_ID_TAG_LENGTH],
            meter_start_wh=str(meter_start_wh),
            at=at.isoformat(),
        )

    def transaction_stopped(
        self, *, transaction_id: str, meter_stop_wh: Decimal | None, at: datetime, reason: str = ""
    ) -> None:
        self.emit(
            "stop",
            transaction_id=transaction_id,
            meter_stop_wh=None if meter_stop_wh is None else str(meter_stop_wh),
            at=at.isoformat(),
            reason=(reason or "")[:40],
        )

    def charging_needs(
        self,
        *,
        evse_id: int,
        departure_at: datetime | None,
        energy_needed_kwh: Decimal | None,
        ev_max_current_a: Decimal | None,
    ) -> None:
        self.emit(
            "needs",
            connector=self._connector(evse_id, allow_zero=False),
            departure_at=departure_at.isoformat() if departure_at else None,
            energy_needed_kwh=None if energy_needed_kwh is None else str(energy_needed_kwh),
            ev_max_current_a=None if ev_max_current_a is None else str(ev_max_current_a),
        )

    # -- answers that need the tenant ------------------------------------------------------

    async def authorize(self, id_tag: str) -> str:
        return await self._reads.authorization(self.identity, id_tag)

    async def next_transaction_id(self, *start: Any) -> int:
        return await self._reads.transaction_id(self.identity, start)

    def data_transfer_status(self, vendor_id: str) -> str:
        return "Accepted" if vendor_id in self.data_transfer_vendors else "UnknownVendorId"

    # -- protocol-level services the handlers call -----------------------------------------

    async def start_transaction(
        self, *, connector_id: int, id_tag: str, meter_start: int, timestamp: str
    ) -> tuple[int, str]:
        """OCPP 1.6 StartTransaction: a transactionId at once (tenant sequence) and the tag's status."""
        now = utcnow()
        at = normalise.timestamp(timestamp, now=now, earliest=normalise.readings_floor(now))
        number = self._connector(connector_id, allow_zero=False)
        meter_start_wh = normalise.number(meter_start, field="meterStart", low=Decimal(0), high=normalise.MAX_ENERGY_WH)
        status, transaction_id = await asyncio.gather(
            self.authorize(id_tag), self.next_transaction_id(number, at, meter_start_wh, id_tag)
        )
        if status == "Accepted":
            self.transaction_started(
                connector_id=number,
                transaction_id=str(transaction_id),
                id_tag=id_tag,
                meter_start_wh=meter_start_wh,
                at=at,
            )
        return transaction_id, status

    def stop_transaction(
        self,
        *,
        transaction_id: int,
        meter_stop: int,
        timestamp: str,
        reason: str | None = None,
        transaction_data: list[dict[str, Any]] | None = None,
    ) -> None:
        """OCPP 1.6 StopTransaction, with the meter values it may carry."""
        now = utcnow()
        at = normalise.timestamp(timestamp, now=now, earliest=normalise.readings_floor(now))
        meter_stop_wh = normalise.number(meter_stop, field="meterStop", low=Decimal(0), high=normalise.MAX_ENERGY_WH)
        samples = normalise.meter_values_16(transaction_data or [], now=now, limits=self.limits)
        self.meter_values(connector_id=0, samples=samples, transaction_id=str(transaction_id))
        self.transaction_stopped(
            transaction_id=str(transaction_id), meter_stop_wh=meter_stop_wh, at=at, reason=reason or ""
        )

    def meter_values_16(
        self, *, connector_id: int, meter_value: list[dict[str, Any]], transaction_id: int | None = None
    ) -> None:
        samples = normalise.meter_values_16(meter_value, now=utcnow(), limits=self.limits)
        self.meter_values(
            connector_id=connector_id,
            samples=samples,
            transaction_id=None if transaction_id is None else str(transaction_id),
        )

    def boot_201(self, *, charging_station: dict[str, Any]) -> None:
        self.boot(
            vendor=str(charging_station.get("vendor_name", "")),
            model=str(charging_station.get("model", "")),
            serial_number=str(charging_station.get("serial_number") or ""),
            firmware_version=str(charging_station.get("firmware_version") or ""),
        )

    async def authorize_token(self, id_token: dict[str, Any] | None) -> str | None:
        """OCPP 2.0.1 idToken: ``NoAuthorization`` (free vend by design) is accepted as such."""
        if not id_token:
            return None
        if id_token.get("type") == "NoAuthorization":
            return "Accepted"
        return await self.authorize(str(id_token.get("id_token", "")))

    async def transaction_event(
        self,
        *,
        event_type: str,
        timestamp: str,
        transaction_info: dict[str, Any],
        meter_value: list[dict[str, Any]] | None = None,
        evse: dict[str, Any] | None = None,
        id_token: dict[str, Any] | None = None,
    ) -> str | None:
        """OCPP 2.0.1 TransactionEvent: start, meter values, charging state, end; the token's status."""
        now = utcnow()
        at = normalise.timestamp(timestamp, now=now, earliest=normalise.readings_floor(now))
        transaction_id = str(transaction_info["transaction_id"])[:36]
        if evse:
            self.transaction_evse[transaction_id] = self._connector(evse.get("id"), allow_zero=False)
        evse_id = self.transaction_evse.get(transaction_id)
        samples = normalise.meter_values_201(meter_value or [], now=now, limits=self.limits)
        energy_wh = normalise.energy_register_wh(samples)
        status = await self.authorize_token(id_token)
        if event_type == "Started":
            if evse_id is None:
                raise normalise.refuse("a Started TransactionEvent must name its evse")
            self.transaction_started(
                connector_id=evse_id,
                transaction_id=transaction_id,
                id_tag=str((id_token or {}).get("id_token", "")),
                meter_start_wh=Decimal(energy_wh or 0),
                at=at,
            )
        self.meter_values(connector_id=evse_id or 0, samples=samples, transaction_id=transaction_id)
        connector_status = CHARGING_STATE_STATUS.get(str(transaction_info.get("charging_state")))
        if connector_status and evse_id:
            self.status(connector_id=evse_id, status=connector_status, at=timestamp)
        if event_type == "Ended":
            self.transaction_stopped(
                transaction_id=transaction_id,
                meter_stop_wh=None if energy_wh is None else Decimal(energy_wh),
                at=at,
                reason=str(transaction_info.get("stopped_reason") or ""),
            )
            self.transaction_evse.pop(transaction_id, None)
        return status

    def meter_values_201(self, *, evse_id: int, meter_value: list[dict[str, Any]]) -> None:
        self.meter_values(
            connector_id=evse_id, samples=normalise.meter_values_201(meter_value, now=utcnow(), limits=self.limits)
        )

    def charging_limit_201(self, *, evse_id: int | None, source: str, schedules: list[dict[str, Any]] | None) -> None:
        """NotifyChargingLimit / ClearedChargingLimit: a limit set outside the platform.

        The first period of the first schedule is kept, in amperes (a schedule in watts is
        converted at 230 V on its number of phases, 3 if not given); no schedule, or a cleared
        limit, removes it.
        """
        limit_a: Decimal | None = None
        for schedule in schedules or []:
            periods = schedule.get("charging_schedule_period") or []
            if not periods:
                continue
            limit = normalise.number(periods[0].get("limit"), field="limit", low=Decimal(0), high=Decimal("1e6"))
            if schedule.get("charging_rate_unit") == "W":
                phases = normalise.number(
                    periods[0].get("number_phases") or 3, field="numberPhases", low=Decimal(1), high=Decimal(3)
                )
                limit = limit / (Decimal(230) * phases)
            limit_a = min(limit, Decimal("999.9")).quantize(Decimal("0.1"))
            break
        self.emit(
            "limit",
            connector=0 if evse_id is None else self._connector(evse_id),
            limit_a=None if limit_a is None else str(limit_a),
            source=str(source)[:20],
        )

    def charging_needs_201(self, *, evse_id: int, charging_needs: dict[str, Any]) -> None:
        """NotifyEVChargingNeeds: departure time and energy the car asks for go to the balancer."""
        now = utcnow()
        params = charging_needs.get("ac_charging_parameters") or charging_needs.get("dc_charging_parameters") or {}
        departure = charging_needs.get("departure_time")
        departure_at = (
            normalise.timestamp(departure, now=now, field="departureTime", ahead=normalise.MAX_DEPARTURE_AHEAD)
            if departure
            else None
        )
        energy = params.get("energy_amount")
        current = params.get("ev_max_current")
        self.charging_needs(
            evse_id=evse_id,
            departure_at=departure_at,
            energy_needed_kwh=None
            if energy is None
            else normalise.number(energy, field="energyAmount", low=Decimal(0), high=Decimal("1e7")) / 1000,
            ev_max_current_a=None
            if current is None or "ac_charging_parameters" not in charging_needs
            else normalise.number(current, field="evMaxCurrent", low=Decimal(0), high=normalise.MAX_CURRENT_A),
        )


# OCPP 2.0.1 chargingState as the connector status the balancer reads (1.6 names).
CHARGING_STATE_STATUS = {
    "Charging": "Charging",
    "EVConnected": "Preparing",
    "SuspendedEV": "SuspendedEV",
    "SuspendedEVSE": "SuspendedEVSE",
}
