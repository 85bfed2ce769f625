"""The organisation admin: every change and deletion of what limits a site (site, circuit,
schedule, override, charger, connector) is audited and rebalances the site once it commits."""

from datetime import time, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from balancing.models import Circuit, LimitOverride, SiteLimitSchedule
from chargepoint.models import ChargingStation, Connector
from evplatform.redis import get_redis, tenant_key
from tenants.accounts.models import AuditEvent
from tests.conftest import forget_balancing_keys
from tests.factories import SiteFactory, UserFactory

pytestmark = pytest.mark.django_db
ADMIN_EMAIL = "limits.admin@alpha.localhost"


@pytest.fixture
def admin_client(alpha_client):
    alpha_client.force_login(UserFactory(email=ADMIN_EMAIL, is_staff=True, is_superuser=True))
    return alpha_client


@pytest.fixture
def site():
    site = SiteFactory(slug="admin-mall", name="Admin Mall")
    forget_balancing_keys(connection.schema_name, site.pk)
    yield site
    forget_balancing_keys(connection.schema_name, site.pk)


def rebalance_requested(site_id: int) -> bool:
    return bool(get_redis().exists(tenant_key(connection.schema_name, "rebalance-pending", site_id)))


def schedule(site, name: str) -> SiteLimitSchedule:
    return SiteLimitSchedule.objects.create(
        site=site, name=name, weekdays="01234", start_time=time(16), end_time=time(21), limit_kw=Decimal("12")
    )


def deletions(model: str) -> dict[str, str]:
    """field -> last value of the admin's deletion rows of ``model``."""
    rows = AuditEvent.objects.filter(object_type=model, action="delete", actor=ADMIN_EMAIL)
    return {row.field: row.old_value for row in rows}


def test_deleting_a_schedule_in_the_admin_is_audited_and_rebalances_after_commit(
    admin_client, site, django_capture_on_commit_callbacks
) -> None:
    peak = schedule(site, "Peak")

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(f"/admin/balancing/sitelimitschedule/{peak.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not SiteLimitSchedule.objects.filter(pk=peak.pk).exists()
    assert deletions("sitelimitschedule")["limit_kw"] == "12.00"
    assert rebalance_requested(site.pk)


def test_the_delete_selected_action_audits_each_schedule_and_rebalances_each_site(
    admin_client, site, django_capture_on_commit_callbacks
) -> None:
    other = SiteFactory(slug="admin-other")
    forget_balancing_keys(connection.schema_name, other.pk)
    chosen = [schedule(site, "Peak"), schedule(other, "Evening")]

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/balancing/sitelimitschedule/",
            {"action": "delete_selected", "_selected_action": [s.pk for s in chosen], "post": "yes"},
        )

    assert response.status_code == 302
    assert not SiteLimitSchedule.objects.filter(pk__in=[s.pk for s in chosen]).exists()
    audited = AuditEvent.objects.filter(object_type="sitelimitschedule", action="delete", field="limit_kw")
    assert sorted(int(e.object_id) for e in audited) == sorted(s.pk for s in chosen)
    assert rebalance_requested(site.pk)
    assert rebalance_requested(other.pk)
    forget_balancing_keys(connection.schema_name, other.pk)


def test_deleting_an_override_or_a_circuit_in_the_admin_is_audited_and_rebalances(
    admin_client, site, django_capture_on_commit_callbacks
) -> None:
    now = timezone.now()
    override = LimitOverride.objects.create(
        site=site, reason="works", limit_a=Decimal("20"), starts_at=now, ends_at=now + timedelta(hours=2)
    )
    circuit = Circuit.objects.create(site=site, name="Row 9", limit_a=Decimal("32"))

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(f"/admin/balancing/limitoverride/{override.pk}/delete/", {"post": "yes"})
        admin_client.post(
            "/admin/balancing/circuit/", {"action": "delete_selected", "_selected_action": [circuit.pk], "post": "yes"}
        )

    assert not LimitOverride.objects.filter(pk=override.pk).exists()
    assert not Circuit.objects.filter(pk=circuit.pk).exists()
    assert deletions("limitoverride")["limit_a"] == "20.0"
    assert deletions("circuit") == {"name": "Row 9", "limit_a": "32.0", "limit_kw": ""}
    assert rebalance_requested(site.pk)


def change_form(admin_client, url: str) -> dict[str, Any]:
    """The POST data of an admin change form (its inlines included) as the page shows it."""
    context = admin_client.get(url).context
    forms = [context["adminform"].form]
    data: dict[str, Any] = {}
    for inline in context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    for form in forms:
        for bound in form:
            value = bound.value()
            if value is None or value is False:
                continue
            data[bound.html_name] = "on" if value is True else value
    return data


def test_changing_a_chargers_rating_or_its_connectors_in_the_admin_is_audited_and_rebalances(
    admin_client, site, django_capture_on_commit_callbacks
) -> None:
    station = ChargingStation.objects.create(charge_point_id="ADMIN-1", site=site, max_current_a=Decimal(32))
    connector = Connector.objects.create(station=station, connector_id=1, max_current_a=Decimal(32))
    url = f"/admin/chargepoint/chargingstation/{station.pk}/change/"
    data = change_form(admin_client, url)
    data["max_current_a"] = "16"
    data["connectors-0-max_current_a"] = "10"

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, data)

    assert response.status_code == 302, response.content.decode()[:2000]
    station.refresh_from_db()
    connector.refresh_from_db()
    assert (station.max_current_a, connector.max_current_a) == (Decimal(16), Decimal(10))
    assert AuditEvent.objects.get(object_type="chargingstation", field="max_current_a").new_value == "16"
    assert AuditEvent.objects.get(object_type="connector", field="max_current_a").old_value == "32.0"
    assert rebalance_requested(site.pk)


def test_deleting_a_charger_in_the_admin_is_audited_and_rebalances(
    admin_client, site, django_capture_on_commit_callbacks
) -> None:
    station = ChargingStation.objects.create(charge_point_id="ADMIN-2", site=site, max_current_a=Decimal(32))

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(f"/admin/chargepoint/chargingstation/{station.pk}/delete/", {"post": "yes"})

    assert not ChargingStation.objects.filter(pk=station.pk).exists()
    assert deletions("chargingstation")["charge_point_id"] == "ADMIN-2"
    assert rebalance_requested(site.pk)


def test_a_circuit_changed_inline_on_its_sites_page_is_audited(
    admin_client, site, django_capture_on_commit_callbacks
) -> None:
    Circuit.objects.create(site=site, name="Panel A", limit_a=Decimal("63"))
    url = f"/admin/balancing/site/{site.pk}/change/"
    data = change_form(admin_client, url)
    data["circuits-0-limit_a"] = "50"

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, data)

    assert response.status_code == 302, response.content.decode()[:2000]
    event = AuditEvent.objects.get(object_type="circuit", field="limit_a")
    assert (event.old_value, event.new_value, event.actor) == ("63.0", "50", ADMIN_EMAIL)
    assert rebalance_requested(site.pk)
