"""Commands from workers to chargers: one OCPP call each, through the gateway that holds it.

Schema: tenant (the caller's; every command is recorded there as a ``ChargerCommand``).

The path: the Redis registry names the gateway instance holding the charger's connection
(``keys.charger_key``) and whether that instance is alive (``keys.instance_key``); the
command goes onto that instance's stream; the gateway sends it as an OCPP call and pushes the
answer onto the batch's reply list, where the caller waits with BLPOP. A charger that is not
connected (or whose gateway has died) is ``Offline`` at once; no answer by the deadline is
``Timeout``. The record in PostgreSQL is written before the command leaves and completed with
the answer, so nothing that must not be lost lives only in Redis.

Redis failing on the way never raises out of ``command_send_many`` (a balancing run calls it
holding its site's lock): commands that could not be looked up are ``Offline``; once they are
on their way, the sender keeps waiting for replies, retrying Redis, until the deadline plus
``REPLY_GRACE_S`` (the gateway retries its reply as long), and what has not come is ``Timeout``.

``command_records_create`` and ``command_records_finish`` write those records.
"""

import contextlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from chargepoint.gateway import keys
from chargepoint.models import ChargerCommand, ChargingStation
from chargepoint.selectors import gateway_instances_live
from evplatform.redis import REDIS_ERRORS, get_redis, redis_outage
from evplatform.services import active_schema, require_tenant_schema

logger = logging.getLogger(__name__)

# Beyond the deadline the gateway answers Timeout itself; this is for its reply to arrive.
REPLY_GRACE_S = 2.0
BLOCK_CHUNK_S = 1.0
MIN_BLOCK_S = 0.01  # BLPOP with 0 would wait forever
# Pause between reads of the reply list while Redis fails (seconds).
REDIS_ERROR_PAUSE_S = 0.2
OFFLINE = "Offline"
TIMEOUT = "Timeout"
CALL_ERROR = "CallError"
KNOWN_STATUSES = {s.value for s in ChargerCommand.Status}
REDIS_UNREACHABLE = "Redis unreachable: the charger's gateway is unknown"


@dataclass(frozen=True)
class Command:
    """One OCPP call to one charger; ``payload`` is camelCase for the charger's protocol version."""

    charge_point_id: str
    action: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class CommandResult:
    """The charger's status ("Accepted", "Rejected", ...) or "CallError" | "Timeout" | "Offline"."""

    status: str
    payload: dict[str, Any] | None = None
    error: str = ""

    @property
    def accepted(self) -> bool:
        return self.status == "Accepted"


def command_send(*, command: Command, timeout_s: float = 30.0) -> CommandResult:
    """Send one command and wait for its result (at most ``timeout_s`` plus a little)."""
    return command_send_many(commands=[command], timeout_s=timeout_s)[0]


def command_send_many(*, commands: list[Command], timeout_s: float = 30.0) -> list[CommandResult]:
    """Send all commands at once (in parallel across chargers); results in the same order."""
    require_tenant_schema("command_send_many")
    if not commands:
        return []
    schema_name = active_schema()
    redis = get_redis()
    request_ids = [uuid.uuid4() for _ in commands]
    requested_at = datetime.now(UTC)
    started = time.monotonic()
    records = command_records_create(
        request_ids=request_ids,
        commands=[(c.charge_point_id, c.action, c.payload) for c in commands],
        requested_at=requested_at,
    )
    results: dict[str, CommandResult] = {}
    gateways: dict[str, str] = {}
    answered: dict[str, float] = {}
    batch_reply = keys.reply_key(uuid.uuid4().hex)
    deadline = time.time() + timeout_s

    offline_why = "charger not connected"
    holders: list[str | None] = [None] * len(commands)
    live: set[str] = set()
    if redis_outage.skip():
        offline_why = REDIS_UNREACHABLE
    else:
        try:
            holders = _holders(redis, commands)
            live = gateway_instances_live(redis=redis, instance_ids={h for h in holders if h})
        except REDIS_ERRORS as exc:
            redis_outage.failed(exc, "commands to chargers are Offline")
            holders = [None] * len(commands)
            offline_why = REDIS_UNREACHABLE
        else:
            redis_outage.answered()
    entries: list[tuple[str, dict[str, str]]] = []
    for request_id, command, holder in zip(request_ids, commands, holders, strict=True):
        rid = str(request_id)
        if not holder or holder not in live:
            results[rid] = CommandResult(OFFLINE, error=offline_why)
            continue
        gateways[rid] = holder
        entries.append(
            (
                keys.command_stream_key(holder),
                {
                    "id": rid,
                    "cp": command.charge_point_id,
                    "schema": schema_name,
                    "action": command.action,
                    "payload": json.dumps(command.payload),
                    "reply": batch_reply,
                    "deadline": repr(deadline),
                },
            )
        )
    redis_failed = False
    if entries:
        try:
            with redis.pipeline(transaction=False) as pipe:
                for stream, fields in entries:
                    pipe.xadd(stream, fields)  # type: ignore[arg-type]
                pipe.execute()
        except REDIS_ERRORS as exc:
            # Some may have reached their gateway before the error: wait for their replies.
            logger.warning("sending %d command(s) failed half-way: Redis %s", len(entries), exc)
            redis_failed = True

    waiting = {str(r) for r in request_ids} - results.keys()
    while waiting:
        remaining = deadline + REPLY_GRACE_S - time.time()
        if remaining <= 0:
            break
        try:
            # Short blocking reads: a client socket timeout must not end the wait early.
            popped = redis.blpop([batch_reply], timeout=max(MIN_BLOCK_S, min(remaining, BLOCK_CHUNK_S)))
        except REDIS_ERRORS as exc:
            if not redis_failed:
                logger.warning("waiting for %d repl(ies): Redis %s; retrying until the deadline", len(waiting), exc)
            redis_failed = True
            time.sleep(max(0.0, min(REDIS_ERROR_PAUSE_S, remaining)))
            continue
        if popped is None:
            continue
        reply = json.loads(popped[1])
        rid = str(reply.get("id", ""))
        if rid in waiting:
            waiting.discard(rid)
            results[rid] = CommandResult(
                str(reply.get("status") or CALL_ERROR), reply.get("payload"), str(reply.get("error") or "")
            )
            gateways[rid] = str(reply.get("gateway") or gateways.get(rid, ""))
            answered[rid] = time.monotonic()
    why = " (Redis failed meanwhile)" if redis_failed else ""
    for rid in waiting:
        results[rid] = CommandResult(TIMEOUT, error=f"no answer within {timeout_s:g}s{why}")
    with contextlib.suppress(*REDIS_ERRORS):
        redis.delete(batch_reply)  # else it expires: the gateways set a TTL on it

    finished = time.monotonic()
    ordered = [results[str(r)] for r in request_ids]
    for record, result in zip(records, ordered, strict=True):
        record.status = result.status if result.status in KNOWN_STATUSES else ChargerCommand.Status.OTHER
        record.charger_status = result.status[:40]
        record.response = result.payload
        record.error = result.error[:2000]
        record.gateway = gateways.get(str(record.request_id), "")[:64]
        at = answered.get(str(record.request_id), finished)
        record.answered_at = requested_at + timedelta(seconds=at - started)
        record.duration_ms = int((at - started) * 1000)
    command_records_finish(records=records)
    return ordered


def _holders(redis: Any, commands: list[Command]) -> list[str | None]:
    """The gateway instance holding each charger's connection (None: not connected)."""
    with redis.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.get(keys.charger_key(command.charge_point_id))
        return [v.decode() if isinstance(v, bytes) else v for v in pipe.execute()]


# --- Command records (one per command, written before it is sent, completed with its answer) --------


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
