"""Simulated chargers (OCPP 1.6J and 2.0.1) built on the ``ocpp`` library as a client.

Each runs one connector with one car: boots, reports Available, plugs the car in, starts a
transaction, and every ``meter_interval_s`` reports what it draws (per-phase current, power,
energy register, offered current). It obeys the charging profiles it is sent (see
``model.ProfileStore``), and reconnects (with its transaction) when the connection drops.
A ``ChargerSpec.fault`` (``model.Fault``) makes it misbehave: ignore or reject profiles, drop
its connection now and then, or have a car that falls asleep. TriggerMessage (MeterValues,
StatusNotification) and GetCompositeSchedule are answered with what it really applies.
"""

import asyncio
import base64
import contextlib
import itertools
import logging
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.charge_point import snake_to_camel_case
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as ChargePoint16Client
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import ChargePoint as ChargePoint201Client
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chargepoint.simulator.model import (
    DROP_RECONNECT,
    NO_FAULT,
    SLEEPING_CAR,
    Car,
    Fault,
    ProfileStore,
    profile_answer,
    profile_from_ocpp,
)

logger = logging.getLogger("chargepoint.simulator")
PHASES = ("L1", "L2", "L3")
_remote_ids = itertools.count(1)
PHYSICS_STEP_S = 0.5


def utcnow() -> datetime:
    return datetime.now(UTC)


def ocpp_time(value: datetime | None = None) -> str:
    value = value or utcnow()
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@dataclass
class ChargerSpec:
    charge_point_id: str
    password: str
    car_kw: float
    ocpp_version: str = "1.6"
    rating_a: float = 16.0
    phases: int = 3
    voltage_v: float = 230.0
    plug_in_after_s: float | None = 1.0  # None: only when told (``state.plugged = True``)
    soc: float = 0.3
    battery_kwh: float = 60.0
    id_tag: str = "SIM-TAG"
    departure_in_s: float | None = None
    energy_needed_kwh: float | None = None
    fault: Fault = NO_FAULT
    vendor: str = "EVPlatform"
    model: str = "SimCharger"


@dataclass
class ChargerState:
    """What a simulated charger knows; kept across reconnects."""

    spec: ChargerSpec
    car: Car
    profiles: ProfileStore = field(default_factory=ProfileStore)
    energy_wh: float = 0.0
    power_kw: float = 0.0
    offered_a: float = 0.0
    transaction_id: str | None = None
    tx_started: datetime | None = None
    plugged: bool = False
    profiles_received: int = 0
    first_profile_at: float | None = None
    connects: int = 0
    refused: str = ""
    # Handshakes the gateway put off (503 overloaded, 429 throttled) and the charger retried.
    deferred: int = 0
    fault: Fault = NO_FAULT
    suspended_ev_sent: bool = False

    def __post_init__(self) -> None:
        self.set_fault(self.spec.fault)

    def set_fault(self, fault: Fault) -> None:
        """Misbehave from now on (the benchmark switches a charger's fault on mid-session)."""
        self.fault = fault
        self.car.sleeps = fault.mode == SLEEPING_CAR
        self.car.sleep_after_s = fault.sleep_after_s

    def offered_now(self) -> float:
        return self.profiles.limit_a(
            connector_id=1,
            now=utcnow(),
            transaction_id=self.transaction_id,
            rating_a=self.spec.rating_a,
            fault=self.fault,
        )

    def step(self, seconds: float) -> None:
        """Advance the car by ``seconds`` at what the profiles allow now."""
        self.offered_a = self.offered_now()
        if self.transaction_id is None:
            self.power_kw = 0.0
            return
        self._draw()
        self.energy_wh += self.car.charge(power_kw=self.power_kw, seconds=seconds) * 1000

    def _draw(self) -> None:
        """In a session: what the car draws at ``offered_a`` (a sleeping car may fall asleep first)."""
        session_s = (utcnow() - self.tx_started).total_seconds() if self.tx_started else 0.0
        self.car.observe(offered_a=self.offered_a, session_s=session_s)
        self.power_kw = self.car.draw_kw(
            offered_a=self.offered_a, voltage_v=self.spec.voltage_v, phases=self.spec.phases
        )

    @property
    def connector_status_16(self) -> str:
        if self.transaction_id is None:
            return "Available"
        if self.car.asleep:
            return "SuspendedEV"
        return "Charging" if self.offered_a > 0 else "SuspendedEVSE"

    def install(self, connector_id: int, raw: dict[str, Any]) -> str:
        profile = profile_from_ocpp(
            connector_id=connector_id,
            raw=raw,
            now=utcnow(),
            voltage_v=self.spec.voltage_v,
            phases=self.spec.phases,
            tx_started=self.tx_started,
        )
        status = profile_answer(fault=self.fault, store=self.profiles, profile=profile)
        if status == "Accepted":
            self.profiles_received += 1
            if self.first_profile_at is None:
                self.first_profile_at = asyncio.get_running_loop().time()
            self.offered_a = self.offered_now()
            if self.transaction_id is not None:
                self._draw()
        return status

    def phase_current_a(self) -> float:
        return self.power_kw * 1000 / (self.spec.voltage_v * self.spec.phases)


TRIGGERABLE = frozenset({"MeterValues", "StatusNotification", "Heartbeat", "BootNotification", "TransactionEvent"})


class Sim16(ChargePoint16Client):
    """The 1.6 side: what the platform may ask of the charger."""

    def __init__(self, state: ChargerState, connection: Any, owner: "SimulatedCharger") -> None:
        super().__init__(state.spec.charge_point_id, connection, response_timeout=30)
        self.state = state
        self.owner = owner

    @on(Action16.set_charging_profile)
    def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any]) -> Any:
        raw = snake_to_camel_case(cs_charging_profiles)
        return result16.SetChargingProfile(status=self.state.install(connector_id, raw))

    @on(Action16.clear_charging_profile)
    def on_clear_charging_profile(self, **kw: Any) -> Any:
        status = self.state.profiles.clear(
            profile_id=kw.get("id"),
            connector_id=kw.get("connector_id"),
            purpose=kw.get("charging_profile_purpose"),
            stack_level=kw.get("stack_level"),
        )
        return result16.ClearChargingProfile(status=status)

    @on(Action16.get_composite_schedule)
    def on_get_composite_schedule(self, connector_id: int, duration: int, **kw: Any) -> Any:
        limit = round(self.state.offered_now(), 1)
        return result16.GetCompositeSchedule(
            status="Accepted",
            connector_id=connector_id,
            schedule_start=ocpp_time(),
            charging_schedule={
                "duration": duration,
                "charging_rate_unit": "A",
                "charging_schedule_period": [{"start_period": 0, "limit": limit}],
            },
        )

    @on(Action16.remote_start_transaction)
    def on_remote_start_transaction(self, id_tag: str, **kw: Any) -> Any:
        self.state.plugged = True
        return result16.RemoteStartTransaction(status="Accepted")

    @on(Action16.remote_stop_transaction)
    def on_remote_stop_transaction(self, transaction_id: int) -> Any:
        ok = str(transaction_id) == self.state.transaction_id
        if ok:
            self.state.plugged = False
        return result16.RemoteStopTransaction(status="Accepted" if ok else "Rejected")

    @on(Action16.change_availability)
    def on_change_availability(self, connector_id: int, **kw: Any) -> Any:
        return result16.ChangeAvailability(status="Accepted")

    @on(Action16.change_configuration)
    def on_change_configuration(self, key: str, value: str) -> Any:
        return result16.ChangeConfiguration(status="Accepted")

    @on(Action16.get_configuration)
    def on_get_configuration(self, **kw: Any) -> Any:
        return result16.GetConfiguration(
            configuration_key=[{"key": "ChargeProfileMaxStackLevel", "readonly": True, "value": "8"}]
        )

    @on(Action16.reset)
    def on_reset(self, **kw: Any) -> Any:
        return result16.Reset(status="Accepted")

    @on(Action16.trigger_message)
    def on_trigger_message(self, requested_message: str, **kw: Any) -> Any:
        ok = requested_message in TRIGGERABLE and requested_message != "TransactionEvent"
        return result16.TriggerMessage(status="Accepted" if ok else "NotImplemented")

    @after(Action16.trigger_message)
    def after_trigger_message(self, requested_message: str, **kw: Any) -> None:
        self.owner.trigger(requested_message)


class Sim201(ChargePoint201Client):
    """The 2.0.1 side: what the platform may ask of the charging station."""

    def __init__(self, state: ChargerState, connection: Any, owner: "SimulatedCharger") -> None:
        super().__init__(state.spec.charge_point_id, connection, response_timeout=30)
        self.state = state
        self.owner = owner

    @on(Action201.trigger_message)
    def on_trigger_message(self, requested_message: str, **kw: Any) -> Any:
        return result201.TriggerMessage(status="Accepted" if requested_message in TRIGGERABLE else "NotImplemented")

    @after(Action201.trigger_message)
    def after_trigger_message(self, requested_message: str, **kw: Any) -> None:
        self.owner.trigger(requested_message)

    @on(Action201.set_charging_profile)
    def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any], **kw: Any) -> Any:
        raw = snake_to_camel_case(charging_profile)
        return result201.SetChargingProfile(status=self.state.install(evse_id, raw))

    @on(Action201.clear_charging_profile)
    def on_clear_charging_profile(self, **kw: Any) -> Any:
        criteria = kw.get("charging_profile_criteria") or {}
        status = self.state.profiles.clear(
            profile_id=kw.get("charging_profile_id"),
            connector_id=criteria.get("evse_id"),
            purpose=criteria.get("charging_profile_purpose"),
            stack_level=criteria.get("stack_level"),
        )
        return result201.ClearChargingProfile(status=status)

    @on(Action201.get_composite_schedule)
    def on_get_composite_schedule(self, duration: int, evse_id: int, **kw: Any) -> Any:
        return result201.GetCompositeSchedule(
            status="Accepted",
            schedule={
                "evse_id": evse_id,
                "duration": duration,
                "schedule_start": ocpp_time(),
                "charging_rate_unit": "A",
                "charging_schedule_period": [{"start_period": 0, "limit": round(self.state.offered_now(), 1)}],
            },
        )

    @on(Action201.request_start_transaction)
    def on_request_start_transaction(self, id_token: dict[str, Any], remote_start_id: int, **kw: Any) -> Any:
        self.state.plugged = True
        return result201.RequestStartTransaction(status="Accepted")

    @on(Action201.request_stop_transaction)
    def on_request_stop_transaction(self, transaction_id: str, **kw: Any) -> Any:
        ok = transaction_id == self.state.transaction_id
        if ok:
            self.state.plugged = False
        return result201.RequestStopTransaction(status="Accepted" if ok else "Rejected")


def basic_auth(charge_point_id: str, password: str) -> str:
    token = base64.b64encode(f"{charge_point_id}:{password}".encode()).decode()
    return f"Basic {token}"


class SimulatedCharger:
    """One charger with one car; ``run`` until ``stop`` is set."""

    def __init__(self, spec: ChargerSpec, url: str, *, meter_interval_s: float = 10.0) -> None:
        self.spec = spec
        self.url = url.rstrip("/")
        self.meter_interval_s = meter_interval_s
        self.state = ChargerState(spec, Car(spec.car_kw, battery_kwh=spec.battery_kwh, soc=spec.soc))
        self.cp: Sim16 | Sim201 | None = None
        self.connected = asyncio.Event()
        self._seq = itertools.count()
        self._websocket: Any = None
        self._dropped = False  # the last disconnect was a network drop, not a reboot
        self._side_tasks: set[asyncio.Task[None]] = set()

    async def drop_connection(self) -> None:
        """Close the socket without a goodbye (tests: a charger that drops and reconnects)."""
        if self._websocket is not None:
            self._dropped = True
            self._websocket.transport.abort()

    def trigger(self, requested_message: str) -> None:
        """Send what a TriggerMessage asked for, after its answer (OCPP's order)."""
        task = asyncio.ensure_future(self._send_triggered(requested_message))
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _send_triggered(self, requested_message: str) -> None:
        try:
            in_session = self.state.transaction_id is not None
            if requested_message == "MeterValues" or (requested_message == "TransactionEvent" and in_session):
                await self._send_meter_values(context="Trigger")
            elif requested_message == "StatusNotification":
                await self._send_status()
            elif requested_message == "Heartbeat":
                await self._call(call16.Heartbeat() if self.spec.ocpp_version == "1.6" else call201.Heartbeat())
            elif requested_message == "BootNotification":
                await self._boot()
        except (ConnectionClosed, OSError, TimeoutError, asyncio.CancelledError) as exc:
            logger.info("%s: triggered %s not sent (%r)", self.spec.charge_point_id, requested_message, exc)

    async def _drop_now_and_then(self) -> None:
        """Fault drop_reconnect: drop the connection every ``drop_every_s`` while the fault is on."""
        loop = asyncio.get_running_loop()
        connected_at = loop.time()
        while True:
            await asyncio.sleep(0.2)
            fault = self.state.fault
            if fault.mode == DROP_RECONNECT and loop.time() - connected_at >= fault.drop_every_s:
                logger.info("%s: dropping the connection (fault drop_reconnect)", self.spec.charge_point_id)
                await self.drop_connection()
                return

    async def run(self, stop: asyncio.Event) -> None:
        physics = asyncio.ensure_future(self._physics(stop))
        try:
            await self._connect_loop(stop)
        finally:
            physics.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await physics

    async def _physics(self, stop: asyncio.Event) -> None:
        """The car draws what the charger applies, connected or not (profiles expire offline too)."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while not stop.is_set():
            await asyncio.sleep(PHYSICS_STEP_S)
            now = loop.time()
            self.state.step(now - last)
            last = now

    async def _connect_loop(self, stop: asyncio.Event) -> None:
        delay = 0.5
        plug_task: asyncio.Task[None] | None = None
        while not stop.is_set():
            subprotocol = "ocpp1.6" if self.spec.ocpp_version == "1.6" else "ocpp2.0.1"
            try:
                async with websockets.connect(
                    f"{self.url}/{self.spec.charge_point_id}",
                    subprotocols=[websockets.Subprotocol(subprotocol)],
                    additional_headers={"Authorization": basic_auth(self.spec.charge_point_id, self.spec.password)},
                    open_timeout=20,
                    ping_interval=None,
                    compression=None,
                ) as ws:
                    self._websocket = ws
                    self.state.connects += 1
                    delay = 0.5
                    self.cp = (
                        Sim16(self.state, ws, self) if self.spec.ocpp_version == "1.6" else Sim201(self.state, ws, self)
                    )
                    serve = asyncio.ensure_future(self.cp.start())
                    dropper = asyncio.ensure_future(self._drop_now_and_then())
                    try:
                        await self._on_connect(reboot=not self._dropped)
                        self._dropped = False
                        self.connected.set()
                        if plug_task is None and self.spec.plug_in_after_s is not None:
                            plug_task = asyncio.ensure_future(self._plug_in_later(self.spec.plug_in_after_s))
                        await self._meter_loop(stop, serve)
                    finally:
                        self.connected.clear()
                        dropper.cancel()
                        serve.cancel()
                        with contextlib.suppress(BaseException):
                            await serve
            except InvalidStatus as refused:
                if refused.response.status_code in RETRY_LATER_STATUSES:
                    # As a real charger does: the gateway is busy or throttling, not saying no.
                    self.state.deferred += 1
                    wait_s = _retry_after_s(refused.response.headers.get("Retry-After"), default=delay)
                    logger.info("%s put off: HTTP %s, retrying in %.1f s", self.spec.charge_point_id,
                                refused.response.status_code, wait_s)  # fmt: skip
                    await _sleep_unless(stop, wait_s * random.uniform(1.0, 1.5))  # noqa: S311 (jitter)
                    delay = min(delay * 2, 10)
                    continue
                self.state.refused = f"HTTP {refused.response.status_code}"
                logger.warning("%s refused: %s", self.spec.charge_point_id, self.state.refused)
                return
            except (OSError, ConnectionClosed, TimeoutError) as exc:
                logger.info("%s: connection lost (%s); reconnecting", self.spec.charge_point_id, exc)
            if not stop.is_set():
                if self._dropped and self.state.fault.mode == DROP_RECONNECT:
                    await _sleep_unless(stop, self.state.fault.reconnect_after_s)
                else:
                    await _sleep_unless(stop, delay)
                    delay = min(delay * 2, 10)
        if plug_task is not None:
            plug_task.cancel()
        for task in list(self._side_tasks):
            task.cancel()

    async def _plug_in_later(self, after_s: float) -> None:
        await asyncio.sleep(after_s)
        self.state.plugged = True

    async def _meter_loop(self, stop: asyncio.Event, serve: asyncio.Future[Any]) -> None:
        loop = asyncio.get_running_loop()
        next_meter = loop.time() + self.meter_interval_s
        while not stop.is_set() and not serve.done():
            await asyncio.sleep(min(1.0, self.meter_interval_s))
            now = loop.time()
            if self.state.plugged and self.state.transaction_id is None:
                await self._start_transaction()
                self.state.step(0.0)  # the car draws what the charger offers from the start, not a tick later
            elif not self.state.plugged and self.state.transaction_id is not None:
                await self._stop_transaction()
            if self.state.car.asleep and self.state.transaction_id is not None and not self.state.suspended_ev_sent:
                self.state.suspended_ev_sent = True
                await self._send_status()
            if now >= next_meter and self.state.transaction_id is not None:
                next_meter = now + self.meter_interval_s
                await self._send_meter_values()
        if serve.done() and not stop.is_set():
            serve.result()  # raises the ConnectionClosed that ended it

    # -- protocol-specific messages -----------------------------------------------------------

    def _samples16(self, context: str = "Sample.Periodic") -> list[dict[str, Any]]:
        st = self.state
        values = [
            {"value": f"{st.energy_wh:.1f}", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
            {"value": f"{st.power_kw:.3f}", "measurand": "Power.Active.Import", "unit": "kW"},
            {"value": f"{st.offered_a:.1f}", "measurand": "Current.Offered", "unit": "A"},
            {"value": f"{st.car.soc * 100:.1f}", "measurand": "SoC", "unit": "Percent", "location": "EV"},
        ]
        for phase in PHASES[: self.spec.phases]:
            values.append(
                {"value": f"{st.phase_current_a():.2f}", "measurand": "Current.Import", "phase": phase, "unit": "A"}
            )
        for v in values:
            v["context"] = context
        return [{"timestamp": ocpp_time(), "sampledValue": values}]

    def _samples201(self, context: str = "Sample.Periodic") -> list[dict[str, Any]]:
        st = self.state
        values: list[dict[str, Any]] = [
            {
                "value": round(st.energy_wh / 1000, 4),
                "measurand": "Energy.Active.Import.Register",
                "unitOfMeasure": {"unit": "kWh"},
            },
            {"value": round(st.power_kw * 1000, 1), "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W"}},
            {"value": round(st.offered_a, 1), "measurand": "Current.Offered", "unitOfMeasure": {"unit": "A"}},
        ]
        full = context in ("Sample.Periodic", "Trigger")
        if not full:
            # Begin/End readings carry the register only, as most chargers send them: a car that
            # has not started drawing yet is not a car that takes nothing.
            values = values[:1]
        for phase in PHASES[: self.spec.phases] if full else ():
            values.append(
                {
                    "value": round(st.phase_current_a(), 2),
                    "measurand": "Current.Import",
                    "phase": phase,
                    "unitOfMeasure": {"unit": "A"},
                }
            )
        for v in values:
            v["context"] = context
        return [{"timestamp": ocpp_time(), "sampledValue": values}]

    async def _charging_state(self, transaction_id: str, state: str) -> None:
        """2.0.1: TransactionEvent Updated telling the platform the car's charging state changed."""
        await self._call(
            call201.TransactionEvent(
                event_type="Updated",
                timestamp=ocpp_time(),
                trigger_reason="ChargingStateChanged",
                seq_no=next(self._seq),
                transaction_info={"transaction_id": transaction_id, "charging_state": state},
            )
        )

    async def _call(self, request: Any) -> Any:
        assert self.cp is not None  # noqa: S101
        return await self.cp.call(request)

    async def _on_connect(self, *, reboot: bool = True) -> None:
        """Boot (after a power-up; not after a mere network drop) and say how the connector is."""
        if reboot:
            await self._boot()
        await self._send_status()

    async def _boot(self) -> None:
        if self.spec.ocpp_version == "1.6":
            await self._call(
                call16.BootNotification(
                    charge_point_model=self.spec.model,
                    charge_point_vendor=self.spec.vendor,
                    firmware_version="sim-1.0",
                )
            )
        else:
            await self._call(
                call201.BootNotification(
                    charging_station={
                        "model": self.spec.model,
                        "vendor_name": self.spec.vendor,
                        "firmware_version": "sim-1.0",
                    },
                    reason="PowerUp",
                )
            )

    async def _send_status(self) -> None:
        """The connector's status as it really is (1.6 StatusNotification; 2.0.1 also the charging state)."""
        st = self.state
        if self.spec.ocpp_version == "1.6":
            await self._call(
                call16.StatusNotification(connector_id=1, error_code="NoError", status=st.connector_status_16)
            )
            return
        status = "Occupied" if st.transaction_id else "Available"
        await self._call(
            call201.StatusNotification(timestamp=ocpp_time(), connector_status=status, evse_id=1, connector_id=1)
        )
        if st.transaction_id is not None and st.car.asleep:
            await self._charging_state(st.transaction_id, "SuspendedEV")

    async def _start_transaction(self) -> None:
        st = self.state
        if self.spec.ocpp_version == "1.6":
            await self._call(call16.StatusNotification(connector_id=1, error_code="NoError", status="Preparing"))
            result = await self._call(
                call16.StartTransaction(
                    connector_id=1, id_tag=self.spec.id_tag, meter_start=int(st.energy_wh), timestamp=ocpp_time()
                )
            )
            if result is None:  # no answer or a CALLERROR (platform unreachable): try again soon
                return
            if result.id_tag_info["status"] != "Accepted":
                st.plugged = False
                return
            st.transaction_id = str(result.transaction_id)
            st.tx_started = utcnow()
            await self._call(call16.StatusNotification(connector_id=1, error_code="NoError", status="Charging"))
        else:
            await self._call(
                call201.StatusNotification(
                    timestamp=ocpp_time(), connector_status="Occupied", evse_id=1, connector_id=1
                )
            )
            st.transaction_id = f"{self.spec.charge_point_id}-{next(_remote_ids)}-{int(utcnow().timestamp())}"
            st.tx_started = utcnow()
            result = await self._call(
                call201.TransactionEvent(
                    event_type="Started",
                    timestamp=ocpp_time(),
                    trigger_reason="CablePluggedIn",
                    seq_no=next(self._seq),
                    transaction_info={"transaction_id": st.transaction_id, "charging_state": "EVConnected"},
                    evse={"id": 1, "connector_id": 1},
                    id_token={"id_token": self.spec.id_tag, "type": "ISO14443"},
                    meter_value=self._samples201("Transaction.Begin"),
                )
            )
            if result is None:  # no answer or a CALLERROR (platform unreachable): try again soon
                st.transaction_id = None
                return
            if (result.id_token_info or {}).get("status") != "Accepted":
                st.transaction_id = None
                st.plugged = False
                return
            if self.spec.energy_needed_kwh is not None or self.spec.departure_in_s is not None:
                needs: dict[str, Any] = {"requested_energy_transfer": "AC_three_phase"}
                if self.spec.departure_in_s is not None:
                    departure = datetime.fromtimestamp(utcnow().timestamp() + self.spec.departure_in_s, UTC)
                    needs["departure_time"] = ocpp_time(departure)
                needs["ac_charging_parameters"] = {
                    "energy_amount": int((self.spec.energy_needed_kwh or 0) * 1000),
                    "ev_min_current": 6,
                    "ev_max_current": int(self.spec.rating_a),
                    "ev_max_voltage": int(self.spec.voltage_v),
                }
                await self._call(call201.NotifyEVChargingNeeds(charging_needs=needs, evse_id=1))
            await self._charging_state(st.transaction_id, "Charging")

    async def _stop_transaction(self) -> None:
        st = self.state
        if self.spec.ocpp_version == "1.6":
            await self._call(
                call16.StopTransaction(
                    meter_stop=int(st.energy_wh), timestamp=ocpp_time(), transaction_id=int(st.transaction_id or 0)
                )
            )
            await self._call(call16.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
        else:
            await self._call(
                call201.TransactionEvent(
                    event_type="Ended",
                    timestamp=ocpp_time(),
                    trigger_reason="EVCommunicationLost",
                    seq_no=next(self._seq),
                    transaction_info={"transaction_id": st.transaction_id, "stopped_reason": "EVDisconnected"},
                    meter_value=self._samples201("Transaction.End"),
                )
            )
            await self._call(
                call201.StatusNotification(
                    timestamp=ocpp_time(), connector_status="Available", evse_id=1, connector_id=1
                )
            )
        st.transaction_id = None
        st.tx_started = None

    async def _send_meter_values(self, context: str = "Sample.Periodic") -> None:
        st = self.state
        if self.spec.ocpp_version == "1.6":
            if st.transaction_id is None:
                await self._call(call16.MeterValues(connector_id=1, meter_value=self._samples16(context)))
                return
            await self._call(
                call16.MeterValues(
                    connector_id=1, transaction_id=int(st.transaction_id), meter_value=self._samples16(context)
                )
            )
        elif st.transaction_id is None:
            await self._call(call201.MeterValues(evse_id=1, meter_value=self._samples201(context)))
        else:
            await self._call(
                call201.TransactionEvent(
                    event_type="Updated",
                    timestamp=ocpp_time(),
                    trigger_reason="MeterValuePeriodic" if context == "Sample.Periodic" else "Trigger",
                    seq_no=next(self._seq),
                    transaction_info={"transaction_id": st.transaction_id},
                    meter_value=self._samples201(context),
                )
            )


# Handshake answers that mean "not now" rather than "no": retried after Retry-After.
RETRY_LATER_STATUSES = (429, 503)


def _retry_after_s(header: str | None, *, default: float) -> float:
    """Seconds from a Retry-After header (delta-seconds form), the back-off when absent or odd."""
    try:
        return min(max(float(header or ""), 0.0), 300.0)
    except ValueError:
        return default


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` or until ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
