"""The gateway over a real socket: who gets in, what bad input gets back, and commands to chargers."""

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
import websockets
from ocpp.messages import CallError, CallResult
from websockets.exceptions import ConnectionClosed, InvalidStatus

from chargepoint.commands import Command, command_send, command_send_many
from chargepoint.gateway import keys
from chargepoint.models import ChargerCommand
from evplatform.redis import get_redis
from tests.chargepoint.conftest import PASSWORD, basic, roundtrip, wait_until, ws_connect

BOOT_16 = '[2,"b1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]'


def registered(gateway, cp: str) -> bool:
    """The registry names this gateway for the charger (not an instance of an earlier module)."""
    holder = get_redis().get(keys.charger_key(cp))
    return holder is not None and holder.decode() == gateway.gateway.instance_id


def refused_status(gateway, path: str, headers: dict[str, str], subprotocols: list[str]) -> tuple[int, str]:
    async def attempt() -> tuple[int, str]:
        try:
            ws = await websockets.connect(
                f"ws://127.0.0.1:{gateway.gateway.port}{path}",
                subprotocols=[websockets.Subprotocol(p) for p in subprotocols],
                additional_headers=headers,
                open_timeout=10,
            )
        except InvalidStatus as refused:
            return refused.response.status_code, refused.response.body.decode()
        await ws.close()
        return 101, ""

    return gateway.bg.run(attempt())


def test_a_registered_charger_with_its_password_is_admitted_and_booted(gateway, gw_fleet) -> None:
    cp = gw_fleet.chargers_16[0]

    async def boot() -> tuple[str | None, object]:
        ws = await ws_connect(gateway.url, cp)
        try:
            return ws.subprotocol, await roundtrip(ws, BOOT_16)
        finally:
            await ws.close()

    subprotocol, answer = gateway.bg.run(boot())

    assert subprotocol == "ocpp1.6"
    assert isinstance(answer, CallResult)
    assert answer.payload["status"] == "Accepted"
    assert answer.payload["interval"] > 0


@pytest.mark.parametrize(
    ("path", "user", "password", "subprotocols", "status", "reason"),
    [
        ("/ocpp/NOT-REGISTERED", "NOT-REGISTERED", PASSWORD, ["ocpp1.6"], 401, "unknown charger or wrong password"),
        ("/ocpp/GWT16-1", "GWT16-1", "wrong-password-000001", ["ocpp1.6"], 401, "unknown charger or wrong password"),
        ("/ocpp/GWT16-1", "GWT16-2", PASSWORD, ["ocpp1.6"], 401, "user name must be the charge point id"),
        ("/ocpp/GWT16-1", None, None, ["ocpp1.6"], 401, "missing credentials"),
        ("/ocpp/GWT16-1", "GWT16-1", PASSWORD, ["ocpp1.5", "ocpp2.1"], 400, "no shared subprotocol"),
        ("/somewhere/GWT16-1", "GWT16-1", PASSWORD, ["ocpp1.6"], 404, "/ocpp/<charge_point_id>"),
    ],
    ids=["unknown-id", "wrong-password", "user-is-not-the-id", "no-credentials", "no-shared-subprotocol", "bad-path"],
)
def test_the_handshake_refuses_with_a_clear_status(
    gateway, gw_fleet, path, user, password, subprotocols, status, reason, caplog
) -> None:
    headers = basic(user, password) if user else {}

    got_status, body = refused_status(gateway, path, headers, subprotocols)

    assert got_status == status
    assert reason in body
    assert any("refused" in r.getMessage() for r in caplog.records)


def test_the_charger_first_choice_of_subprotocol_wins(gateway, gw_fleet) -> None:
    async def connect() -> str | None:
        ws = await websockets.connect(
            f"{gateway.url}/{gw_fleet.chargers_201[0]}",
            subprotocols=[websockets.Subprotocol("ocpp2.0.1"), websockets.Subprotocol("ocpp1.6")],
            additional_headers=basic(gw_fleet.chargers_201[0], PASSWORD),
        )
        await ws.close()
        return ws.subprotocol

    assert gateway.bg.run(connect()) == "ocpp2.0.1"


def test_a_second_connection_with_the_same_id_replaces_the_first(gateway, gw_fleet) -> None:
    cp = gw_fleet.chargers_16[1]

    async def scenario() -> tuple[int | None, str, object]:
        first = await ws_connect(gateway.url, cp)
        await roundtrip(first, BOOT_16)
        second = await ws_connect(gateway.url, cp.lower())
        try:
            await asyncio.wait_for(first.recv(), 10)
        except ConnectionClosed as closed:
            code, reason = (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")
        answer = await roundtrip(second, BOOT_16)
        await second.close()
        return code, reason, answer

    code, reason, answer = gateway.bg.run(scenario())

    assert code == 4000
    assert "replaced" in reason
    assert isinstance(answer, CallResult)


@pytest.mark.parametrize(
    ("version", "frame", "code"),
    [
        ("ocpp1.6", "this is not json", "FormationViolation"),
        ("ocpp2.0.1", "this is not json", "FormatViolation"),
        ("ocpp1.6", '{"not": "a list"}', "ProtocolError"),
        ("ocpp1.6", '[2,"u1","NoSuchAction",{}]', "NotSupported"),
        ("ocpp1.6", '[2,"u2","CancelReservation",{"reservationId":1}]', "NotImplemented"),
        (
            "ocpp1.6",
            '[2,"u3","StatusNotification",{"connectorId":"one","errorCode":"NoError","status":"Available"}]',
            "TypeConstraintViolation",
        ),
        (
            "ocpp1.6",
            '[2,"u4","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Dancing"}]',
            "FormationViolation",
        ),
        ("ocpp1.6", '[2,"u5","StatusNotification",{"connectorId":1}]', "ProtocolError"),
        (
            "ocpp1.6",
            '[2,"u6","MeterValues",{"connectorId":1,"meterValue":[{"timestamp":"2026-01-01T00:00:00Z","sampledValue":[{"value":"NaN"}]}]}]',
            "PropertyConstraintViolation",
        ),
        (
            "ocpp1.6",
            '[2,"u7","MeterValues",{"connectorId":1,"meterValue":[{"timestamp":"2999-01-01T00:00:00Z","sampledValue":[{"value":"1"}]}]}]',
            "PropertyConstraintViolation",
        ),
        (
            "ocpp1.6",
            '[2,"u8","StatusNotification",{"connectorId":999,"errorCode":"NoError","status":"Available"}]',
            "PropertyConstraintViolation",
        ),
        ("ocpp2.0.1", '[2,"u9","Heartbeat",{"unexpected":true}]', "FormatViolation"),
        ("ocpp1.6", "[" * 5000 + "]" * 5000, "FormationViolation"),
        (
            "ocpp2.0.1",
            '[2,"n2","DataTransfer",{"vendorId":"x","data":' + "[" * 5000 + "]" * 5000 + "}]",
            "FormatViolation",
        ),
        ("ocpp1.6", '[2,"' + "x" * 5000 + '","Heartbeat",{}]', "FormationViolation"),
    ],
    ids=[
        "malformed-json-1.6",
        "malformed-json-2.0.1",
        "not-a-list",
        "unknown-action",
        "unhandled-action",
        "wrong-type",
        "bad-enum",
        "missing-field",
        "nan-reading",
        "future-timestamp",
        "connector-out-of-range",
        "extra-field",
        "nested-5000-deep",
        "nested-payload-5000-deep",
        "message-id-5000-long",
    ],
)
def test_bad_input_gets_the_callerror_the_spec_names_and_the_connection_stays(
    gateway, gw_fleet, version, frame, code
) -> None:
    cp = gw_fleet.chargers_201[1] if version == "ocpp2.0.1" else gw_fleet.chargers_16[2]

    async def scenario() -> tuple[object, object]:
        ws = await ws_connect(gateway.url, cp, subprotocol=version)
        try:
            bad = await roundtrip(ws, frame)
            still_there = await roundtrip(ws, '[2,"hb","Heartbeat",{}]')
            return bad, still_there
        finally:
            await ws.close()

    bad, still_there = gateway.bg.run(scenario())

    assert isinstance(bad, CallError), bad
    assert bad.error_code == code
    assert isinstance(still_there, CallResult)


def test_a_call_with_a_message_id_over_36_characters_is_refused_under_id_minus_one(gateway, gw_fleet) -> None:
    cp = gw_fleet.chargers_16[2]
    meter = '{"connectorId":1,"meterValue":[{"timestamp":"2026-01-01T00:00:00Z","sampledValue":[{"value":"1"}]}]}'

    async def scenario() -> object:
        ws = await ws_connect(gateway.url, cp)
        try:
            return await roundtrip(ws, '[2,"' + "m" * 37 + '","MeterValues",' + meter + "]")
        finally:
            await ws.close()

    answer = gateway.bg.run(scenario())

    assert isinstance(answer, CallError)
    assert (answer.unique_id, answer.error_code) == ("-1", "FormationViolation")


def _meter(sampled: str, stamp: str = "") -> str:
    stamp = stamp or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f'{{"connectorId":1,"meterValue":[{{"timestamp":"{stamp}","sampledValue":[{sampled}]}}]}}'


@pytest.mark.parametrize(
    ("action", "payload"),
    [
        ("StatusNotification", lambda: '{"connectorId":7,"errorCode":"NoError","status":"Available"}'),
        ("MeterValues", lambda: _meter('{"value":"-1e12","measurand":"Energy.Active.Import.Register","unit":"Wh"}')),
        ("MeterValues", lambda: _meter('{"value":"-500","measurand":"Current.Import","unit":"A"}')),
        ("MeterValues", lambda: _meter('{"value":"10"}', "2011-06-01T00:00:00Z")),
        (
            "MeterValues",
            lambda: _meter('{"value":"10"}', (datetime.now(UTC) + timedelta(hours=23)).strftime("%Y-%m-%dT%H:%M:%SZ")),
        ),
        (
            "StartTransaction",
            lambda: (
                '{"connectorId":7,"idTag":"T1","meterStart":0,"timestamp":"'
                + datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                + '"}'
            ),
        ),
        (
            "StartTransaction",
            lambda: '{"connectorId":1,"idTag":"T1","meterStart":0,"timestamp":"2011-06-01T00:00:00Z"}',
        ),
        (
            "StartTransaction",
            lambda: (
                '{"connectorId":1,"idTag":"T1","meterStart":-1000000000000,"timestamp":"'
                + datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                + '"}'
            ),
        ),
    ],
    ids=[
        "phantom-connector",
        "negative-energy",
        "negative-current",
        "dated-2011",
        "a-day-ahead",
        "phantom-start",
        "start-dated-2011",
        "start-negative-meter",
    ],
)
def test_values_a_charger_cannot_physically_report_are_refused_and_forwarded_nowhere(
    gateway, gw_fleet, action, payload
) -> None:
    cp = gw_fleet.chargers_16[1]  # registered with one connector, rated 16 A
    telemetry = gateway.gateway.telemetry

    async def scenario() -> tuple[object, int, object]:
        ws = await ws_connect(gateway.url, cp)
        try:
            await roundtrip(ws, BOOT_16)
            before = telemetry.added
            answer = await roundtrip(ws, f'[2,"p1","{action}",{payload()}]')
            taken = telemetry.added - before
            return answer, taken, await roundtrip(ws, '[2,"hb","Heartbeat",{}]')
        finally:
            await ws.close()

    answer, taken, still_there = gateway.bg.run(scenario())

    assert isinstance(answer, CallError), answer
    assert answer.error_code == "PropertyConstraintViolation"
    assert taken == 0
    assert isinstance(still_there, CallResult)


def test_an_oversized_frame_closes_the_connection_with_1009(gateway, gw_fleet, settings) -> None:
    cp = gw_fleet.chargers_16[3]
    huge = '[2,"big","DataTransfer",{"vendorId":"x","data":"' + "a" * (settings.GATEWAY_MAX_FRAME_BYTES + 10) + '"}]'

    async def scenario() -> int | None:
        ws = await ws_connect(gateway.url, cp)
        await ws.send(huge)
        try:
            await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
        return None

    assert gateway.bg.run(scenario()) == 1009


def test_a_flood_is_closed_with_a_policy_violation(gateway, gw_fleet, settings) -> None:
    cp = gw_fleet.chargers_16[4]
    # A small bucket that refills slowly: the outcome does not depend on how busy the machine is.
    settings.GATEWAY_RATE_BURST = 5
    settings.GATEWAY_RATE_PER_S = 0.1

    async def scenario() -> tuple[int | None, str]:
        ws = await ws_connect(gateway.url, cp)
        try:
            for n in range(settings.GATEWAY_RATE_BURST * 4):
                await ws.send(f'[2,"f{n}","Heartbeat",{{}}]')
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        except ConnectionClosed as closed:
            return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")

    code, reason = gateway.bg.run(scenario())

    assert code == 1008
    assert "rate" in reason


def test_data_transfer_from_an_unknown_vendor_is_answered_unknown_vendor_id(gateway, gw_fleet) -> None:
    async def scenario() -> object:
        ws = await ws_connect(gateway.url, gw_fleet.chargers_16[5])
        try:
            return await roundtrip(ws, '[2,"d1","DataTransfer",{"vendorId":"com.example","data":"x"}]')
        finally:
            await ws.close()

    answer = gateway.bg.run(scenario())

    assert isinstance(answer, CallResult)
    assert answer.payload == {"status": "UnknownVendorId"}


def test_start_transaction_at_an_allow_list_site_refuses_an_unknown_tag_and_accepts_a_listed_one(
    gateway, gw_fleet
) -> None:
    def start(tag: str) -> str:
        return (
            '[2,"s-' + tag + '","StartTransaction",{"connectorId":1,"idTag":"' + tag + '","meterStart":0,'
            '"timestamp":"2026-05-01T09:00:00Z"}]'
        )

    async def scenario() -> list[object]:
        ws = await ws_connect(gateway.url, gw_fleet.closed_charger)
        try:
            return [
                await roundtrip(ws, '[2,"a1","Authorize",{"idTag":"STRANGER"}]'),
                await roundtrip(ws, start("STRANGER")),
                await roundtrip(ws, start("ALLOWED-TAG-1")),
            ]
        finally:
            await ws.close()

    authorize, refused, accepted = gateway.bg.run(scenario())

    assert authorize.payload["idTagInfo"]["status"] == "Invalid"
    assert refused.payload["idTagInfo"]["status"] == "Invalid"
    assert accepted.payload["idTagInfo"]["status"] == "Accepted"
    assert isinstance(accepted.payload["transactionId"], int)
    assert accepted.payload["transactionId"] != refused.payload["transactionId"]


class AnsweringCharger:
    """A bare 1.6 client that answers platform calls with what a test wants."""

    def __init__(self, gateway, cp_id: str, answer) -> None:
        self.gateway = gateway
        self.cp_id = cp_id
        self.answer = answer
        self.received: list[list] = []
        self.ws = None

    async def start(self) -> None:
        self.ws = await ws_connect(self.gateway.url, self.cp_id)
        await roundtrip(self.ws, BOOT_16)
        self.task = asyncio.ensure_future(self._serve())

    async def _serve(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            self.received.append(frame)
            reply = self.answer(frame)
            if reply is not None:
                await self.ws.send(json.dumps(reply))

    async def stop(self) -> None:
        self.task.cancel()
        await self.ws.close()


SET_PROFILE_16 = {
    "connectorId": 1,
    "csChargingProfiles": {
        "chargingProfileId": 7,
        "stackLevel": 1,
        "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute",
        "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10.5}]},
    },
}


@pytest.mark.django_db
def test_a_command_reaches_the_charger_through_the_registry_and_its_answer_is_recorded(gateway, gw_fleet) -> None:
    cp = gw_fleet.chargers_16[6]
    charger = AnsweringCharger(gateway, cp, lambda f: [3, f[1], {"status": "Accepted"}])
    gateway.bg.run(charger.start())
    try:
        wait_until(lambda: registered(gateway, cp), what="registry entry")

        result = command_send(command=Command(cp, "SetChargingProfile", SET_PROFILE_16), timeout_s=10)
    finally:
        gateway.bg.run(charger.stop())

    assert result.accepted
    assert charger.received[0][2] == "SetChargingProfile"
    assert (
        charger.received[0][3]["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 10.5
    )
    record = ChargerCommand.objects.get(charge_point_id=cp)
    assert (record.action, record.status, record.charger_status) == ("SetChargingProfile", "Accepted", "Accepted")
    assert record.gateway == gateway.gateway.instance_id
    assert record.duration_ms is not None
    assert record.answered_at >= record.requested_at


@pytest.mark.django_db
def test_commands_report_rejected_callerror_timeout_and_offline_in_order(gateway, gw_fleet) -> None:
    rejecting, failing, silent = gw_fleet.chargers_16[5], gw_fleet.chargers_16[6], gw_fleet.chargers_16[7]
    clients = [
        AnsweringCharger(gateway, rejecting, lambda f: [3, f[1], {"status": "Rejected"}]),
        AnsweringCharger(gateway, failing, lambda f: [4, f[1], "InternalError", "boom", {}]),
        AnsweringCharger(gateway, silent, lambda f: None),
    ]
    for client in clients:
        gateway.bg.run(client.start())
    try:
        for client in clients:
            wait_until(lambda c=client: registered(gateway, c.cp_id), what="registry entry")
        commands = [
            Command(rejecting, "SetChargingProfile", SET_PROFILE_16),
            Command(failing, "SetChargingProfile", SET_PROFILE_16),
            Command(silent, "SetChargingProfile", SET_PROFILE_16),
            Command(gw_fleet.chargers_201[3], "SetChargingProfile", SET_PROFILE_16),  # not connected
            Command(rejecting, "UpdateFirmware", {"location": "http://x", "retrieveDate": "2026-01-01T00:00:00Z"}),
        ]

        results = command_send_many(commands=commands, timeout_s=2)
    finally:
        for client in clients:
            gateway.bg.run(client.stop())

    assert [r.status for r in results] == ["Rejected", "CallError", "Timeout", "Offline", "CallError"]
    assert "InternalError" in results[1].error
    assert "not a platform command" in results[4].error
    assert ChargerCommand.objects.filter(status="Timeout").count() == 1
    assert ChargerCommand.objects.filter(status="Offline", charge_point_id=gw_fleet.chargers_201[3]).exists()


@pytest.mark.django_db
def test_a_command_for_a_charger_of_another_tenant_is_offline(gateway, gw_fleet, other_tenant) -> None:
    cp = gw_fleet.chargers_16[6]
    charger = AnsweringCharger(gateway, cp, lambda f: [3, f[1], {"status": "Accepted"}])
    gateway.bg.run(charger.start())
    try:
        wait_until(lambda: registered(gateway, cp), what="registry entry")
        from django_tenants.utils import tenant_context

        with tenant_context(other_tenant):
            result = command_send(command=Command(cp, "SetChargingProfile", SET_PROFILE_16), timeout_s=5)
    finally:
        gateway.bg.run(charger.stop())

    assert result.status == "Offline"
    assert charger.received == []


def test_the_registry_forgets_a_charger_that_disconnects(gateway, gw_fleet) -> None:
    cp = gw_fleet.chargers_201[2]

    async def connect_and_leave() -> None:
        ws = await ws_connect(gateway.url, cp, subprotocol="ocpp2.0.1")
        await ws.close()

    gateway.bg.run(connect_and_leave())
    assert wait_until(lambda: get_redis().get(keys.charger_key(cp)) is None, what="registry entry removed")
    assert get_redis().exists(keys.instance_key(gateway.gateway.instance_id))
