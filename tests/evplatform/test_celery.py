"""A real `celery -A evplatform worker` against RabbitMQ runs tenant tasks in the right schema."""

import time
from collections.abc import Callable

import pytest
from django_tenants.utils import schema_context, tenant_context

from evplatform.celery import QUEUES, app, queue_name
from tenants.accounts.models import WorkerHeartbeat
from tenants.accounts.services import heartbeat_send
from tenants.accounts.tasks import worker_heartbeat
from tenants.tasks import heartbeat_all_tenants

pytestmark = pytest.mark.django_db

TASK_SECONDS = 60


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
