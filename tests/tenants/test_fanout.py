"""Beat fan-outs publish one task per chunk of active tenants; a chunk enters each of its tenants."""

import pytest
from django.db import connection
from django_tenants.utils import get_public_schema_name

from balancing.models import Site
from balancing.tasks import sweep_all_sites, sweep_sites
from tenants.fanout import tenant_chunk, tenant_chunks_send
from tenants.models import Tenant
from tenants.tasks import heartbeat_tenants

pytestmark = [pytest.mark.django_db, pytest.mark.public_schema]


class Recorder:
    """Stands in for a task's ``apply_async``: keeps what would have been published."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def __call__(self, *args, **options) -> None:
        self.sent.append({**options, "schema": connection.schema_name})


def active_schemas() -> list[str]:
    return list(
        Tenant.objects.exclude(schema_name=get_public_schema_name())
        .filter(is_active=True)
        .order_by("pk")
        .values_list("schema_name", flat=True)
    )


def test_one_task_per_chunk_of_active_tenants_sent_from_public(settings, monkeypatch, tenant, other_tenant) -> None:
    settings.TENANT_FANOUT_CHUNK_SIZE = 1
    Tenant.objects.filter(pk=other_tenant.pk).update(is_active=False)
    recorder = Recorder()
    monkeypatch.setattr(heartbeat_tenants, "apply_async", recorder)

    sent = tenant_chunks_send(heartbeat_tenants, expires=30)

    assert sent == len(active_schemas()) == len(recorder.sent)
    assert [c["kwargs"]["schemas"] for c in recorder.sent] == [[s] for s in active_schemas()]
    assert ["beta"] not in [c["kwargs"]["schemas"] for c in recorder.sent]  # inactive
    assert {c["schema"] for c in recorder.sent} == {"public"}
    assert {c["expires"] for c in recorder.sent} == {30}


def test_the_sweep_sends_chunks_of_fifty_tenants_that_expire_with_the_next_sweep(settings, monkeypatch) -> None:
    recorder = Recorder()
    monkeypatch.setattr(sweep_sites, "apply_async", recorder)

    assert sweep_all_sites() == 1  # a handful of test tenants: one chunk

    assert recorder.sent[0]["kwargs"]["schemas"] == active_schemas()
    assert recorder.sent[0]["expires"] == settings.BALANCING_SWEEP_SECONDS == 60
    assert settings.TENANT_FANOUT_CHUNK_SIZE == 50


def test_a_chunk_enters_each_active_tenant_in_turn_and_leaves_public_active(tenant, other_tenant) -> None:
    Tenant.objects.filter(pk=other_tenant.pk).update(is_active=False)
    seen = [(t.schema_name, connection.schema_name) for t in tenant_chunk(["beta", "alpha", "nobody"])]

    assert seen == [("alpha", "alpha")]
    assert connection.schema_name == "public"


def test_a_sweep_chunk_asks_for_a_run_of_every_site_of_its_tenants(monkeypatch, tenant, other_tenant) -> None:
    created = {}
    for owner in (tenant, other_tenant):
        connection.set_tenant(owner)
        created[owner.schema_name] = {
            Site.objects.create(slug=f"fanout-{n}", name=f"Fan-out {n}", limit_a=63).pk for n in range(3)
        }
    connection.set_schema_to_public()
    requested: list[tuple[str, int, str]] = []
    monkeypatch.setattr(
        "balancing.tasks.site_rebalance_request",
        lambda *, site_id, reason: requested.append((connection.schema_name, site_id, reason)),
    )

    count = sweep_sites(schemas=["alpha", "beta"])

    for schema, site_ids in created.items():
        assert site_ids <= {site for s, site, _ in requested if s == schema}
    assert {reason for *_, reason in requested} == {"sweep"}
    assert count == len(requested)


def test_the_liveness_sweep_chunks_go_to_the_balancing_queue_and_expire_after_two_intervals(
    settings, monkeypatch
) -> None:
    from chargepoint.tasks import stations_gateway_sweep_all, stations_gateway_sweep_chunk
    from evplatform.celery import QUEUE_BALANCING, app, queue_name

    recorder = Recorder()
    monkeypatch.setattr(stations_gateway_sweep_chunk, "apply_async", recorder)
    stations_gateway_sweep_all()

    routed = app.amqp.router.route({}, stations_gateway_sweep_chunk.name)
    assert routed["queue"].name == queue_name(QUEUE_BALANCING)
    assert recorder.sent[0]["expires"] == 2 * settings.GATEWAY_LIVENESS_SWEEP_S
