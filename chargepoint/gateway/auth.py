"""Who is connecting: the charger's id and Basic-auth password checked against the registry.

Schema: public (``tenants.models.ChargePointIdentity``). This is the one place where the
platform goes from a charger id to its tenant: the result names the tenant schema and site
that all later work for the connection is addressed to.

Password hashes are PBKDF2 (about 0.3 s of CPU each): the check runs in a DB thread, never on
the event loop, and a successful check of (stored hash, presented secret) is remembered for a
short while, keyed by an HMAC of the secret with a per-process key. A changed password has a
new hash, so it takes effect at once; a deactivated identity is refused at once, because the
registry row is read on every handshake.
"""

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from concurrent.futures import Executor
from dataclasses import dataclass

from django.contrib.auth.hashers import check_password
from django.db import close_old_connections
from django_tenants.utils import get_public_schema_name, schema_context

from tenants.selectors import identity_find

logger = logging.getLogger("chargepoint.gateway.auth")
CACHE_MAX_ENTRIES = 100_000


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


@dataclass(frozen=True)
class _Registered:
    identity: ChargerIdentity | None
    password_hash: str
    reason: str


def _registry_lookup(charge_point_id: str) -> _Registered:
    """Runs in a DB thread: the registry row, in public."""
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


class CredentialVerifier:
    def __init__(self, *, executor: Executor, cache_seconds: float) -> None:
        self._executor = executor
        self._cache_seconds = cache_seconds
        self._key = secrets.token_bytes(32)
        self._verified: dict[tuple[str, bytes], float] = {}
        self._inflight: dict[tuple[str, bytes], asyncio.Future[bool]] = {}

    async def verify(self, charge_point_id: str, password: str) -> Verdict:
        loop = asyncio.get_running_loop()
        registered = await loop.run_in_executor(self._executor, _registry_lookup, charge_point_id)
        if registered.identity is None:
            return Verdict(None, registered.reason)
        ok = await self._password_matches(registered.password_hash, password)
        return Verdict(registered.identity if ok else None, "" if ok else "wrong password")

    async def _password_matches(self, password_hash: str, password: str) -> bool:
        digest = hmac.new(self._key, password.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()
        key = (password_hash, digest)
        now = time.monotonic()
        expires = self._verified.get(key)
        if expires is not None and expires > now:
            return True
        pending = self._inflight.get(key)
        if pending is not None:  # a reconnect storm: one hash computation for all of them
            return await asyncio.shield(pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._inflight[key] = future
        try:
            ok = await loop.run_in_executor(self._executor, check_password, password, password_hash)
            future.set_result(ok)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the waiters get it, no "never retrieved" warning
            raise
        finally:
            del self._inflight[key]
        if ok:
            if len(self._verified) >= CACHE_MAX_ENTRIES:
                self._verified = {k: v for k, v in self._verified.items() if v > now}
                if len(self._verified) >= CACHE_MAX_ENTRIES:
                    self._verified.clear()
            self._verified[key] = now + self._cache_seconds
        return ok
