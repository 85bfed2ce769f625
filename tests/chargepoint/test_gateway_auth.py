"""Handshakes under attack: password checks kept off the tenant reads, bounded, cached, throttled, and
unknown ids refused as slowly as wrong passwords.

These tests hash with PBKDF2 (the production hasher; the test settings use MD5 elsewhere), on
identities of their own, against a gateway of their own whose throttles start clean each test.
"""

import asyncio
import base64
import statistics
import time
from collections.abc import Iterator

import pytest
import websockets
from django.contrib.auth.hashers import make_password
from django.db import connection
from django.test import override_settings
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context
from ocpp.messages import CallResult
from websockets.exceptions import InvalidStatus

from tenants.models import ChargePointIdentity
from tests.chargepoint.conftest import PASSWORD, SITE_SLUG, roundtrip, start_gateway, stop_gateway, ws_connect

pytestmark = pytest.mark.django_db  # the session's test database (the gateway's threads read it)
SLOW_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher", "django.contrib.auth.hashers.MD5PasswordHasher"]
SLOW_IDS = [f"GWAUTH-{n}" for n in range(1, 13)]


@pytest.fixture(scope="module")
def slow_ids(gw_fleet, tenant, django_db_blocker) -> Iterator[list[str]]:
    """Identities whose stored hash is PBKDF2: a wrong password costs a real hash."""
    with django_db_blocker.unblock(), override_settings(PASSWORD_HASHERS=SLOW_HASHERS):
        password_hash = make_password(PASSWORD)
        with schema_context(get_public_schema_name()):
            for cp in SLOW_IDS:
                ChargePointIdentity.objects.update_or_create(
                    charge_point_id=cp,
                    defaults={
                        "tenant": tenant,
                        "site_slug": SITE_SLUG,
                        "password_hash": password_hash,
                        "password_changed_at": timezone.now(),
                    },
                )
        connection.set_schema_to_public()
    yield SLOW_IDS
    with django_db_blocker.unblock(), schema_context(get_public_schema_name()):
        ChargePointIdentity.objects.filter(charge_point_id__in=SLOW_IDS).delete()
        connection.set_schema_to_public()


@pytest.fixture(scope="module")
def auth_gateway(bg, gw_fleet, django_db_blocker):
    with django_db_blocker.unblock():
        running = start_gateway(bg)
        yield running
        stop_gateway(running)


@pytest.fixture(autouse=True)
def _clean_throttles(auth_gateway, settings) -> None:
    settings.PASSWORD_HASHERS = SLOW_HASHERS
    settings.GATEWAY_AUTH_ID_FAILURES = 1000
    settings.GATEWAY_AUTH_ADDRESS_FAILURES = 1000
    auth_gateway.gateway.verifier.reset()


async def handshake(url: str, cp: str, password: str, local: str = "127.0.0.1") -> tuple[int, float, dict[str, str]]:
    """(HTTP status, seconds, response headers); 101 for an open connection (closed at once)."""
    started = time.perf_counter()
    try:
        ws = await websockets.connect(
            f"{url}/{cp}",
            subprotocols=[websockets.Subprotocol("ocpp1.6")],
            additional_headers={"Authorization": "Basic " + base64.b64encode(f"{cp}:{password}".encode()).decode()},
            open_timeout=30,
            local_addr=(local, 0),
        )
    except InvalidStatus as refused:
        return refused.response.status_code, time.perf_counter() - started, dict(refused.response.headers)
    elapsed = time.perf_counter() - started
    await ws.close()
    return 101, elapsed, {}


def test_tenant_reads_are_answered_while_password_checks_queue(auth_gateway, gw_fleet, slow_ids) -> None:
    url = auth_gateway.url

    async def scenario() -> tuple[int, int, object]:
        ws = await ws_connect(url, gw_fleet.closed_charger)
        try:
            flood = [asyncio.ensure_future(handshake(url, cp, f"wrong-{n}-{cp}")) for n in range(2) for cp in slow_ids]
            await asyncio.sleep(0.3)  # every check is queued by now
            answer = await roundtrip(
                ws, f'[2,"a1","Authorize",{{"idTag":"NEW-{time.time_ns() % 10**12}"}}]', timeout=60
            )
            done_at_answer = sum(f.done() for f in flood)
            await asyncio.gather(*flood)
            return done_at_answer, len(flood), answer
        finally:
            await ws.close()

    done_at_answer, total, answer = auth_gateway.bg.run(scenario(), timeout=120)

    assert isinstance(answer, CallResult)
    assert answer.payload["idTagInfo"]["status"] == "Invalid"
    # The idTag read did not wait for the queued password checks (they run on other threads).
    assert done_at_answer < total / 2, f"{done_at_answer} of {total} handshakes were answered before the Authorize"


def test_a_full_password_check_queue_refuses_at_once_with_503_and_retry_after(auth_gateway, slow_ids, settings) -> None:
    settings.GATEWAY_AUTH_QUEUE = 2

    async def scenario() -> list[tuple[int, float, dict[str, str]]]:
        return await asyncio.gather(*[handshake(auth_gateway.url, cp, f"guess-{cp}") for cp in slow_ids[:8]])

    results = auth_gateway.bg.run(scenario(), timeout=120)

    overloaded = [r for r in results if r[0] == 503]
    checked = [r for r in results if r[0] == 401]
    assert len(checked) == 2
    assert len(overloaded) == 6
    assert all(headers.get("retry-after") == str(settings.GATEWAY_AUTH_RETRY_AFTER_S) for _, _, headers in overloaded)
    assert max(t for _, t, _ in overloaded) < min(t for _, t, _ in checked)  # refused before any hash


def test_a_repeated_wrong_password_costs_no_second_hash(auth_gateway, slow_ids) -> None:
    verifier = auth_gateway.gateway.verifier
    before = verifier.hashes

    async def scenario() -> list[int]:
        return [(await handshake(auth_gateway.url, slow_ids[0], "the-same-guess"))[0] for _ in range(3)]

    statuses = auth_gateway.bg.run(scenario(), timeout=60)

    assert statuses == [401, 401, 401]
    assert verifier.hashes - before == 1


def test_failures_of_one_charger_id_start_a_cooldown_its_known_secret_still_passes(
    auth_gateway, gw_fleet, settings
) -> None:
    settings.GATEWAY_AUTH_ID_FAILURES = 3
    cp = gw_fleet.chargers_16[5]
    other = gw_fleet.chargers_16[6]

    async def scenario() -> tuple[int, list[int], dict[str, str], int, int]:
        first = (await handshake(auth_gateway.url, cp, PASSWORD))[0]  # the charger's own, remembered
        wrong = [(await handshake(auth_gateway.url, cp, f"guess-{n}"))[0] for n in range(4)]
        _, _, headers = await handshake(auth_gateway.url, cp, "guess-9")
        own = (await handshake(auth_gateway.url, cp, PASSWORD))[0]
        neighbour = (await handshake(auth_gateway.url, other, PASSWORD))[0]
        return first, wrong, headers, own, neighbour

    first, wrong, headers, own, neighbour = auth_gateway.bg.run(scenario(), timeout=60)

    assert first == 101
    assert wrong == [401, 401, 401, 429]
    assert 0 < int(headers["retry-after"]) <= settings.GATEWAY_AUTH_COOLDOWN_S
    assert own == 101  # its secret succeeded before: a cache hit, through the cooldown
    assert neighbour == 101  # the cooldown is this id's only


def test_failures_from_one_address_start_a_cooldown_for_that_address_only(auth_gateway, gw_fleet, settings) -> None:
    settings.GATEWAY_AUTH_ADDRESS_FAILURES = 3
    cp = gw_fleet.chargers_16[7]

    async def scenario() -> tuple[list[int], int, int]:
        wrong = [(await handshake(auth_gateway.url, f"NOBODY-{n}", "guess", local="127.0.0.3"))[0] for n in range(4)]
        from_there = (await handshake(auth_gateway.url, cp, PASSWORD, local="127.0.0.3"))[0]
        elsewhere = (await handshake(auth_gateway.url, cp, PASSWORD, local="127.0.0.4"))[0]
        return wrong, from_there, elsewhere

    wrong, from_there, elsewhere = auth_gateway.bg.run(scenario(), timeout=60)

    assert wrong == [401, 401, 401, 429]
    assert from_there == 429
    assert elsewhere == 101


def test_an_unknown_id_is_refused_as_slowly_as_a_wrong_password(auth_gateway, slow_ids) -> None:
    async def scenario() -> tuple[list[float], list[float]]:
        unknown, known = [], []
        for n in range(4):
            status_u, took_u, _ = await handshake(auth_gateway.url, f"NO-SUCH-CHARGER-{n}", f"guess-u{n}")
            status_k, took_k, _ = await handshake(auth_gateway.url, slow_ids[n], f"guess-k{n}")
            assert (status_u, status_k) == (401, 401)
            unknown.append(took_u)
            known.append(took_k)
        return unknown, known

    unknown, known = auth_gateway.bg.run(scenario(), timeout=120)

    mean_unknown, mean_known = statistics.mean(unknown), statistics.mean(known)
    assert abs(mean_unknown - mean_known) < 0.3 * max(mean_unknown, mean_known), (unknown, known)
