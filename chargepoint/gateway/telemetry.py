"""Telemetry hand-off: events gathered per tenant schema and sent to Celery in batches.

Schema: none here; each batch is one ``chargepoint.tasks.telemetry_ingest`` task that carries
its tenant schema in the ``_schema_name`` header, so the worker writes it in that schema.

The event loop only appends to a list. Every ``window_s`` (or sooner when ``max_events`` wait)
the batches go to one publisher thread, which sends them with publisher confirms (RabbitMQ
durable queue, persistent message). A batch that cannot be published (the broker restarts)
stays first in line and is retried with backoff until it is on the broker: a reading the
gateway acknowledged is not dropped. Memory is the limit: past ``max_backlog`` events the
oldest batches are dropped with an error in the log, rather than the gateway dying.
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
RETRY_MAX_SECONDS = 10.0


def publish_to_celery(schema_name: str, events: list[Event]) -> None:
    """Send one batch as a tenant task (runs in the publisher thread)."""
    from chargepoint.tasks import telemetry_ingest

    telemetry_ingest.apply_async(
        kwargs={"events": events},
        headers={"_schema_name": schema_name},
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0},
    )


class TelemetryBuffer:
    def __init__(self, *, publish: Publish, window_s: float, max_events: int, max_backlog: int = 2_000_000) -> None:
        self._publish = publish
        self._window_s = window_s
        self._max_events = max_events
        self._max_backlog = max_backlog
        self._current: dict[str, list[Event]] = {}
        self._count = 0
        self._backlog: deque[tuple[str, list[Event]]] = deque()
        self._backlog_events = 0
        self._wake = asyncio.Event()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gw-publish")
        self.published_batches = 0
        self.published_events = 0
        self.failures = 0

    def add(self, schema_name: str, event: Event) -> None:
        batch = self._current.get(schema_name)
        if batch is None:
            batch = self._current[schema_name] = []
        batch.append(event)
        self._count += 1
        if self._count >= self._max_events:
            self._wake.set()

    @property
    def waiting(self) -> int:
        return self._count + self._backlog_events

    async def run(self) -> None:
        """Flush forever (cancel to stop; then call ``drain``)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._window_s)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        self._take_current()
        if self._backlog:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._thread, self._publish_backlog)

    async def drain(self, timeout_s: float) -> bool:
        """Publish everything left (at shutdown); True when nothing is left."""
        deadline = time.monotonic() + timeout_s
        while self.waiting and time.monotonic() < deadline:
            await self.flush()
            if self.waiting:
                await asyncio.sleep(0.5)
        return not self.waiting

    def _take_current(self) -> None:
        if not self._count:
            return
        for schema_name, events in self._current.items():
            self._backlog.append((schema_name, events))
            self._backlog_events += len(events)
        self._current = {}
        self._count = 0
        while self._backlog_events > self._max_backlog:
            schema_name, events = self._backlog.popleft()
            self._backlog_events -= len(events)
            logger.error("telemetry backlog full: dropped %d events of %s", len(events), schema_name)

    def _publish_backlog(self) -> None:
        """Publisher thread: send batches in order; stop at the first failure (retried later)."""
        delay = 0.5
        while self._backlog:
            schema_name, events = self._backlog[0]
            try:
                self._publish(schema_name, events)
            except Exception:
                self.failures += 1
                logger.warning(
                    "publishing %d telemetry events of %s failed; retrying in %.1fs",
                    len(events),
                    schema_name,
                    delay,
                    exc_info=True,
                )
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                if delay >= RETRY_MAX_SECONDS:
                    return  # let the loop take new events into the backlog, then try again
                continue
            self._backlog.popleft()
            self._backlog_events -= len(events)
            self.published_batches += 1
            self.published_events += len(events)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
