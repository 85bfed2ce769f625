"""A real worker keeps its PostgreSQL connection across tasks, in the right schema for each.

Celery's own Django fix-up would close it after every task; ``evplatform.celery_django`` keeps it
for ``CONN_MAX_AGE`` and checks it before reuse (``CONN_HEALTH_CHECKS``). The worker here has
its own queue prefix, so only it gets these tasks, and its own ``application_name`` (libpq's
``PGAPPNAME``), so its backends can be told apart in ``pg_stat_activity``.
"""

import os
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from django.conf import settings
from django_tenants.utils import tenant_context
from kombu import Exchange, Queue

from tenants.accounts.models import WorkerHeartbeat
from tenants.accounts.tasks import worker_heartbeat
from tests.conftest import _database_url, broker_queues_delete, start_celery_worker, stop_celery_worker

pytestmark = pytest.mark.django_db

WAIT_S = 60
PREFIX = f"{settings.CELERY_QUEUE_PREFIX}reuse{os.getpid()}."
APP_NAME = f"evp-reuse-{os.getpid()}"


@pytest.fixture(scope="module")
def reuse_worker(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[None]:
    log_path = tmp_path_factory.mktemp("reuse-worker") / "worker.log"
    with django_db_blocker.unblock():
        worker = start_celery_worker(
            env={"CELERY_QUEUE_PREFIX": PREFIX, "PGAPPNAME": APP_NAME},
            log_path=log_path,
            hostname=f"reuse-{os.getpid()}@%h",
        )
    yield
    stop_celery_worker(worker)
    broker_queues_delete(PREFIX)


def heartbeat_through_the_worker(tenant) -> str:
    """Send a heartbeat to the module's worker for ``tenant`` and wait until it is stored there."""
    token = uuid.uuid4().hex
    queue = Queue(f"{PREFIX}reports", Exchange(f"{PREFIX}evplatform", type="direct"), routing_key=f"{PREFIX}reports")
    with tenant_context(tenant):
        worker_heartbeat.apply_async(
            kwargs={"queue": "reports", "token": token, "sent_at": "2026-01-01T00:00:00Z"}, queue=queue
        )
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        with tenant_context(tenant):
            if WorkerHeartbeat.objects.filter(token=token).exists():
                return token
        time.sleep(0.1)
    pytest.fail(f"the heartbeat for {tenant.schema_name} did not arrive within {WAIT_S}s")


def worker_backends() -> list[tuple[int, object]]:
    with psycopg.connect(_database_url(), autocommit=True) as conn:
        return conn.execute(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE application_name = %s", [APP_NAME]
        ).fetchall()


def test_one_connection_serves_task_after_task_each_in_its_own_tenants_schema(
    reuse_worker, tenant, other_tenant
) -> None:
    heartbeat_through_the_worker(tenant)
    first = worker_backends()

    tokens = [heartbeat_through_the_worker(t) for t in (other_tenant, tenant, other_tenant)]

    assert len(first) == 1
    assert worker_backends() == first  # the same backend, not a new one per task
    with tenant_context(tenant):
        assert not WorkerHeartbeat.objects.filter(token__in=[tokens[0], tokens[2]]).exists()
        assert WorkerHeartbeat.objects.filter(token=tokens[1]).exists()
    with tenant_context(other_tenant):
        assert WorkerHeartbeat.objects.filter(token__in=[tokens[0], tokens[2]]).count() == 1  # one row per queue
        assert WorkerHeartbeat.objects.get(queue="reports").token == tokens[2]


def test_a_connection_the_server_ended_is_replaced_before_the_next_task(reuse_worker, tenant) -> None:
    heartbeat_through_the_worker(tenant)
    [(pid, _)] = worker_backends()
    with psycopg.connect(_database_url(), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", [pid])

    heartbeat_through_the_worker(tenant)  # the health check found it gone; no task failed

    [(new_pid, _)] = worker_backends()
    assert new_pid != pid
