"""Requesting balancing runs of a site, and starting each under the site's lock. Schema: tenant.

Kept apart from the writes (``balancing.services``): many callers that write nothing ask for a
run too (the charger app's events, the site meter, resyncs, the admin, the beat sweep), and the
run itself (``balancing.runs``) asks for another when it cannot finish. Requests are coalesced in
Redis, so a burst of changes becomes one run; each site has one run at a time under its lock,
Redis's and, always, a PostgreSQL advisory lock, so runs stay apart while Redis is unreachable.
See the README, "How balancing works" and "Closed loop".
"""

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import LockError

from balancing.models import BalancingRun, Site
from balancing.push import GatewayPusher, Pusher, push_timeout_s
from chargepoint.commands import REPLY_GRACE_S
from evplatform.redis import REDIS_ERRORS, get_redis, redis_outage, tenant_key
from evplatform.services import active_schema, require_tenant_schema

logger = logging.getLogger(__name__)

# A pending request older than this is forgotten, so a lost task cannot block a site forever.
PENDING_TTL_S = 120
# The site's Redis lock expires (a worker that died holding it) after the run's pushes could
# have taken their longest, see ``run_lock_ttl_s``; a live run releases it as soon as it ends.
RUN_LOCK_BATCHES = 3  # lowerings, raises, and the pushes of a re-solve
RUN_LOCK_MARGIN_S = 30.0
RUN_LOCK_WAIT_S = 2.0
RUN_LOCK_POLL_S = 0.1
# A run that could not reach the chargers because Redis was down is run again this much later
# (seconds), until Redis is back, so a site does not wait for the beat sweep after an outage.
REDIS_DOWN_RETRY_S = 10.0


def site_rebalance_request(*, site_id: int, reason: str) -> None:
    """Ask for a balancing run of a site soon; a burst of requests becomes one run.

    Call it in the site's tenant schema. The request takes effect when the current transaction
    commits (so the run reads what the caller wrote, and a rolled-back change asks for
    nothing); while a run is already pending, further requests join it (a key in Redis).
    While Redis is unreachable the request goes straight to the broker, still after the
    coalescing countdown but without joining: every request is a run then (the site's lock
    keeps them one at a time), and the beat sweep keeps working.
    """
    require_tenant_schema("site_rebalance_request")
    schema = active_schema()
    reason = reason[:100]

    def send() -> None:
        key = tenant_key(schema, "rebalance-pending", site_id)
        pending_set = False
        if not redis_outage.skip():
            try:
                pending_set = bool(get_redis().set(key, reason, nx=True, ex=PENDING_TTL_S))
            except REDIS_ERRORS as exc:
                redis_outage.failed(exc, "rebalance requests go straight to the broker (not coalesced)")
            else:
                redis_outage.answered()
                if not pending_set:
                    return  # the pending run will see this change too
        try:
            _balance_site_publish(schema=schema, site_id=site_id, reason=reason)
        except Exception:
            if pending_set:  # else every request would join a run that was never sent
                _pending_forget(schema=schema, site_id=site_id)
            raise

    transaction.on_commit(send)


def site_balance(*, site_id: int, reason: str, pusher: Pusher | None = None) -> BalancingRun | None:
    """Run balancing for one site under its lock (one run per site at a time).

    Returns the run, or None when the site no longer exists or another run holds the lock (then
    a new request is queued, so the change that caused this call is not lost). The lock is
    Redis's and, always, a PostgreSQL advisory lock of the site: with Redis unreachable (or
    reachable for some workers only) the advisory lock alone still keeps runs apart, and a
    run still happens. A run whose pushes failed while Redis was down asks for another one
    ``REDIS_DOWN_RETRY_S`` later, so the site is balanced soon after Redis is back.
    """
    from balancing.runs import site_balance_run

    require_tenant_schema("site_balance")
    schema = active_schema()
    pending_forgotten = _pending_forget(schema=schema, site_id=site_id)
    site = Site.objects.filter(pk=site_id).first()
    if site is None:
        logger.info("site %s is gone; nothing to balance", site_id)
        return None
    with _site_run_lock(schema=schema, site_id=site_id) as held:
        if not held:
            site_rebalance_request(site_id=site_id, reason=f"retry: {reason}")
            return None
        try:
            run = site_balance_run(site=site, reason=reason, pusher=pusher or GatewayPusher())
        finally:
            if not pending_forgotten:  # Redis was down at the start: requests would join a run that is over
                _pending_forget(schema=schema, site_id=site_id)
    if run.status != BalancingRun.Status.OK and redis_outage.is_down:
        # Its pushes could not reach the chargers (their command path is Redis): again soon.
        try:
            _balance_site_publish(
                schema=schema, site_id=site_id, reason="retry: Redis unreachable", countdown_s=REDIS_DOWN_RETRY_S
            )
        except KombuOperationalError:
            logger.exception("site %s: the broker is unreachable too; the beat sweep will run it", site_id)
    return run


def run_lock_ttl_s() -> float:
    """How long the site's Redis lock lives unless released: a run's pushes at their longest, plus margin."""
    return RUN_LOCK_BATCHES * (push_timeout_s() + REPLY_GRACE_S) + RUN_LOCK_MARGIN_S


def _balance_site_publish(*, schema: str, site_id: int, reason: str, countdown_s: float | None = None) -> None:
    from balancing.tasks import balance_site

    balance_site.apply_async(
        kwargs={"site_id": site_id, "reason": reason},
        countdown=settings.BALANCING_COALESCE_SECONDS if countdown_s is None else countdown_s,
        headers={"_schema_name": schema},
    )


def _pending_forget(*, schema: str, site_id: int) -> bool:
    """Delete the site's pending-request key; False when Redis did not answer."""
    if redis_outage.skip():
        return False
    try:
        get_redis().delete(tenant_key(schema, "rebalance-pending", site_id))
    except REDIS_ERRORS as exc:
        redis_outage.failed(exc, "balancing runs lock their site in PostgreSQL")
        return False
    redis_outage.answered()
    return True


def site_advisory_lock_key(*, schema: str, site_id: int) -> int:
    """The PostgreSQL advisory lock key (signed 64-bit) of one site's runs, from schema and site id."""
    digest = hashlib.blake2b(f"evp:balance-lock:{schema}:{site_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def _site_run_lock(*, schema: str, site_id: int) -> Iterator[bool]:
    """Hold the site's run lock for the ``with`` block; yields False when another run holds it.

    Redis's lock first (when Redis answers), then the site's PostgreSQL advisory lock, each
    waited for up to ``RUN_LOCK_WAIT_S``. The advisory lock is a session lock of this
    connection: released in ``finally``, or by PostgreSQL when a dead worker's connection goes.
    """
    redis_lock = None
    if not redis_outage.skip():
        candidate = get_redis().lock(tenant_key(schema, "balance-lock", site_id), timeout=run_lock_ttl_s())
        try:
            acquired = candidate.acquire(blocking=True, blocking_timeout=RUN_LOCK_WAIT_S)
        except REDIS_ERRORS as exc:
            redis_outage.failed(exc, "balancing runs lock their site in PostgreSQL")
        else:
            redis_outage.answered()
            if not acquired:
                yield False
                return
            redis_lock = candidate
    key = site_advisory_lock_key(schema=schema, site_id=site_id)
    try:
        if not _advisory_lock_try(key=key, wait_s=RUN_LOCK_WAIT_S):
            yield False
            return
        try:
            yield True
        finally:
            _advisory_unlock(key=key)
    finally:
        if redis_lock is not None:
            _redis_lock_release(redis_lock, site_id=site_id)


def _advisory_lock_try(*, key: int, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            row = cursor.fetchone()
        if row is not None and row[0]:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(RUN_LOCK_POLL_S)


def _advisory_unlock(*, key: int) -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
    except DatabaseError:
        # The connection broke (or its transaction did): PostgreSQL drops the lock with the session.
        logger.warning("could not release advisory lock %s; it goes with the connection", key, exc_info=True)


def _redis_lock_release(lock: Any, *, site_id: int) -> None:
    try:
        lock.release()
    except LockError:
        logger.warning("site %s: the Redis run lock had expired before the run ended", site_id)
    except REDIS_ERRORS:
        logger.warning("site %s: Redis unreachable at the end of the run; its lock expires by itself", site_id)
