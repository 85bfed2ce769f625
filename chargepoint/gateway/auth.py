"""Who is connecting: the charger's id and Basic-auth password checked against the registry.

Schema: public (``tenants.models.ChargePointIdentity``). This is the one place where the
platform goes from a charger id to its tenant: the result names the tenant schema and site
that all later work for the connection is addressed to.

Password hashes are PBKDF2 (about 0.3 s of CPU each), so a handshake is the cheapest way to
make the gateway burn CPU. The check is kept away from everything else:

- Hashes run on an executor of their own (``GATEWAY_AUTH_THREADS``, at a lower CPU priority),
  the registry row is read on a DB thread of its own: the tenant reads of connected chargers
  (DB threads) never queue behind a handshake. At most ``GATEWAY_AUTH_QUEUE`` checks wait or
  run; beyond that a handshake is refused at once (``overloaded``: HTTP 503, Retry-After)
  before any work.
- A successful (stored hash, presented secret) pair is remembered ``GATEWAY_AUTH_CACHE_S``, a
  failed one ``GATEWAY_AUTH_NEGATIVE_CACHE_S``, both keyed by an HMAC of the secret with a
  per-process key: a repeated guess costs no hash, a reconnect storm one hash per charger. A
  changed password has a new hash, so it takes effect at once; a deactivated identity is
  refused at once, because the registry row is read on every handshake.
- Failures are counted per charger id and per client address (in this process; each
  instance counts its own): ``GATEWAY_AUTH_ID_FAILURES`` / ``GATEWAY_AUTH_ADDRESS_FAILURES``
  within ``GATEWAY_AUTH_FAILURE_WINDOW_S`` start a cooldown of ``GATEWAY_AUTH_COOLDOWN_S``
  during which that id or address is refused without a lookup or hash (``throttled``: HTTP
  429, Retry-After). A charger whose secret succeeded recently still gets in during a
  cooldown or an overload (its check is a cache hit), so an attack on its id does not lock
  out the charger itself.
- An unknown, deactivated or wrong id takes as long as a wrong password: it hashes the
  presented secret too (as Django's ModelBackend does), so timing tells no ids apart.
"""

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.db import close_old_connections
from django_tenants.utils import get_public_schema_name, schema_context

from tenants.selectors import identity_find

logger = logging.getLogger("chargepoint.gateway.auth")
T = TypeVar("T")
CACHE_MAX_ENTRIES = 100_000
THROTTLE_MAX_KEYS = 100_000
HASH_THREAD_NICENESS = 10

# Handshake outcomes (the log and the ``evp_gateway_handshakes_total`` metric).
OK = "ok"
WRONG_PASSWORD = "wrong_password"  # noqa: S105 - an outcome's name
UNKNOWN = "unknown"
THROTTLED = "throttled"
OVERLOADED = "overloaded"


@dataclass(frozen=True)
class ChargerIdentity:
    """A charger the registry vouches for, and where its data belongs."""

    charge_point_id: str  # as registered (the charger may send another case)
    schema_name: str
    site_slug: str


@dataclass(frozen=True)
class Verdict:
    identity: ChargerIdentity | None
    reason: str  # for the log when refused
    outcome: str = OK
    retry_after_s: int = 0  # throttled or overloaded: when to come back


@dataclass(frozen=True)
class _Registered:
    identity: ChargerIdentity | None
    password_hash: str
    reason: str


def _registry_lookup(charge_point_id: str) -> _Registered:
    """Runs in the auth DB thread: the registry row, in public."""
    close_old_connections()
    with schema_context(get_public_schema_name()):
        row = identity_find(charge_point_id=charge_point_id)
        if row is None:
            return _Registered(None, "", "unknown charge point id")
        if not row.is_active:
            return _Registered(None, "", "identity is deactivated")
        if not row.tenant.is_active:
            return _Registered(None, "", "organisation is deactivated")
        identity = ChargerIdentity(row.charge_point_id, row.tenant.schema_name, row.site_slug)
        return _Registered(identity, row.password_hash, "")


def _lower_priority() -> None:
    """Hash threads yield the CPU to the event loop and the DB threads (Linux: per thread)."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not permitted: same priority then
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_THREAD_NICENESS)


def _hash_unknown(password: str) -> bool:
    """As long as a wrong password against a stored hash: one hash at the default cost."""
    make_password(password)
    return False


class FailureThrottle:
    """Failures per key within a window; at ``limit`` the key is refused for a cooldown."""

    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}
        self._blocked: dict[str, float] = {}

    def retry_after(self, key: str, now: float) -> float:
        """Seconds the key is still refused (0: not refused)."""
        until = self._blocked.get(key)
        if until is None:
            return 0.0
        if until <= now:
            del self._blocked[key]
            return 0.0
        return until - now

    def failed(self, key: str, now: float, *, limit: int, window_s: float, cooldown_s: float) -> None:
        if limit <= 0:
            return
        if len(self._failures) >= THROTTLE_MAX_KEYS:
            self._prune(now, window_s)
        times = self._failures.setdefault(key, deque())
        times.append(now)
        while times and times[0] <= now - window_s:
            times.popleft()
        if len(times) >= limit:
            self._blocked[key] = now + cooldown_s
            times.clear()

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def clear(self) -> None:
        self._failures.clear()
        self._blocked.clear()

    def _prune(self, now: float, window_s: float) -> None:
        self._failures = {k: v for k, v in self._failures.items() if v and v[-1] > now - window_s}
        self._blocked = {k: v for k, v in self._blocked.items() if v > now}
        if len(self._failures) >= THROTTLE_MAX_KEYS:
            self._failures.clear()


class _ExpiringSet:
    """Keys remembered until a deadline, bounded in size."""

    def __init__(self) -> None:
        self._until: dict[object, float] = {}

    def __contains__(self, key: object) -> bool:
        until = self._until.get(key)
        return until is not None and until > time.monotonic()

    def add(self, key: object, seconds: float) -> None:
        if seconds <= 0:
            return
        now = time.monotonic()
        if len(self._until) >= CACHE_MAX_ENTRIES:
            self._until = {k: v for k, v in self._until.items() if v > now}
            if len(self._until) >= CACHE_MAX_ENTRIES:
                self._until.clear()
        self._until[key] = now + seconds

    def clear(self) -> None:
        self._until.clear()


class CredentialVerifier:
    """Handshake checks: registry row, password, caches and throttles (see module doc)."""

    def __init__(self, *, hash_executor: Executor | None = None, lookup_executor: Executor | None = None) -> None:
        self.hash_executor = hash_executor or ThreadPoolExecutor(
            max_workers=settings.GATEWAY_AUTH_THREADS, thread_name_prefix="gw-auth-hash", initializer=_lower_priority
        )
        # One thread, one DB connection: registry reads never take a tenant read's thread.
        self.lookup_executor = lookup_executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="gw-auth-db")
        self._key = secrets.token_bytes(32)
        self._verified = _ExpiringSet()  # (stored hash, secret HMAC)
        self._refused = _ExpiringSet()  # (stored hash or "", secret HMAC)
        self._trusted = _ExpiringSet()  # (charger id, secret HMAC) that succeeded: through throttles
        self._inflight: dict[tuple[str, bytes], asyncio.Future[bool]] = {}
        self.by_id = FailureThrottle()
        self.by_address = FailureThrottle()
        self.pending = 0  # checks waiting or running
        self.hashes = 0  # hashes computed (the negative cache and throttles keep it down)

    def reset(self) -> None:
        """Forget caches and throttles (tests; an operator clearing a lockout restarts instead)."""
        for store in (self._verified, self._refused, self._trusted, self.by_id, self.by_address):
            store.clear()

    def close(self) -> None:
        self.hash_executor.shutdown(wait=True)

    async def verify(self, charge_point_id: str, password: str, address: str = "") -> Verdict:
        digest = hmac.new(self._key, password.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()
        id_key = charge_point_id.lower()
        trusted = (id_key, digest) in self._trusted
        now = time.monotonic()
        if not trusted:
            wait = max(self.by_id.retry_after(id_key, now), self.by_address.retry_after(address, now) if address else 0)
            if wait > 0:
                return Verdict(None, "too many failed attempts", THROTTLED, max(1, round(wait)))
            if self.pending >= settings.GATEWAY_AUTH_QUEUE:
                return Verdict(None, "password checks queue full", OVERLOADED, settings.GATEWAY_AUTH_RETRY_AFTER_S)
        self.pending += 1
        try:
            registered = await self._run(self.lookup_executor, _registry_lookup, charge_point_id)
            stored = registered.password_hash if registered.identity is not None else ""
            ok = await self._password_matches(stored, password, digest)
        finally:
            self.pending -= 1
        if ok and registered.identity is not None:
            self._trusted.add((id_key, digest), settings.GATEWAY_AUTH_CACHE_S)
            self.by_id.forget(id_key)
            return Verdict(registered.identity, "")
        now = time.monotonic()
        limits = {"window_s": settings.GATEWAY_AUTH_FAILURE_WINDOW_S, "cooldown_s": settings.GATEWAY_AUTH_COOLDOWN_S}
        self.by_id.failed(id_key, now, limit=settings.GATEWAY_AUTH_ID_FAILURES, **limits)
        if address:
            self.by_address.failed(address, now, limit=settings.GATEWAY_AUTH_ADDRESS_FAILURES, **limits)
        if registered.identity is None:
            return Verdict(None, registered.reason, UNKNOWN)
        return Verdict(None, "wrong password", WRONG_PASSWORD)

    async def _run(self, executor: Executor, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    async def _password_matches(self, password_hash: str, password: str, digest: bytes) -> bool:
        """``password_hash`` "" (no such identity): hashed all the same, never a match."""
        key = (password_hash, digest)
        if key in self._verified:
            return True
        if key in self._refused:
            return False
        pending = self._inflight.get(key)
        if pending is not None:  # a reconnect storm, or one guess sent many times: one hash for all
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            self.hashes += 1
            if password_hash:
                ok = await self._run(self.hash_executor, check_password, password, password_hash)
            else:
                ok = await self._run(self.hash_executor, _hash_unknown, password)
            future.set_result(ok)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the waiters get it, no "never retrieved" warning
            raise
        finally:
            del self._inflight[key]
        if ok:
            self._verified.add(key, settings.GATEWAY_AUTH_CACHE_S)
        else:
            self._refused.add(key, settings.GATEWAY_AUTH_NEGATIVE_CACHE_S)
        return ok
