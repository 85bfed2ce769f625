"""The Redis clients survive a connection that dies under a command (a Redis restart, a network cut).

Redis is the machine's; the connection dies at a TCP proxy in front of it that the test cuts and
restores at once (``bench.tcpproxy``), while a blocking read is waiting on it.
"""

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis

from bench.tcpproxy import ThreadedTcpProxy
from evplatform.redis import client_options, get_redis, tenant_key

KEY = tenant_key("redis-test", "queue")


@pytest.fixture
def proxy() -> Iterator[ThreadedTcpProxy]:
    relay = ThreadedTcpProxy(("127.0.0.1", 6379))
    yield relay
    relay.close()


@pytest.fixture
def direct() -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=6379)
    client.delete(KEY)
    yield client
    client.delete(KEY)


def cut_then_push(proxy: ThreadedTcpProxy, direct: redis.Redis) -> threading.Thread:
    """While the caller waits in BLPOP: its connection dies, Redis is back at once, then a value comes."""

    def run() -> None:
        time.sleep(0.5)
        proxy.cut()
        proxy.restore()
        time.sleep(0.5)
        direct.rpush(KEY, "reply")

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_connection_that_dies_under_a_blocking_read_costs_a_retry_not_the_reply(proxy, direct, settings) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{proxy.port}/0"
    get_redis.cache_clear()
    try:
        client = get_redis()
        client.ping()
        pusher = cut_then_push(proxy, direct)
        popped = client.blpop([KEY], timeout=5)
        pusher.join()
    finally:
        get_redis.cache_clear()

    assert popped == (KEY.encode(), b"reply")


def test_the_gateways_asyncio_client_retries_the_same_way(proxy, direct) -> None:
    async def wait_for_reply() -> object:
        client = aioredis.Redis.from_url(f"redis://127.0.0.1:{proxy.port}/0", **client_options(asyncio=True))
        try:
            await client.ping()
            pusher = cut_then_push(proxy, direct)
            popped = await client.blpop([KEY], timeout=5)
            await asyncio.get_running_loop().run_in_executor(None, pusher.join)
            return popped
        finally:
            await client.aclose()

    assert asyncio.run(wait_for_reply()) == (KEY.encode(), b"reply")


def test_without_the_retry_policy_the_reply_is_lost(proxy, direct) -> None:
    """What the policy is for: redis-py's default gives up when the connection dies under BLPOP."""
    client = redis.Redis.from_url(f"redis://127.0.0.1:{proxy.port}/0")
    client.ping()
    pusher = cut_then_push(proxy, direct)
    with pytest.raises(redis.ConnectionError):
        client.blpop([KEY], timeout=5)
    pusher.join()
