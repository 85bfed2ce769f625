"""One Redis client per process for locks, coalescing keys and the gateway registry.

Redis keeps nothing durable here (it may run without persistence): only state that can be rebuilt
or lost without harm lives in it. Keys that belong to a tenant carry its schema name.
"""

from functools import lru_cache

import redis
from django.conf import settings


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, health_check_interval=30)


def tenant_key(schema_name: str, *parts: object) -> str:
    """A Redis key scoped to one deployment and tenant schema, e.g. ``evp:acme:rebalance:12``.

    The deployment prefix (``CELERY_QUEUE_PREFIX``) keeps the tests and a running `make run`
    apart on one Redis, as it does for their queues.
    """
    return ":".join([f"evp{settings.CELERY_QUEUE_PREFIX}", schema_name, *(str(p) for p in parts)])
