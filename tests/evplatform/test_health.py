"""Probes of the web process on any Host header, /metrics' protection, and beat's liveness file.

The probes are answered before django-tenants looks the host up, so an orchestrator probing the
pod's address (a host no tenant has and ALLOWED_HOSTS does not list) gets an answer.
"""

import json
import socket
import time
from collections.abc import Iterator

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from bench.tcpproxy import free_port
from evplatform.beat import leader_lock_key
from evplatform.celery import app
from evplatform.health import beat_file, quick_redis
from tests.evplatform.test_beat_leader import RecordingScheduler

pytestmark = pytest.mark.django_db

POD = "10.0.0.5:8000"


@pytest.fixture
def client() -> Client:
    return Client(HTTP_HOST=POD, REMOTE_ADDR="127.0.0.1")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a stalled service)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


def test_healthz_answers_on_a_host_no_tenant_has(client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.content == b"ok"


def test_healthz_touches_no_database(client) -> None:
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/healthz").status_code == 200

    assert len(queries) == 0  # liveness: a database outage must not restart the web processes


def test_readyz_is_ready_when_postgresql_redis_and_the_broker_answer(client) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "redis": "ok", "broker": "ok"},
        "failed": [],
    }


def test_readyz_names_each_dependency_that_does_not_answer_within_its_timeout(client, settings, silent_port) -> None:
    settings.READINESS_TIMEOUT_S = 1.0
    settings.REDIS_URL = f"redis://127.0.0.1:{silent_port}/0"
    settings.CELERY_BROKER_URL = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    quick_redis.cache_clear()
    try:
        started = time.monotonic()
        response = client.get("/readyz")
        took_s = time.monotonic() - started
    finally:
        quick_redis.cache_clear()

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failed"] == ["broker", "redis"]
    assert body["checks"]["database"] == "ok"
    assert took_s < 2.5  # the checks run side by side, each within the timeout


def test_probes_refuse_other_methods(client) -> None:
    assert client.post("/healthz").status_code == 405


def test_metrics_answer_a_local_caller_in_prometheus_text(client) -> None:
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert b"# TYPE evp_balancing_runs_total counter" in response.content


def test_metrics_are_refused_to_other_networks_and_to_requests_through_a_proxy(settings) -> None:
    settings.METRICS_TOKEN = ""
    outside = Client(HTTP_HOST=POD, REMOTE_ADDR="203.0.113.9")
    proxied = Client(HTTP_HOST=POD, REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.9")

    assert outside.get("/metrics").status_code == 403
    assert proxied.get("/metrics").status_code == 403


def test_metrics_answer_the_bearer_token_from_anywhere_and_refuse_a_wrong_one(settings) -> None:
    settings.METRICS_TOKEN = "scrape-token-0123456789abcdef"
    outside = Client(HTTP_HOST=POD, REMOTE_ADDR="203.0.113.9")

    assert outside.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-0123456789abcdef").status_code == 200
    assert outside.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-wrong").status_code == 403
    local = Client(HTTP_HOST=POD, REMOTE_ADDR="127.0.0.1")
    assert local.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-wrong").status_code == 403


def test_a_tenant_host_still_reaches_the_tenant_after_the_probes() -> None:
    response = Client(HTTP_HOST="alpha.localhost").get("/api/v1/sites/")

    assert response.status_code in (401, 403)  # the tenant's API, asking for credentials
    assert response["X-Request-ID"]


@pytest.fixture
def schedulers(tmp_path, settings) -> Iterator[tuple[RecordingScheduler, RecordingScheduler]]:
    settings.BEAT_LEADER_CHECK_S = 0.2
    settings.HEALTHCHECK_DIR = str(tmp_path / "health")
    lock_key = leader_lock_key() ^ 0x5A5A  # a lock of this test's own
    pair = tuple(
        RecordingScheduler(app=app, schedule_filename=str(tmp_path / name), lock_key=lock_key) for name in "ab"
    )
    yield pair
    for scheduler in pair:
        scheduler.close()


def test_beat_writes_its_liveness_file_at_every_tick_as_leader_or_standby(schedulers) -> None:
    leader, standby = schedulers

    leader.tick()
    as_leader = json.loads(beat_file().read_text())
    standby.tick()
    as_standby = json.loads(beat_file().read_text())

    assert as_leader["role"] == "leader"
    assert as_standby["role"] == "standby"
    assert time.time() - as_standby["at"] < 5
    call_command("healthcheck", "beat")  # raises when unhealthy


def test_the_beat_healthcheck_fails_once_the_file_is_older_than_allowed(schedulers) -> None:
    leader, _ = schedulers
    leader.tick()
    state = json.loads(beat_file().read_text())
    beat_file().write_text(json.dumps({**state, "at": state["at"] - 120}))

    with pytest.raises(CommandError, match=r"beat unhealthy: beat\.json is 120 s old") as failed:
        call_command("healthcheck", "beat", "--max-age", "60")
    assert failed.value.returncode == 1


def test_the_beat_healthcheck_fails_without_a_liveness_file(settings, tmp_path) -> None:
    settings.HEALTHCHECK_DIR = str(tmp_path / "empty")

    with pytest.raises(CommandError, match="no beat liveness file"):
        call_command("healthcheck", "beat")
