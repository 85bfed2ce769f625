"""One gateway instance: the websocket server, its chargers, its Redis registry and inbox.

Schema: public (charger identities, through ``auth``); tenants only by name (see ``link``).

- Handshake: path ``/ocpp/<charge_point_id>``, a subprotocol the charger offers (its first
  choice among ``ocpp1.6``/``ocpp2.0.1``), HTTP Basic auth with the id and its password.
  Refusals are HTTP 404/400/401 with a plain reason, and logged; 429 (too many failures of
  that id or address) and 503 (password checks queue full), each with Retry-After, before any
  password check (see ``auth``).
- Plain HTTP on the same port, no id or credentials: ``/healthz`` (the loop answers),
  ``/readyz`` (Redis and the broker answer, not draining) and ``/metrics`` (``metrics``).
- A second connection with the same id replaces the first (closed with 4000).
- Messages that carry data are answered once RabbitMQ confirmed their batch (``telemetry``,
  ``link.stored``), BootNotification and Heartbeat at once. With 5,000 chargers sending
  MeterValues every 10 s the round trip was p50 16 ms, p99 45 ms on the 2-core development
  machine beside one other busy process (p99 90-180 ms when other work kept both cores busy);
  the wait for the confirm alone p50 13 ms, p99 28-41 ms (``bench/gateway_bench.py``, details
  in bench/README.md).
- Redis: ``instance_key`` lives while the instance heartbeats; ``charger_key`` names the
  instance that holds a charger; commands arrive on the instance's stream and their answers
  go to the reply list the sender named (see ``chargepoint.commands``).
- Redis faults: the client retries a command on a new connection (``evplatform.redis``), and
  an answer to a command is pushed again, with backoff, until the command's deadline plus
  ``REPLY_GRACE_S`` (after that the sender has booked a Timeout; the loss is logged once).
  The heartbeat has a connection of its own and a short timeout, and retries within a second
  after a failure, so a busy pool or a slow Redis does not let the instance key expire: an
  expired key is how the workers tell a dead instance (its chargers are taken offline). If
  the key was gone anyway (Redis restarted, or this instance could not reach it for a TTL),
  the instance re-asserts its chargers in the registry and announces them as connected again.
"""

import asyncio
import contextlib
import gc
import json
import logging
import os
import re
import socket
import ssl
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from http import HTTPStatus
from typing import Any, cast

import ocpp.messages
import redis.asyncio as aioredis
from django.conf import settings
from django.db import connections
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHeader
from websockets.headers import build_www_authenticate_basic, parse_authorization_basic
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from chargepoint.commands import REPLY_GRACE_S
from chargepoint.gateway import keys
from chargepoint.gateway.auth import OVERLOADED, THROTTLED, ChargerIdentity, CredentialVerifier
from chargepoint.gateway.link import ChargerLink, TenantReads
from chargepoint.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from chargepoint.gateway.protocol import Channel, GatewayChargePoint, TokenBucket
from chargepoint.gateway.telemetry import (
    Publish,
    TelemetryBuffer,
    broker_reachable,
    publish_to_celery,
    telemetry_queue_depth,
)
from chargepoint.ocpp16 import ChargePoint16
from chargepoint.ocpp201 import ChargePoint201
from evplatform import logs
from evplatform.redis import REDIS_ERRORS, client_options

logger = logging.getLogger("chargepoint.gateway")

HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
READY_CHECK_TIMEOUT_S = 2.0
READY_CACHE_S = 1.0
LIMITS_READ_TIMEOUT_S = 5.0
PATH_RE = re.compile(r"^/ocpp/([A-Za-z0-9._~\-]{1,48})/?$")
PROTOCOLS: dict[str, type[GatewayChargePoint]] = {"ocpp1.6": ChargePoint16, "ocpp2.0.1": ChargePoint201}
CLOSE_REPLACED = 4000
CLOSE_GOING_AWAY = 1001
PING_INTERVAL_S = 60
REPLY_TTL_S = 120
REGISTRY_TICK_S = 0.05
REDIS_CONNECTIONS = 16
REASSERT_CHUNK = 500
LAG_PROBE_S = 0.1
GC_THRESHOLDS = (2_000, 20, 50)
GC_FREEZE_S = 1.0
GC_RELEASE_S = 1800.0
# The publisher thread waits this long at most for the GIL after the broker's confirm.
SWITCH_INTERVAL_S = 0.001
LAG_WARN_S = 0.1
ACK_REPORT_S = 60.0
COMMAND_READ_COUNT = 200
# A reply that Redis refuses is pushed again after this, doubling up to the cap (seconds).
REPLY_RETRY_FIRST_S = 0.05
REPLY_RETRY_CAP_S = 1.0
# After a failed heartbeat the next one comes this soon, not a third of the TTL later.
HEARTBEAT_RETRY_S = 1.0
REASSERT_RETRY_S = 1.0
REGISTRY_RETRY_S = 1.0
BEAT_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, TimeoutError)
# Compare-and-delete: forget the charger's entry only if it still names this instance.
RELEASE_SCRIPT = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


@dataclass(frozen=True)
class Admitted:
    identity: ChargerIdentity
    subprotocol: str


def _refuse(connection: ServerConnection, status: HTTPStatus, text: str, *, basic: bool = False) -> Response:
    response = connection.respond(status, text + "\n")
    if basic:
        response.headers["WWW-Authenticate"] = build_www_authenticate_basic("OCPP")
    return response


def _json_default(value: Any) -> Any:
    # The library parses some 1.6 answers (GetCompositeSchedule) with Decimal floats.
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _offered_subprotocols(headers: Headers) -> list[str]:
    return [p.strip() for value in headers.get_all("Sec-WebSocket-Protocol") for p in value.split(",") if p.strip()]


class Gateway:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 9000,
        instance_id: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        publish: Publish = publish_to_celery,
        queue_depth: Callable[[], int] | None = telemetry_queue_depth,
        broker_check: Callable[[], None] | None = broker_reachable,
    ) -> None:
        self.host = host
        self.port = port
        self.instance_id = instance_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.ssl_context = ssl_context
        self.db = ThreadPoolExecutor(max_workers=settings.GATEWAY_DB_THREADS, thread_name_prefix="gw-db")
        self.verifier = CredentialVerifier()
        self.metrics = GatewayMetrics()
        self.broker_check = broker_check
        self.draining = False
        self._ready_lock = asyncio.Lock()
        self._ready_checked: tuple[float, list[str]] | None = None
        self.reads = TenantReads(self.db, redis=lambda: self.redis)
        self.telemetry = TelemetryBuffer(
            publish=publish,
            window_s=settings.GATEWAY_BATCH_WINDOW_S,
            max_window_s=settings.GATEWAY_BATCH_WINDOW_MAX_S,
            max_events=settings.GATEWAY_BATCH_MAX_EVENTS,
            queue_depth=queue_depth,
        )
        self.connections: dict[str, GatewayChargePoint] = {}
        self._admitted: weakref.WeakKeyDictionary[ServerConnection, Admitted] = weakref.WeakKeyDictionary()
        self._redis: aioredis.Redis | None = None
        self._release: Any = None
        self._registry_changes: dict[str, tuple[str, bool]] = {}
        self._registry_wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._beat_redis: aioredis.Redis | None = None
        self._reasserting = False
        self._redis_failing: dict[str, float] = {}  # what failed -> since (loop time)
        self.ready = asyncio.Event()
        self.refusals = 0
        self.lost_replies = 0

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("the gateway is not running")
        return self._redis

    # -- handshake -------------------------------------------------------------------------

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        peer = connection.remote_address
        path = request.path.split("?", 1)[0]
        if path in HEALTH_PATHS:
            return await self._health(connection, path)
        match = PATH_RE.match(path)
        if match is None:
            return self._refused(
                connection, peer, "-", HTTPStatus.NOT_FOUND, "use ws://HOST:PORT/ocpp/<charge_point_id>"
            )
        cp_id = match.group(1)
        offered = _offered_subprotocols(request.headers)
        chosen = next((p for p in offered if p in PROTOCOLS), None)
        if chosen is None:
            return self._refused(
                connection,
                peer,
                cp_id,
                HTTPStatus.BAD_REQUEST,
                f"no shared subprotocol: offered {', '.join(offered) or 'none'}; this server speaks "
                + ", ".join(PROTOCOLS),
            )
        authorization = request.headers.get("Authorization")
        if authorization is None:
            return self._refused(connection, peer, cp_id, HTTPStatus.UNAUTHORIZED, "missing credentials", basic=True)
        try:
            username, password = parse_authorization_basic(authorization)
        except InvalidHeader:
            return self._refused(
                connection, peer, cp_id, HTTPStatus.UNAUTHORIZED, "unsupported credentials", basic=True
            )
        if username.lower() != cp_id.lower():
            return self._refused(
                connection, peer, cp_id, HTTPStatus.UNAUTHORIZED, "user name must be the charge point id", basic=True
            )
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        verdict = await self.verifier.verify(cp_id, password, address)
        self.metrics.handshakes.labels(verdict.outcome).inc()
        if verdict.identity is None:
            self.refusals += 1
            if verdict.outcome in (THROTTLED, OVERLOADED):
                logger.info("refused %s from %s: %s", cp_id, peer, verdict.reason)
                status = (
                    HTTPStatus.TOO_MANY_REQUESTS if verdict.outcome == THROTTLED else HTTPStatus.SERVICE_UNAVAILABLE
                )
                response = _refuse(connection, status, verdict.reason)
                response.headers["Retry-After"] = str(verdict.retry_after_s)
                return response
            logger.warning("refused %s from %s: %s", cp_id, peer, verdict.reason)
            return _refuse(connection, HTTPStatus.UNAUTHORIZED, "unknown charger or wrong password", basic=True)
        self._admitted[connection] = Admitted(verdict.identity, chosen)
        return None

    async def _health(self, connection: ServerConnection, path: str) -> Response:
        """``/healthz``: the event loop answers. ``/readyz``: Redis and the broker answer and the
        gateway is not draining (else 503, with what failed). ``/metrics``: Prometheus text."""
        if path == "/healthz":
            return connection.respond(HTTPStatus.OK, "ok\n")
        if path == "/metrics":
            response = connection.respond(HTTPStatus.OK, self.metrics.render().decode())
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = CONTENT_TYPE
            return response
        problems = await self._readiness_problems()
        if problems:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "not ready: " + "; ".join(problems) + "\n")
        return connection.respond(HTTPStatus.OK, "ready\n")

    async def _readiness_problems(self) -> list[str]:
        """What keeps the gateway from taking chargers; the checks of Redis and the broker are
        shared by the probes of one ``READY_CACHE_S``, so probing in a loop costs no more."""
        problems = ["draining"] if self.draining else []
        async with self._ready_lock:
            now = time.monotonic()
            if self._ready_checked is None or now - self._ready_checked[0] > READY_CACHE_S:
                self._ready_checked = (now, await self._dependency_problems())
        return problems + self._ready_checked[1]

    async def _dependency_problems(self) -> list[str]:
        problems = []
        try:
            async with asyncio.timeout(READY_CHECK_TIMEOUT_S):
                await self.redis.ping()
        except Exception as exc:  # Redis errors, a timeout, or not running yet
            problems.append(f"Redis: {exc or type(exc).__name__}")
        if self.broker_check is not None:
            try:
                async with asyncio.timeout(READY_CHECK_TIMEOUT_S):
                    await asyncio.get_running_loop().run_in_executor(None, self.broker_check)
            except Exception as exc:
                problems.append(f"broker: {exc or type(exc).__name__}")
        if self.telemetry.failing:
            problems.append("broker: publishing telemetry fails")
        return problems

    def _refused(
        self, connection: ServerConnection, peer: Any, cp_id: str, status: HTTPStatus, text: str, *, basic: bool = False
    ) -> Response:
        logger.warning("refused %s from %s: %d %s", cp_id, peer, status, text)
        self.refusals += 1
        self.metrics.handshakes.labels("refused").inc()
        return _refuse(connection, status, text, basic=basic)

    def select_subprotocol(self, connection: ServerConnection, subprotocols: Any) -> Subprotocol | None:
        admitted = self._admitted.get(connection)
        return Subprotocol(admitted.subprotocol) if admitted else None

    # -- connections -----------------------------------------------------------------------

    async def handle(self, websocket: ServerConnection) -> None:
        admitted = self._admitted.pop(websocket, None)
        if admitted is None:  # cannot happen: process_request admitted it
            await websocket.close(1011, "not admitted")
            return
        identity = admitted.identity
        # This connection's task (and the tasks it starts) log with the charger's ids.
        logs.bind(tenant=identity.schema_name, site=identity.site_slug, charger=identity.charge_point_id)
        link = ChargerLink(
            identity=identity,
            ocpp_version="1.6" if admitted.subprotocol == "ocpp1.6" else "2.0.1",
            telemetry=self.telemetry,
            reads=self.reads,
            gateway_id=self.instance_id,
        )
        cp_cls = PROTOCOLS[admitted.subprotocol]
        charge_point = cp_cls(
            link=link,
            channel=Channel(websocket, link.ocpp_version),
            bucket=TokenBucket(burst=settings.GATEWAY_RATE_BURST, rate_per_s=settings.GATEWAY_RATE_PER_S),
            metrics=self.metrics,
        )
        connected = self.metrics.connected.labels(admitted.subprotocol)
        connected.inc()
        try:
            async with asyncio.timeout(LIMITS_READ_TIMEOUT_S):
                link.limits = await self.reads.limits(identity)
        except Exception:  # the database is slow or away: the platform's bounds meanwhile
            logger.warning("%s: registered connectors not read; any id up to the maximum", identity.charge_point_id)
        key = identity.charge_point_id.lower()
        previous = self.connections.get(key)
        self.connections[key] = charge_point
        if previous is not None:
            previous.closing_reason = "replaced by a newer connection"
            logger.info("%s: a new connection replaces the old one", identity.charge_point_id)
            self._spawn(previous.channel.close(CLOSE_REPLACED, previous.closing_reason))
        link.connected()
        self._registry_changes[key] = (identity.charge_point_id, True)
        self._registry_wake.set()
        logger.info("%s connected (%s, %s)", identity.charge_point_id, admitted.subprotocol, identity.schema_name)
        reason = "closed"
        try:
            await charge_point.start()
        except ConnectionClosed as closed:
            reason = charge_point.closing_reason or (closed.rcvd.reason if closed.rcvd else "") or "connection lost"
            if closed.sent is not None and closed.sent.code == 1009:
                reason = "frame too large"
                logger.warning(
                    "%s: frame larger than %d bytes, closed", identity.charge_point_id, settings.GATEWAY_MAX_FRAME_BYTES
                )
        except Exception:
            logger.exception("%s: connection failed", identity.charge_point_id)
            reason = "gateway error"
        finally:
            connected.dec()
            if self.connections.get(key) is charge_point:
                del self.connections[key]
                self._registry_changes[key] = (identity.charge_point_id, False)
                self._registry_wake.set()
            link.disconnected(reason)
            logger.info("%s disconnected: %s", identity.charge_point_id, reason)

    # -- commands from workers ---------------------------------------------------------------

    async def _consume_commands(self) -> None:
        stream = keys.command_stream_key(self.instance_id)
        last_id = "0-0"
        while True:
            try:
                entries = await self.redis.xread({stream: last_id}, count=COMMAND_READ_COUNT, block=1000)
            except REDIS_ERRORS as exc:
                self._redis_failed("reading commands", exc)
                await asyncio.sleep(1)
                continue
            self._redis_ok("reading commands")
            ids = []
            streams = cast(list[tuple[str, list[tuple[str, dict[str, str]]]]], entries or [])
            for _stream, items in streams:
                for entry_id, fields in items:
                    last_id = entry_id
                    ids.append(entry_id)
                    self._spawn(self._execute(fields))
            if ids:
                try:
                    await self.redis.xdel(stream, *ids)
                except REDIS_ERRORS:
                    # Read past them already (last_id); the stream's TTL takes them otherwise.
                    logger.warning("could not delete %d read command(s) from the stream", len(ids))

    async def _execute(self, fields: dict[str, str]) -> None:
        request_id = fields.get("id", "")
        started = time.time()
        deadline = started
        try:
            deadline = float(fields["deadline"])
            cp_id = fields["cp"]
            charge_point = self.connections.get(cp_id.lower())
            if charge_point is None or charge_point.link.identity.schema_name != fields.get("schema"):
                status, payload, error = "Offline", None, "charger not connected to this gateway"
            elif deadline <= started:
                status, payload, error = "Timeout", None, "expired before it could be sent"
            else:
                try:
                    status, payload, error = await asyncio.wait_for(
                        charge_point.command_call(fields["action"], json.loads(fields["payload"])), deadline - started
                    )
                except TimeoutError:
                    status, payload, error = "Timeout", None, "no answer from the charger in time"
        except (KeyError, ValueError) as exc:
            status, payload, error = "CallError", None, f"malformed command: {exc}"
        except ConnectionClosed:
            status, payload, error = "Offline", None, "connection closed during the call"
        except Exception as exc:  # never leave a sender waiting for nothing
            logger.exception("command %s failed in the gateway", request_id)
            status, payload, error = "CallError", None, f"gateway error: {exc}"
        reply = {"id": request_id, "status": status, "payload": payload, "error": error, "gateway": self.instance_id}
        reply_to = fields.get("reply")
        if reply_to:
            await self._reply(reply_to, json.dumps(reply, default=_json_default), give_up_at=deadline + REPLY_GRACE_S)

    async def _reply(self, reply_to: str, reply: str, *, give_up_at: float) -> bool:
        """Push one answer to the sender's list, again with backoff while Redis fails, until ``give_up_at``.

        The sender stops listening then (its Timeout is booked); a reply pushed twice (the
        first push went through but its answer was lost) is read once.
        """
        pause = REPLY_RETRY_FIRST_S
        while True:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.lpush(reply_to, reply)
                    pipe.expire(reply_to, REPLY_TTL_S)
                    await pipe.execute()
                return True
            except REDIS_ERRORS as exc:
                if time.time() + pause > give_up_at:
                    self.lost_replies += 1
                    logger.warning("a command's answer was lost: Redis %s until the sender's deadline", exc)
                    return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, REPLY_RETRY_CAP_S)

    def _close_db_threads(self) -> None:
        """Close each DB thread's connection (one barrier task per thread), then the pool."""
        workers = settings.GATEWAY_DB_THREADS
        barrier = threading.Barrier(workers)

        def close() -> None:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(5)
            connections.close_all()

        for future in [self.db.submit(close) for _ in range(workers)]:
            future.result(30)
        self.db.shutdown(wait=True)

    def _close_auth_threads(self) -> None:
        self.verifier.lookup_executor.submit(connections.close_all).result(30)
        self.verifier.lookup_executor.shutdown(wait=True)
        self.verifier.close()

    # -- lifetime ----------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Keep the instance entry alive; if it was gone, re-assert and re-announce every charger.

        On its own connection (``_beat_redis``), so it never waits for the main pool; each beat
        gives up after a third of the TTL and the next one follows within a second.
        """
        ttl = settings.GATEWAY_REGISTRY_TTL_S
        if self._beat_redis is None:
            raise RuntimeError("the gateway is not running")
        while True:
            pause = ttl / 3
            try:
                async with asyncio.timeout(ttl / 3):
                    async with self._beat_redis.pipeline(transaction=False) as pipe:
                        pipe.set(keys.instance_key(self.instance_id), f"{self.host}:{self.port}", ex=ttl, get=True)
                        pipe.expire(keys.command_stream_key(self.instance_id), ttl * 4)
                        previous, _ = await pipe.execute()
                self._redis_ok("the registry heartbeat")
                if previous is None and self.connections and not self._reasserting:
                    self._reasserting = True
                    self._spawn(self._reassert_chargers())
            except BEAT_ERRORS as exc:
                self._redis_failed("the registry heartbeat", exc)
                pause = HEARTBEAT_RETRY_S
            await asyncio.sleep(pause)

    def _redis_failed(self, what: str, error: BaseException) -> None:
        """Log the first failure of an outage (per activity); the retries that follow stay quiet."""
        if what not in self._redis_failing:
            self._redis_failing[what] = time.monotonic()
            logger.warning("%s failed: Redis %s; retrying", what, error or type(error).__name__)

    def _redis_ok(self, what: str) -> None:
        since = self._redis_failing.pop(what, None)
        if since is not None:
            logger.warning("%s works again after %.1f s", what, time.monotonic() - since)

    async def _reassert_chargers(self) -> None:
        """Our instance key had expired: the workers may have taken our chargers offline.

        Each charger gets its registry entry back and a new ``connected`` event (with its
        connection's own start, so a newer connection elsewhere still wins).
        """
        try:
            logger.warning(
                "registry entry was missing (Redis restarted or unreachable): re-asserting %d chargers",
                len(self.connections),
            )
            while True:
                charge_points = list(self.connections.values())
                try:
                    for start in range(0, len(charge_points), REASSERT_CHUNK):
                        async with self.redis.pipeline(transaction=False) as pipe:
                            for cp in charge_points[start : start + REASSERT_CHUNK]:
                                pipe.set(keys.charger_key(cp.link.charge_point_id), self.instance_id)
                            await pipe.execute()
                    break
                except REDIS_ERRORS:
                    logger.warning("re-asserting chargers failed; retrying", exc_info=True)
                    await asyncio.sleep(REASSERT_RETRY_S)
            for cp in charge_points:
                if self.connections.get(cp.link.charge_point_id.lower()) is cp:
                    cp.link.connected()
        finally:
            self._reasserting = False

    async def _write_registry(self) -> None:
        """Connects and disconnects reach Redis in one pipeline per tick, not one round trip each.

        Changes that Redis refused are kept (a newer change of the same charger wins) and sent
        again every ``REGISTRY_RETRY_S``, so a charger that connected during an outage is
        reachable for commands once Redis is back, not only after it reconnects.
        """
        while True:
            await self._registry_wake.wait()
            await asyncio.sleep(REGISTRY_TICK_S)
            self._registry_wake.clear()
            if not await self._flush_registry():
                await asyncio.sleep(REGISTRY_RETRY_S)
                self._registry_wake.set()

    async def _flush_registry(self) -> bool:
        changes, self._registry_changes = self._registry_changes, {}
        if not changes:
            return True
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for cp_id, connected in changes.values():
                    if connected:
                        pipe.set(keys.charger_key(cp_id), self.instance_id)
                    else:
                        await self._release(keys=[keys.charger_key(cp_id)], args=[self.instance_id], client=pipe)
                await pipe.execute()
        except REDIS_ERRORS as exc:
            self._redis_failed("updating the registry", exc)
            self._registry_changes = {**changes, **self._registry_changes}
            return False
        self._redis_ok("updating the registry")
        return True

    async def _watch_loop(self) -> None:
        """Log when the event loop was held up: every charger's answers wait meanwhile."""
        loop = asyncio.get_running_loop()
        started: dict[str, float] = {}

        def gc_timer(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                started["t"] = time.perf_counter()
            else:
                pause = time.perf_counter() - started.get("t", time.perf_counter())
                if pause > LAG_WARN_S:
                    generation = info.get("generation")
                    logger.warning("garbage collection (generation %s) took %.0f ms", generation, pause * 1000)

        gc.callbacks.append(gc_timer)
        reported = loop.time()
        try:
            while True:
                before = loop.time()
                await asyncio.sleep(LAG_PROBE_S)
                lag = loop.time() - before - LAG_PROBE_S
                if lag > LAG_WARN_S:
                    logger.warning("event loop held up for %.0f ms", lag * 1000)
                if loop.time() - reported >= ACK_REPORT_S:
                    reported = loop.time()
                    self._report_ack_waits()
        finally:
            gc.callbacks.remove(gc_timer)

    def _report_ack_waits(self) -> None:
        waits, self.telemetry.ack_waits = sorted(self.telemetry.ack_waits), []
        if waits:
            logger.info(
                "%d answers waited for the broker's confirm: p50 %.1f ms, p99 %.1f ms, max %.0f ms",
                len(waits),
                waits[len(waits) // 2] * 1000,
                waits[min(len(waits) - 1, len(waits) * 99 // 100)] * 1000,
                waits[-1] * 1000,
            )

    async def _tame_gc(self) -> None:
        """Keep garbage collections short: every pause holds every charger's answer.

        Thousands of connections are thousands of long-lived object graphs, and each message
        renews some of them (the coroutines and futures that wait for the next frame live
        until it comes, seconds later), so survivors pile up in the older generations and a
        collection of those walks them all (40-100 ms at 5,000 chargers, a quarter to half a
        second for a full one). So what has lived a second is frozen out of the collector's
        walk (``gc.freeze`` is O(1)), and young collections run often on a small generation
        (about a millisecond each) rather than rarely on a big one. Frozen cycles that die
        later are only reclaimed at the periodic unfreeze, so memory is bounded by the
        cycles that die within one release period (few: messages make next to none).
        """
        previous = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        loop = asyncio.get_running_loop()
        released = loop.time()
        try:
            while True:
                await asyncio.sleep(GC_FREEZE_S)
                if loop.time() - released > GC_RELEASE_S:
                    gc.unfreeze()
                    gc.collect()
                    released = loop.time()
                gc.freeze()  # O(1): moves the tracked objects out of the collector's walk
        finally:
            gc.set_threshold(*previous)
            gc.unfreeze()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Serve until ``stop`` is set (or forever); then close connections and drain telemetry."""
        stop = stop or asyncio.Event()
        # Schema checks inline: a thread hop per message costs more than the check itself.
        ocpp.messages.ASYNC_VALIDATION = False
        # The publisher thread would otherwise wait up to 5 ms for the GIL at each step of a
        # publish while the loop is busy; every data-bearing answer waits for that publish.
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=REDIS_CONNECTIONS,
            timeout=30,
            decode_responses=True,
            health_check_interval=30,
            **client_options(asyncio=True),
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        beat_pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=1, decode_responses=True, **client_options(asyncio=True)
        )
        self._beat_redis = aioredis.Redis(connection_pool=beat_pool)
        self._release = self._redis.register_script(RELEASE_SCRIPT)
        background = [
            asyncio.ensure_future(self.telemetry.run()),
            asyncio.ensure_future(self._heartbeat()),
            asyncio.ensure_future(self._consume_commands()),
            asyncio.ensure_future(self._write_registry()),
            asyncio.ensure_future(self._watch_loop()),
            asyncio.ensure_future(self._tame_gc()),
        ]
        try:
            async with serve(
                self.handle,
                self.host,
                self.port,
                process_request=self.process_request,
                select_subprotocol=self.select_subprotocol,
                subprotocols=[Subprotocol(p) for p in PROTOCOLS],
                max_size=settings.GATEWAY_MAX_FRAME_BYTES,
                compression=None,
                ping_interval=PING_INTERVAL_S,
                open_timeout=settings.GATEWAY_HANDSHAKE_TIMEOUT_S,
                ssl=self.ssl_context,
                backlog=2048,
            ) as server:
                if self.port == 0:
                    self.port = next(iter(server.sockets)).getsockname()[1]
                logger.info("gateway %s listening on %s:%d", self.instance_id, self.host, self.port)
                self.ready.set()
                await stop.wait()
                self.draining = True
                if settings.GATEWAY_DRAIN_S > 0:  # /readyz says 503 meanwhile: the balancer stops sending
                    await asyncio.sleep(settings.GATEWAY_DRAIN_S)
                for cp in list(self.connections.values()):
                    cp.closing_reason = "gateway shutting down"
                server.close(close_connections=True)
                await server.wait_closed()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._flush_registry()  # the closed connections' entries go with them
            if not await self.telemetry.drain(timeout_s=30):
                logger.error("gateway stopped with %d telemetry events unpublished", self.telemetry.waiting)
            self.telemetry.close()
            with contextlib.suppress(Exception):
                await self.redis.delete(keys.instance_key(self.instance_id), keys.command_stream_key(self.instance_id))
            await self.redis.aclose()
            if self._beat_redis is not None:
                await self._beat_redis.aclose()
            await asyncio.get_running_loop().run_in_executor(None, self._close_db_threads)
            await asyncio.get_running_loop().run_in_executor(None, self._close_auth_threads)
            sys.setswitchinterval(switch_interval)
