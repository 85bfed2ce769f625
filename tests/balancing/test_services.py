"""Rebalance requests coalesce in Redis; one run per site at a time; limit changes are audited."""

from decimal import Decimal

import pytest
from django.db import connection

from balancing.dispatch import site_balance, site_rebalance_request
from balancing.services import site_create_or_update
from evplatform.redis import get_redis, tenant_key
from tenants.accounts.models import AuditEvent
from tests.conftest import forget_balancing_keys
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def site():
    site = SiteFactory(limit_a=Decimal("63"), demand_cap_kw=Decimal("20"))
    yield site
    forget_balancing_keys(connection.schema_name, site.pk)


def test_a_burst_of_requests_becomes_one_pending_run(site, django_capture_on_commit_callbacks) -> None:
    key = tenant_key(connection.schema_name, "rebalance-pending", site.pk)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        site_rebalance_request(site_id=site.pk, reason="plug-in")
        site_rebalance_request(site_id=site.pk, reason="status")

    assert len(callbacks) == 2
    assert get_redis().get(key) == b"plug-in"  # the second joined the first


def test_a_rolled_back_change_asks_for_no_run(site) -> None:
    from django.db import transaction

    def doomed_change() -> None:
        with transaction.atomic():
            site_rebalance_request(site_id=site.pk, reason="doomed")
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        doomed_change()
    assert not get_redis().exists(tenant_key(connection.schema_name, "rebalance-pending", site.pk))


def test_requests_are_scoped_per_tenant_schema_and_deployment(site, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        site_rebalance_request(site_id=site.pk, reason="x")
    assert get_redis().exists(tenant_key("alpha", "rebalance-pending", site.pk))
    assert not get_redis().exists(tenant_key("beta", "rebalance-pending", site.pk))
    assert tenant_key("alpha", "x").startswith("evptest.:alpha:")


def test_a_site_being_balanced_is_not_balanced_twice_at_once(site, django_capture_on_commit_callbacks) -> None:
    lock = get_redis().lock(tenant_key(connection.schema_name, "balance-lock", site.pk), timeout=30)
    assert lock.acquire(blocking=False)
    try:
        with django_capture_on_commit_callbacks() as callbacks:
            assert site_balance(site_id=site.pk, reason="event") is None
    finally:
        lock.release()
    assert len(callbacks) == 1  # the request is queued again, not lost


def test_limit_changes_are_audited_with_who_old_and_new(site, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        site_create_or_update(
            slug=site.slug,
            name=site.name,
            limit_a=Decimal("50"),
            demand_cap_kw=Decimal("15"),
            actor="energy@alpha.example",
        )

    events = {e.field: e for e in AuditEvent.objects.filter(object_type="site", object_id=str(site.pk))}
    assert (events["limit_a"].old_value, events["limit_a"].new_value) == ("63.0", "50")
    assert events["demand_cap_kw"].actor == "energy@alpha.example"
    assert len(callbacks) == 1  # and the site is rebalanced
