"""Telemetry hand-off: events gathered per tenant schema and sent to Celery in batches.

Schema: none here; each batch is one ``chargepoint.tasks.telemetry_ingest`` task that carries
its tenant schema in the ``_schema_name`` header, so the worker writes it in that schema.

An acknowledgement is only as good as what stands behind it: ``add`` returns the future of
the batch that holds the event, and the handlers of data-bearing messages (meter values,
transactions, status) answer the charger only once that future says the batch is on the
broker. The event loop only appends to a list; a batch closes ``window_s`` after its first
event (or sooner when ``max_events`` wait) and goes to one publisher thread, which sends it
with publisher confirms (RabbitMQ durable queue, persistent message). So a reading the
gateway acknowledged survives a hard kill of the gateway: it is RabbitMQ's by then.

A batch that cannot be published (the broker restarts or is unreachable) stays first in line
and is retried with backoff until it is on the broker; its senders keep waiting (the handler
gives up after a bound and answers InternalError, so the charger retries, see ``link``).
Memory is the limit: past ``max_backlog`` events the oldest batches are dropped with an error
in the log, and their senders are told they were not stored, rather than the gateway dying.

Every task costs the worker a fixed overhead (transaction, row locks, tenant switch), so when
the workers fall behind, small batches make them fall further behind. With a ``queue_depth``
probe the publisher looks at the telemetry queue about once a second and stretches the
window by ``WINDOW_S_PER_WAITING_TASK`` for each task waiting there, up to ``max_window_s``:
answers take a little longer while the workers catch up, instead of seconds longer later.
"""

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

logger = logging.getLogger("chargepoint.gateway.telemetry")

Event = dict[str, Any]
Publish = Callable[[str, list[Event]], None]
RETRY_MAX_SECONDS = 2.0
WINDOW_S_PER_WAITING_TASK = 0.01
DEPTH_PROBE_S = 1.0
# A silent broker (a cut without a reset) must not hold the publisher forever.
CONFIRM_TIMEOUT_S = 10.0


def publish_to_celery(schema_name: str, events: list[Event]) -> None:
    """Send one batch as a tenant task and wait for the broker's confirm (publisher thread)."""
    from chargepoint.tasks import telemetry_ingest

    telemetry_ingest.apply_async(
        kwargs={"events": events},
        headers={"_schema_name": schema_name},
        retry=True,
        retry_policy={"max_retries": 1, "interval_start": 0.2, "interval_step": 0.3, "interval_max": 0.5},
        confirm_timeout=CONFIRM_TIMEOUT_S,
    )


def broker_reachable() -> None:
    """Raise unless a broker connection answers (readiness probe; runs in a thread)."""
    from evplatform.celery import app

    with app.pool.acquire(block=True, timeout=2) as connection:
        connection.ensure_connection(max_retries=1, timeout=2)


def telemetry_queue_depth() -> int:
    """Tasks waiting in the telemetry queue (publisher thread; one passive declare)."""
    from evplatform.celery import QUEUE_TELEMETRY, app, queue_name

    with app.pool.acquire(block=True, timeout=5) as connection:
        _name, count, _consumers = connection.default_channel.queue_declare(
            queue=queue_name(QUEUE_TELEMETRY), passive=True
        )
    return int(count)


class Batch:
    """One schema's events of one window, and the future their senders wait on.

    ``stored`` becomes True once the broker confirmed the batch, False if it was dropped.
    """

    __slots__ = ("events", "schema_name", "stored")

    def __init__(self, schema_name: str, stored: "asyncio.Future[bool]") -> None:
        self.schema_name = schema_name
        self.events: list[Event] = []
        self.stored = stored


def _settle(future: "asyncio.Future[bool]", value: bool) -> None:
    if not future.done():
        future.set_result(value)


class TelemetryBuffer:
    def __init__(
        self,
        *,
        publish: Publish,
        window_s: float,
        max_events: int,
        max_backlog: int = 2_000_000,
        max_window_s: float | None = None,
        queue_depth: Callable[[], int] | None = None,
    ) -> None:
        self._publish = publish
        self._min_window_s = window_s
        self._max_window_s = max(window_s, max_window_s or window_s)
        self._window_s = window_s
        self._queue_depth = queue_depth
        self._probed_at = 0.0
        self._max_events = max_events
        self._max_backlog = max_backlog
        self._current: dict[str, Batch] = {}
        self._count = 0
        self._opened_at = 0.0
        self._opened = asyncio.Event()
        self._full = asyncio.Event()
        self._backlog: deque[Batch] = deque()
        self._backlog_events = 0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gw-publish")
        self.added = 0  # events taken, ever
        self.published_batches = 0
        self.published_events = 0
        self.failures = 0
        self._failing = False
        # Seconds data-bearing answers waited for their batch's confirm (the gateway logs and clears it).
        self.ack_waits: list[float] = []

    def add(self, schema_name: str, event: Event) -> "asyncio.Future[bool]":
        """Queue one event; the future resolves when its batch is on the broker (True)."""
        batch = self._current.get(schema_name)
        if batch is None:
            batch = self._current[schema_name] = Batch(schema_name, asyncio.get_running_loop().create_future())
        batch.events.append(event)
        self.added += 1
        self._count += 1
        if self._count == 1:
            self._opened_at = time.monotonic()
            self._opened.set()
        if self._count >= self._max_events:
            self._full.set()
        return batch.stored

    @property
    def failing(self) -> bool:
        """The last publish failed (the broker is away): retried until it works."""
        return self._failing

    @property
    def waiting(self) -> int:
        return self._count + self._backlog_events

    async def run(self) -> None:
        """Flush forever (cancel to stop; then call ``drain``).

        A window opens with its first event and closes ``window_s`` later or when full; while
        the publisher is busy with one window the next one gathers (group commit), so a slow
        broker makes batches bigger, not more numerous.
        """
        while True:
            if self._backlog:  # a failed publish: try again after a window even if nothing new came
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._opened.wait(), self._window_s)
            else:
                await self._opened.wait()
            remaining = self._opened_at + self._window_s - time.monotonic()
            if remaining > 0 and not self._full.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), remaining)
            await self.flush()

    async def flush(self) -> None:
        self._take_current()
        if self._backlog:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._thread, self._publish_backlog, loop)

    async def drain(self, timeout_s: float) -> bool:
        """Publish everything left (at shutdown); True when nothing is left."""
        deadline = time.monotonic() + timeout_s
        while self.waiting and time.monotonic() < deadline:
            await self.flush()
            if self.waiting:
                await asyncio.sleep(0.5)
        return not self.waiting

    def _take_current(self) -> None:
        self._opened.clear()
        self._full.clear()
        if not self._count:
            return
        for batch in self._current.values():
            self._backlog.append(batch)
            self._backlog_events += len(batch.events)
        self._current = {}
        self._count = 0
        while self._backlog_events > self._max_backlog:
            dropped = self._backlog.popleft()
            self._backlog_events -= len(dropped.events)
            _settle(dropped.stored, False)
            logger.error("telemetry backlog full: dropped %d events of %s", len(dropped.events), dropped.schema_name)

    @property
    def window_s(self) -> float:
        return self._window_s

    def _adapt_window(self) -> None:
        """Publisher thread: stretch the window while tasks wait in the queue (see module doc)."""
        now = time.monotonic()
        if self._queue_depth is None or now - self._probed_at < DEPTH_PROBE_S:
            return
        self._probed_at = now
        try:
            depth = self._queue_depth()
        except Exception:  # the broker is away: the publish below finds out and retries
            return
        window_s = min(self._max_window_s, self._min_window_s + depth * WINDOW_S_PER_WAITING_TASK)
        if window_s > self._window_s * 2:
            logger.info("%d telemetry tasks waiting: batch window %.0f ms", depth, window_s * 1000)
        elif window_s < self._window_s / 2:
            logger.debug("%d telemetry tasks waiting: batch window %.0f ms", depth, window_s * 1000)
        self._window_s = window_s

    def _publish_backlog(self, loop: asyncio.AbstractEventLoop) -> None:
        """Publisher thread: send batches in order; stop at the first failure (retried later)."""
        self._adapt_window()
        delay = 0.5
        while self._backlog:
            batch = self._backlog[0]
            try:
                self._publish(batch.schema_name, batch.events)
            except Exception as exc:
                self.failures += 1
                logger.warning(
                    "publishing %d telemetry events of %s failed (%s); retrying in %.1fs",
                    len(batch.events),
                    batch.schema_name,
                    exc,
                    delay,
                    exc_info=not self._failing,  # the first failure of an outage in full, then a line each
                )
                self._failing = True
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                if delay >= RETRY_MAX_SECONDS:
                    return  # let the loop take new events into the backlog, then try again
                continue
            self._failing = False
            self._backlog.popleft()
            self._backlog_events -= len(batch.events)
            self.published_batches += 1
            self.published_events += len(batch.events)
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(_settle, batch.stored, True)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
