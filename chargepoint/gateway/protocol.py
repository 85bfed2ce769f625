"""What both protocol versions share on top of the ``ocpp`` library's ChargePoint.

Schema: none. The library answers schema-invalid payloads and unknown actions with the right
CALLERROR; it only logs a frame that is not OCPP-J at all (bad JSON, not a list) and would
let a flood through. ``route_message`` (a public method) adds those checks before handing
the frame to the library, and ``Channel`` gives 1.6 chargers the 1.6 spellings of two error
codes (``FormationViolation``, ``OccurenceConstraintViolation``: OCPP-J 1.6 errata, "won't
fix"). ``command_call`` sends a platform command (camelCase payload) through the library.

``start`` reads the frames: the charger's calls are answered in order by a task of their own,
since a data-bearing call waits until its events are on the broker; meanwhile the charger's
answers to our commands still reach the library's ``call``.
"""

import asyncio
import json
import logging
import re
import time
from types import ModuleType
from typing import Any

from ocpp.charge_point import camel_to_snake_case, remove_nones, serialize_as_dict, snake_to_camel_case
from ocpp.exceptions import FormatViolationError, OCPPError
from ocpp.messages import Call, CallError, unpack, validate_payload
from websockets.asyncio.server import ServerConnection

from chargepoint.gateway import schemas
from chargepoint.gateway.link import ChargerLink
from chargepoint.gateway.metrics import GatewayMetrics

logger = logging.getLogger("chargepoint.gateway")
ERROR_CODES_16 = {
    "FormatViolation": "FormationViolation",
    "OccurrenceConstraintViolation": "OccurenceConstraintViolation",
}
UNIQUE_ID_RE = re.compile(r'^\s*\[\s*\d\s*,\s*"([^"\\]{1,36})"')
# OCPP-J: a message id is at most 36 characters. A call with a longer one cannot be answered
# under its id (echoing it back would be the charger's flood returned): its CALLERROR carries
# "-1", as OCPP-J 2.0.1 prescribes for a message id that cannot be read.
MAX_UNIQUE_ID = 36
UNREADABLE_ID = "-1"
# Answered only once their events are on the broker: their round trip is the ack latency.
DATA_BEARING = frozenset(
    {
        "MeterValues",
        "StatusNotification",
        "StartTransaction",
        "StopTransaction",
        "TransactionEvent",
        "NotifyEVChargingNeeds",
        "NotifyChargingLimit",
        "ClearedChargingLimit",
    }
)
CALL_RE = re.compile(r"^\s*\[\s*2\s*,")
CLOSE_POLICY = 1008
CLOSE_UNSUPPORTED_DATA = 1003


class Channel:
    """The websocket as the library sees it (``recv``/``send``)."""

    def __init__(self, websocket: ServerConnection, ocpp_version: str) -> None:
        self.websocket = websocket
        self.ocpp_version = ocpp_version

    async def recv(self) -> str | bytes:
        return await self.websocket.recv()

    async def send(self, message: str) -> None:
        if self.ocpp_version == "1.6" and message.startswith("[4,"):
            frame = json.loads(message)
            if frame[2] in ERROR_CODES_16:
                frame[2] = ERROR_CODES_16[frame[2]]
                message = json.dumps(frame, separators=(",", ":"))
        await self.websocket.send(message)

    async def close(self, code: int, reason: str) -> None:
        await self.websocket.close(code, reason)


class TokenBucket:
    """Flood guard: ``burst`` messages at once, ``rate_per_s`` sustained."""

    def __init__(self, *, burst: int, rate_per_s: float) -> None:
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.rate = rate_per_s
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class GatewayChargePoint:
    """Mixed in before a version's ``ocpp`` ChargePoint class (``ocpp16``, ``ocpp201``)."""

    ocpp_version = ""
    call_module: ModuleType
    platform_actions: frozenset[str] = frozenset()
    # Handlers registered with skip_schema_validation: checked here, compiled (see schemas).
    prevalidated_actions: frozenset[str] = frozenset()

    def __init__(
        self,
        *,
        link: ChargerLink,
        channel: Channel,
        bucket: TokenBucket,
        response_timeout: float = 30,
        metrics: GatewayMetrics | None = None,
    ):
        super().__init__(link.charge_point_id, channel, response_timeout=response_timeout)  # type: ignore[call-arg]
        self.link = link
        self.channel = channel
        self.bucket = bucket
        self.closing_reason = ""
        self.metrics = metrics
        self._closing: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Read frames until the connection closes (raises ConnectionClosed then)."""
        calls: asyncio.Queue[tuple[str, float]] = asyncio.Queue()
        answering = asyncio.ensure_future(self._answer_calls(calls))
        try:
            while True:
                raw = await self.channel.recv()
                self.logger.info("%s: receive message %s", self.id, raw)  # type: ignore[attr-defined]
                if answering.done():
                    answering.result()  # its failure (the connection closed under a send) ends this one
                if self.closing_reason:
                    continue  # closing: what still arrives is not answered
                if isinstance(raw, str) and CALL_RE.match(raw):
                    if calls.qsize() >= self.bucket.capacity:  # OCPP-J: one call at a time
                        self.closing_reason = "message rate limit exceeded (calls sent without waiting)"
                        logger.warning("%s: flood of unanswered calls, closing", self.link.charge_point_id)
                        self._close_soon(CLOSE_POLICY)
                        continue
                    calls.put_nowait((raw, time.monotonic()))
                else:
                    await self.route_message(raw)
        finally:
            answering.cancel()

    async def _answer_calls(self, calls: "asyncio.Queue[tuple[str, float]]") -> None:
        while True:
            raw, arrived = await calls.get()
            await self.route_message(raw, arrived=arrived)

    async def route_message(self, raw_msg: str | bytes, arrived: float | None = None) -> None:
        if not self.bucket.take():
            self.closing_reason = "message rate limit exceeded"
            logger.warning("%s: flood, closing", self.link.charge_point_id)
            self._close_soon(CLOSE_POLICY)
            return
        if isinstance(raw_msg, bytes):
            self.closing_reason = "binary frames are not OCPP-J"
            logger.warning("%s: binary frame, closing", self.link.charge_point_id)
            self._close_soon(CLOSE_UNSUPPORTED_DATA)
            return
        msg: Any = None
        try:
            try:
                msg = unpack(raw_msg)
            except RecursionError:  # nested past the parser's depth: not a frame we can read
                raise FormatViolationError(details={"cause": "nested too deeply"}) from None
            if isinstance(msg, Call):
                if not isinstance(msg.unique_id, str) or not 0 < len(msg.unique_id) <= MAX_UNIQUE_ID:
                    msg = None  # its id is not echoed back
                    raise FormatViolationError(details={"cause": f"message id must be 1-{MAX_UNIQUE_ID} characters"})
                self._count(msg.action)
                if msg.action in self.prevalidated_actions:
                    schemas.validate_request(self.ocpp_version, msg.action, msg.payload)
            else:
                self._count("answer")
        except OCPPError as error:
            await self._refuse_frame(raw_msg, msg, error)
            return
        try:
            await super().route_message(raw_msg)  # type: ignore[misc]
        except RecursionError:  # the library's schema check of a deeply nested payload
            await self._refuse_frame(raw_msg, msg, FormatViolationError(details={"cause": "nested too deeply"}))
            return
        if self.metrics is not None and arrived is not None and isinstance(msg, Call) and msg.action in DATA_BEARING:
            self.metrics.ack_latency.observe(time.monotonic() - arrived)

    def _close_soon(self, code: int) -> None:
        """Close with ``closing_reason`` while the reader goes on reading (and discarding).

        Awaited in the reader, the close would wait for the charger's close frame behind the
        frames it had already sent: with more of them than the receive queue holds, reading
        pauses and the close handshake only ends at its timeout.
        """
        self._closing = asyncio.ensure_future(self.channel.close(code, self.closing_reason))

    def _count(self, action: str) -> None:
        if self.metrics is not None:
            known = action == "answer" or action in self.route_map  # type: ignore[attr-defined]
            self.metrics.messages.labels(action if known else "other").inc()

    async def _refuse_frame(self, raw_msg: str, msg: Any, error: OCPPError) -> None:
        """Answer a frame the gateway will not handle with a CALLERROR; the connection stays."""
        if isinstance(msg, Call):
            unique_id = str(msg.unique_id)
        else:  # an id of more than 36 characters does not match: "-1"
            match = UNIQUE_ID_RE.match(raw_msg)
            unique_id = match.group(1) if match else UNREADABLE_ID
        logger.warning("%s: not an OCPP-J frame (%s): %.200r", self.link.charge_point_id, error.code, raw_msg)
        details = {"cause": str((error.details or {}).get("cause", ""))[:200]}  # never echo the frame back
        await self.channel.send(CallError(unique_id, error.code, error.description, details).to_json())

    async def command_call(self, action: str, payload: dict[str, Any]) -> tuple[str, dict[str, Any] | None, str]:
        """Send one platform command; (status, response payload, error)."""
        if action not in self.platform_actions:
            return "CallError", None, f"{action} is not a platform command for OCPP {self.ocpp_version}"
        request_cls = getattr(self.call_module, action)
        try:
            request = request_cls(**camel_to_snake_case(payload))
            await validate_payload(
                Call("0", action, remove_nones(snake_to_camel_case(serialize_as_dict(request)))), self.ocpp_version
            )
        except (TypeError, OCPPError) as exc:
            return "CallError", None, f"invalid {action} payload, not sent: {exc}"
        try:
            response = await self.call(request, suppress=False)  # type: ignore[attr-defined]
        except OCPPError as exc:
            return "CallError", None, f"{exc.code}: {exc.description} {exc.details or ''}".strip()
        answer = snake_to_camel_case(remove_nones(serialize_as_dict(response)))
        status = answer.get("status", "Accepted") if isinstance(answer, dict) else "Accepted"
        return str(status), answer, ""
