"""OCPP handlers fed frame by frame: what they answer and which events they hand to the worker."""

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis.asyncio as aioredis

from chargepoint.gateway import keys
from chargepoint.gateway.auth import ChargerIdentity
from chargepoint.gateway.link import ChargerLink, TenantReads
from chargepoint.gateway.protocol import Channel, TokenBucket
from chargepoint.gateway.telemetry import TelemetryBuffer
from chargepoint.ocpp16 import ChargePoint16
from chargepoint.ocpp201 import ChargePoint201

IDENTITY = ChargerIdentity("UNIT-1", "alpha", "north")


class FakeSocket:
    """Stands in for the websocket: what the handler sends, and how it was closed."""

    def __init__(self) -> None:
        self.sent: list[list] = []
        self.closed: tuple[int, str] | None = None

    async def send(self, message: str) -> None:
        self.sent.append(json.loads(message))

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


class Harness:
    """A handler on a fake socket; its buffer flushes every 10 ms, as the gateway's does."""

    def __init__(self, cls, version: str, *, burst: int = 100, publish=None) -> None:
        self.published: list[tuple[str, list[dict]]] = []
        self.buffer = TelemetryBuffer(
            publish=publish or (lambda s, e: self.published.append((s, e))), window_s=0.01, max_events=10_000
        )
        self.link = ChargerLink(
            identity=IDENTITY,
            ocpp_version=version,
            telemetry=self.buffer,
            reads=TenantReads(ThreadPoolExecutor(1)),
            gateway_id="gw-unit",
        )
        self.socket = FakeSocket()
        self.cp = cls(
            link=self.link, channel=Channel(self.socket, version), bucket=TokenBucket(burst=burst, rate_per_s=0.001)
        )

    def feed(self, *frames: str, ack_timeout_s: float = 10) -> list[list]:
        self.link.ack_timeout_s = ack_timeout_s

        async def run() -> None:
            flushing = asyncio.ensure_future(self.buffer.run())
            try:
                for frame in frames:
                    await self.cp.route_message(frame)
            finally:
                flushing.cancel()
            await self.buffer.flush()

        asyncio.run(run())
        return self.socket.sent

    @property
    def events(self) -> list[dict]:
        return [e for _, batch in self.published for e in batch]


def test_16_boot_status_and_meter_values_are_answered_with_their_events_handed_off() -> None:
    h = Harness(ChargePoint16, "1.6")

    sent = h.feed(
        '[2,"1","BootNotification",{"chargePointVendor":"ACME","chargePointModel":"W1","firmwareVersion":"2.1"}]',
        '[2,"2","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Preparing"}]',
        '[2,"3","MeterValues",{"connectorId":1,"transactionId":5,"meterValue":[{"timestamp":"2026-05-01T09:00:00Z",'
        '"sampledValue":[{"value":"7.4","measurand":"Power.Active.Import","unit":"kW"}]}]}]',
        '[2,"4","Heartbeat",{}]',
    )

    assert [f[0] for f in sent] == [3, 3, 3, 3]
    assert sent[0][2]["status"] == "Accepted"
    assert "currentTime" in sent[3][2]
    assert {schema for schema, _ in h.published} == {"alpha"}
    batch = h.events
    assert [e["type"] for e in batch] == ["boot", "status", "meter", "seen"]
    assert batch[0]["firmware_version"] == "2.1"
    assert batch[2]["samples"][0]["value"] == "7400.000000"
    assert batch[2]["transaction_id"] == "5"
    assert all(e["cp"] == "UNIT-1" for e in batch)


def test_16_stop_transaction_hands_over_its_meter_data_before_the_stop() -> None:
    h = Harness(ChargePoint16, "1.6")

    sent = h.feed(
        '[2,"s","StopTransaction",{"meterStop":5000,"timestamp":"2026-05-01T10:00:00Z","transactionId":9,"idTag":"T",'
        '"transactionData":[{"timestamp":"2026-05-01T10:00:00Z","sampledValue":[{"value":"5000"}]}]}]'
    )

    assert sent[0][2] == {"idTagInfo": {"status": "Accepted"}}
    assert [e["type"] for e in h.events] == ["meter", "stop"]
    assert h.events[1]["meter_stop_wh"] == "5000.000000"


def test_16_a_negative_meter_stop_is_refused_and_nothing_is_handed_over() -> None:
    h = Harness(ChargePoint16, "1.6")

    sent = h.feed('[2,"s","StopTransaction",{"meterStop":-5,"timestamp":"2026-05-01T10:00:00Z","transactionId":9}]')

    assert sent[0][:3] == [4, "s", "PropertyConstraintViolation"]
    assert h.events == []


def test_201_transaction_events_start_meter_state_and_end() -> None:
    h = Harness(ChargePoint201, "2.0.1")
    started = {
        "eventType": "Started",
        "timestamp": "2026-05-01T09:00:00Z",
        "triggerReason": "CablePluggedIn",
        "seqNo": 0,
        "transactionInfo": {"transactionId": "tx-1", "chargingState": "EVConnected"},
        "evse": {"id": 1, "connectorId": 1},
        "idToken": {"idToken": "", "type": "NoAuthorization"},
        "meterValue": [
            {"timestamp": "2026-05-01T09:00:00Z", "sampledValue": [{"value": 1.5, "unitOfMeasure": {"unit": "kWh"}}]}
        ],
    }
    ended = {
        "eventType": "Ended",
        "timestamp": "2026-05-01T10:00:00Z",
        "triggerReason": "EVCommunicationLost",
        "seqNo": 1,
        "transactionInfo": {"transactionId": "tx-1", "stoppedReason": "EVDisconnected"},
        "meterValue": [
            {"timestamp": "2026-05-01T10:00:00Z", "sampledValue": [{"value": 9.5, "unitOfMeasure": {"unit": "kWh"}}]}
        ],
    }

    sent = h.feed(json.dumps([2, "a", "TransactionEvent", started]), json.dumps([2, "b", "TransactionEvent", ended]))

    assert sent[0][2] == {"idTokenInfo": {"status": "Accepted"}}
    assert sent[1][2] == {}
    kinds = [(e["type"], e.get("status")) for e in h.events]
    assert kinds == [("start", None), ("meter", None), ("status", "Preparing"), ("meter", None), ("stop", None)]
    assert h.events[0]["meter_start_wh"] == "1500.000000"
    assert h.events[0]["connector"] == 1
    assert h.events[4]["meter_stop_wh"] == "9500.000000"


def test_201_notify_ev_charging_needs_hands_departure_and_energy_to_the_balancer() -> None:
    h = Harness(ChargePoint201, "2.0.1")
    needs = {
        "evseId": 1,
        "chargingNeeds": {
            "requestedEnergyTransfer": "AC_three_phase",
            "departureTime": "2026-05-01T17:00:00Z",
            "acChargingParameters": {"energyAmount": 24000, "evMinCurrent": 6, "evMaxCurrent": 32, "evMaxVoltage": 400},
        },
    }

    sent = h.feed(json.dumps([2, "n", "NotifyEVChargingNeeds", needs]))

    assert sent[0][2] == {"status": "Accepted"}
    (event,) = h.events
    assert (event["type"], event["connector"], event["energy_needed_kwh"], event["ev_max_current_a"]) == (
        "needs",
        1,
        "24.000000",
        "32.000000",
    )
    assert event["departure_at"].startswith("2026-05-01T17:00:00")


def test_a_201_transaction_without_its_evse_is_refused() -> None:
    h = Harness(ChargePoint201, "2.0.1")
    started = {
        "eventType": "Started",
        "timestamp": "2026-05-01T09:00:00Z",
        "triggerReason": "CablePluggedIn",
        "seqNo": 0,
        "transactionInfo": {"transactionId": "tx-2"},
    }

    sent = h.feed(json.dumps([2, "a", "TransactionEvent", started]))

    assert sent[0][2] == "PropertyConstraintViolation"


@pytest.mark.parametrize(("cls", "version"), [(ChargePoint16, "1.6"), (ChargePoint201, "2.0.1")])
def test_a_frame_that_is_no_ocpp_gets_a_callerror_with_the_id_it_had(cls, version) -> None:
    h = Harness(cls, version)

    sent = h.feed('[2,"abc","Heartbeat",{]')

    code = "FormationViolation" if version == "1.6" else "FormatViolation"
    assert sent == [[4, "abc", code, sent[0][3], {"cause": "Message is not valid JSON"}]]


def test_a_binary_frame_closes_the_connection() -> None:
    h = Harness(ChargePoint16, "1.6")

    h.feed(b'[2,"1","Heartbeat",{}]')

    assert h.socket.closed == (1003, "binary frames are not OCPP-J")


def test_more_messages_than_the_bucket_holds_close_the_connection() -> None:
    h = Harness(ChargePoint16, "1.6", burst=3)

    sent = h.feed(*[f'[2,"{n}","Heartbeat",{{}}]' for n in range(4)])

    assert len(sent) == 3
    assert h.socket.closed == (1008, "message rate limit exceeded")


def test_data_transfer_is_accepted_only_for_configured_vendors(settings) -> None:
    settings.GATEWAY_DATA_TRANSFER_VENDORS = ["com.acme"]
    h = Harness(ChargePoint16, "1.6")

    sent = h.feed('[2,"1","DataTransfer",{"vendorId":"com.acme"}]', '[2,"2","DataTransfer",{"vendorId":"com.other"}]')

    assert [f[2]["status"] for f in sent] == ["Accepted", "UnknownVendorId"]


def test_a_failed_publish_is_retried_in_order_and_nothing_is_lost() -> None:
    published: list[list[dict]] = []
    failures = {"left": 2}

    def flaky(schema: str, events: list[dict]) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("broker restarting")
        published.append(events)

    buffer = TelemetryBuffer(publish=flaky, window_s=60, max_events=10_000)

    async def run() -> None:
        buffer.add("alpha", {"n": 1})
        await buffer.flush()
        buffer.add("alpha", {"n": 2})
        assert await buffer.drain(timeout_s=20)

    asyncio.run(run())
    buffer.close()

    assert [e["n"] for batch in published for e in batch] == [1, 2]
    assert buffer.failures == 2


@pytest.mark.parametrize("cls", [ChargePoint16, ChargePoint201])
def test_every_action_that_skips_the_library_check_is_checked_by_the_gateway(cls) -> None:
    h = Harness(cls, cls.ocpp_version)

    skipping = {action for action, route in h.cp.route_map.items() if route.get("_skip_schema_validation")}

    assert skipping == set(cls.prevalidated_actions)
    assert skipping  # the hot path is on


METER_16 = (
    '[2,"m{n}","MeterValues",{{"connectorId":1,"meterValue":[{{"timestamp":"2026-05-01T09:00:0{n}Z",'
    '"sampledValue":[{{"value":"{n}","measurand":"Current.Import","unit":"A"}}]}}]}}]'
)


def test_meter_values_are_answered_only_once_their_batch_is_on_the_broker() -> None:
    confirmed = threading.Event()
    published: list[list[dict]] = []

    def slow_broker(schema: str, events: list[dict]) -> None:
        confirmed.wait(10)
        published.append(events)

    h = Harness(ChargePoint16, "1.6", publish=slow_broker)

    async def run() -> tuple[list, list]:
        flushing = asyncio.ensure_future(h.buffer.run())
        handling = asyncio.ensure_future(h.cp.route_message(METER_16.format(n=1)))
        await asyncio.sleep(0.3)
        before = list(h.socket.sent)
        confirmed.set()
        await asyncio.wait_for(handling, 5)
        flushing.cancel()
        return before, h.socket.sent

    before, after = asyncio.run(run())
    h.buffer.close()

    assert before == []  # no answer while the batch is not on the broker
    assert after == [[3, "m1", {}]]
    assert [e["type"] for batch in published for e in batch] == ["meter"]


def test_readings_the_broker_does_not_take_in_time_get_internal_error_and_still_land_once() -> None:
    published: list[list[dict]] = []
    broker_up = threading.Event()

    def down_then_up(schema: str, events: list[dict]) -> None:
        if not broker_up.is_set():
            raise ConnectionError("broker unreachable")
        published.append(events)

    h = Harness(ChargePoint16, "1.6", publish=down_then_up)

    sent = h.feed(METER_16.format(n=1), ack_timeout_s=0.3)
    broker_up.set()
    assert asyncio.run(h.buffer.drain(timeout_s=20))
    h.buffer.close()

    assert sent[0][:3] == [4, "m1", "InternalError"]  # the charger's cue to send it again
    assert [e["samples"][0]["value"] for batch in published for e in batch] == ["1.000000"]


def test_messages_of_many_chargers_in_one_window_are_one_hand_off() -> None:
    published: list[tuple[str, list[dict]]] = []
    buffer = TelemetryBuffer(publish=lambda s, e: published.append((s, e)), window_s=0.05, max_events=10_000)
    harnesses = []
    for n in range(5):
        h = Harness(ChargePoint16, "1.6")
        h.link = ChargerLink(
            identity=ChargerIdentity(f"UNIT-{n}", "alpha", "north"),
            ocpp_version="1.6",
            telemetry=buffer,
            reads=TenantReads(ThreadPoolExecutor(1)),
            gateway_id="gw-unit",
        )
        h.cp.link = h.link
        harnesses.append(h)

    async def run() -> None:
        flushing = asyncio.ensure_future(buffer.run())
        await asyncio.gather(*[h.cp.route_message(METER_16.format(n=1)) for h in harnesses])
        flushing.cancel()

    asyncio.run(run())
    buffer.close()

    assert len(published) == 1  # one task for the window, not one per message
    assert sorted(e["cp"] for e in published[0][1]) == [f"UNIT-{n}" for n in range(5)]
    assert all(h.socket.sent[0][0] == 3 for h in harnesses)


def test_a_repeated_16_start_transaction_gets_the_transaction_id_of_its_first_try() -> None:
    h = Harness(ChargePoint16, "1.6")
    issued = iter(range(100, 200))

    async def from_sequence(schema_name, fn):
        return next(issued)

    h.link._reads._run = from_sequence
    start = '[2,"{uid}","StartTransaction",{{"connectorId":1,"idTag":"","meterStart":10,"timestamp":"{ts}"}}]'

    sent = h.feed(
        start.format(uid="a", ts="2026-05-01T09:00:00Z"),
        start.format(uid="b", ts="2026-05-01T09:00:00Z"),  # the charger's retry after an error
        start.format(uid="c", ts="2026-05-01T11:00:00Z"),  # a new session
    )

    assert [f[2]["transactionId"] for f in sent] == [100, 100, 101]


def test_a_start_transaction_retried_through_another_gateway_gets_the_same_id(settings) -> None:
    """Two gateway instances share the ids they gave in Redis (the real one); without it, per instance."""
    issued = iter(range(500, 600))

    async def from_sequence(schema_name, fn):
        return next(issued)

    start = (1, "2026-05-01T09:00:00Z", 10, "TAG-1")
    other_start = (1, "2026-05-01T11:00:00Z", 10, "TAG-1")

    async def run() -> tuple[int, ...]:
        client = aioredis.from_url(settings.REDIS_URL, decode_responses=True)
        await client.delete(keys.start_key("alpha", IDENTITY.charge_point_id, start))
        await client.delete(keys.start_key("alpha", IDENTITY.charge_point_id, other_start))
        first, second = (
            TenantReads(ThreadPoolExecutor(1), redis=lambda: client),
            TenantReads(ThreadPoolExecutor(1), redis=lambda: client),
        )
        first._run = second._run = from_sequence
        try:
            retried = (
                await first.transaction_id(IDENTITY, start),
                await second.transaction_id(IDENTITY, start),  # the retry, on the other gateway
            )
            # Both at once: each draws an id, the first to record it wins, the other takes that.
            raced = await asyncio.gather(
                first.transaction_id(IDENTITY, other_start), second.transaction_id(IDENTITY, other_start)
            )
            return (*retried, *raced)
        finally:
            await client.aclose()

    ids = asyncio.run(run())
    assert ids[:2] == (500, 500)
    assert ids[2] == ids[3] in (501, 502)


def test_without_redis_a_gateway_still_gives_a_start_its_id() -> None:
    async def run() -> int:
        unreachable = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
        reads = TenantReads(ThreadPoolExecutor(1), redis=lambda: unreachable)

        async def from_sequence(schema_name, fn):
            return 7

        reads._run = from_sequence
        try:
            return await reads.transaction_id(IDENTITY, (1, "2026-05-01T09:00:00Z", 10, ""))
        finally:
            await unreachable.aclose()

    assert asyncio.run(run()) == 7


def test_the_batch_window_stretches_while_tasks_wait_in_the_queue_and_shrinks_after() -> None:
    depth = {"now": 5}
    buffer = TelemetryBuffer(
        publish=lambda s, e: None,
        window_s=0.01,
        max_window_s=0.2,
        max_events=10_000,
        queue_depth=lambda: depth["now"],
    )

    async def publish_one() -> float:
        buffer._probed_at = 0.0  # probe now rather than within the second
        buffer.add("alpha", {"n": 1})
        await buffer.flush()
        return buffer.window_s

    behind = asyncio.run(publish_one())
    depth["now"] = 500
    far_behind = asyncio.run(publish_one())
    depth["now"] = 0
    caught_up = asyncio.run(publish_one())
    buffer.close()

    assert behind == pytest.approx(0.06)  # 10 ms + 10 ms per waiting task
    assert far_behind == pytest.approx(0.2)  # capped
    assert caught_up == pytest.approx(0.01)
