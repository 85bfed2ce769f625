"""A TCP relay that can be cut and restored: how tests and the fault benchmark take a service away.

Put it in front of RabbitMQ, Redis or PostgreSQL and point one process's URL at it; ``cut``
drops its connections and refuses new ones, ``restore`` listens again on the same port. The
machine's services themselves are never stopped, so other users of them do not notice. It runs
on an asyncio loop the caller owns (``await proxy.start()``), or on a thread of its own
(``ThreadedTcpProxy``) for synchronous code.
"""

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpProxy:
    """Relays 127.0.0.1:``port`` to ``upstream`` until cut."""

    def __init__(self, upstream: tuple[str, int], port: int | None = None) -> None:
        self.upstream = upstream
        self.port = port or free_port()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    @property
    def is_cut(self) -> bool:
        return self.server is None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    async def start(self) -> None:
        """Listen (again): new connections reach the upstream service."""
        if self.server is None:
            self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)

    restore = start

    async def cut(self) -> None:
        """Drop every relayed connection and stop listening: the service is gone for its clients."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()


class ThreadedTcpProxy:
    """A ``TcpProxy`` on a loop of its own thread, for synchronous callers."""

    def __init__(self, upstream: tuple[str, int], port: int | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="tcp-proxy")
        self.thread.start()
        self.proxy = TcpProxy(upstream, port)
        self._run(self.proxy.start())

    @property
    def port(self) -> int:
        return self.proxy.port

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def cut(self) -> None:
        self._run(self.proxy.cut())

    def restore(self) -> None:
        self._run(self.proxy.start())

    def close(self) -> None:
        self._run(self.proxy.cut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
