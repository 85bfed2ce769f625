"""A real `celery -A evplatform worker` against RabbitMQ runs tenant tasks in the right schema."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django_tenants.utils import schema_context, tenant_context

from evplatform.celery import QUEUES, app, queue_name
from tenants.accounts.models import WorkerHeartbeat
from tenants.accounts.services import heartbeat_send
from tenants.accounts.tasks import worker_heartbeat
from tenants.tasks import heartbeat_all_tenants

pytestmark = pytest.mark.django_db

WORKER_START_SECONDS = 90
TASK_SECONDS = 60


def _database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture(scope="module")
def celery_worker(django_db_setup: None, django_db_blocker, tmp_path_factory) -> Iterator[subprocess.Popen[str]]:
    """A worker process on the test queues and the test database, stopped after the module."""
    with django_db_blocker.unblock():
        database_url = _database_url()
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "evplatform.settings.test",
        "DATABASE_URL": database_url,
        "CELERY_QUEUE_PREFIX": settings.CELERY_QUEUE_PREFIX,
    }
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "evplatform",
        "worker",
        "--pool=solo",
        "--loglevel=INFO",
        "--purge",
        "--without-gossip",
        "--without-mingle",
        f"--hostname=test-worker-{os.getpid()}@%h",
    ]
    worker = subprocess.Popen(
        command, cwd=settings.BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    ready = threading.Event()

    def pump() -> None:
        assert worker.stdout is not None
        with Path(log_path).open("w") as log:
            for line in worker.stdout:
                log.write(line)
                log.flush()
                if " ready." in line:
                    ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(WORKER_START_SECONDS):
        worker.kill()
        pytest.fail(f"celery worker did not become ready in {WORKER_START_SECONDS}s:\n{log_path.read_text()}")
    yield worker
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TASK_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {TASK_SECONDS}s waiting for {what}")


def tokens_stored(tenant) -> dict[str, str]:
    with tenant_context(tenant):
        return dict(WorkerHeartbeat.objects.values_list("queue", "token"))


def test_worker_runs_a_task_from_each_queue_in_the_senders_tenant_schema(celery_worker, tenant, other_tenant) -> None:
    before_other = tokens_stored(other_tenant)

    sent = heartbeat_send(tenant=tenant)

    assert set(sent) == set(QUEUES)
    wait_for(lambda: all(tokens_stored(tenant).get(q) == token for q, token in sent.items()), "heartbeats in alpha")
    assert tokens_stored(other_tenant) == before_other
    with schema_context("public"):
        assert not WorkerHeartbeat.objects.filter(token__in=sent.values()).exists()
    assert celery_worker.poll() is None


def test_beat_fan_out_reaches_every_tenant_through_the_worker(celery_worker, tenant, other_tenant) -> None:
    before = {t.slug: tokens_stored(t) for t in (tenant, other_tenant)}

    with schema_context("public"):
        heartbeat_all_tenants.delay()

    wait_for(
        lambda: all(
            tokens_stored(t).get("reports") not in (None, before[t.slug].get("reports")) for t in (tenant, other_tenant)
        ),
        "a fresh heartbeat in both tenants",
    )


def test_a_tenant_task_sent_from_public_is_refused() -> None:
    with schema_context("public"):
        result = worker_heartbeat.apply(kwargs={"queue": "reports", "token": "t", "sent_at": "2026-01-01T00:00:00Z"})
    assert result.failed()
    assert "needs a tenant schema" in str(result.result)


def test_tasks_are_routed_by_app_to_durable_prefixed_queues() -> None:
    queues = {q.name: q for q in app.conf.task_queues}
    assert set(queues) == {queue_name(q) for q in QUEUES}
    assert all(q.durable for q in queues.values())
    router = app.amqp.router
    assert router.route({}, "balancing.tasks.balance_site")["queue"].name == queue_name("balancing")
    assert router.route({}, "chargepoint.tasks.ingest")["queue"].name == queue_name("telemetry")
    assert router.route({}, "billing.tasks.monthly_report")["queue"].name == queue_name("reports")
    assert app.conf.task_acks_late
    assert app.conf.task_reject_on_worker_lost
    assert app.conf.broker_transport_options["confirm_publish"]
    with pytest.raises(ValueError, match="unknown queue 'fast'"):
        queue_name("fast")
