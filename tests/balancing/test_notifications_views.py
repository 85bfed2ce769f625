"""The Notifications page (everyone) and the Webhooks pages (organisation admins)."""

import re

import pytest

from balancing.models import SiteGrant, SiteGroup
from balancing.notifications.models import NotificationPreference, WebhookDelivery, WebhookEndpoint
from balancing.notifications.webhooks import endpoint_secret
from tenants.accounts.models import AuditEvent, Role
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db


def secret_shown(html: str) -> str | None:
    found = re.search(r'<code class="secret" id="webhook-secret">([0-9a-f]{64})</code>', html)
    return found.group(1) if found else None


def test_the_notifications_page_starts_from_the_role_defaults_and_saves_a_choice(make_user) -> None:
    site = SiteFactory(slug="page-garage")
    user, client = make_user(Role.ENERGY_MANAGER)

    page = client.get("/notifications/").content.decode()
    assert "these are the defaults for your role" in page
    assert re.search(r'value="faulted"[^>]*checked', page)
    assert not re.search(r'value="report_ready"[^>]*checked', page)

    response = client.post(
        "/notifications/",
        {"email_kinds": ["faulted", "offline"], "email_cleared": "on", "all_sites": "0", "sites": [site.pk]},
    )

    assert response.status_code == 302
    preference = NotificationPreference.objects.get(user=user)
    assert (preference.email_kinds, preference.email_cleared, preference.all_sites) == (
        ["offline", "faulted"],
        True,
        False,
    )
    assert list(preference.sites.all()) == [site]
    assert AuditEvent.objects.filter(object_type="notification-preference", actor=user.email).exists()


def test_a_site_out_of_reach_cannot_be_chosen_and_nothing_is_saved(make_user) -> None:
    mine, theirs = SiteFactory(slug="mine"), SiteFactory(slug="theirs")
    group = SiteGroup.objects.create(slug="mine-only", name="Mine only")
    group.sites.add(mine)
    user, client = make_user("")
    SiteGrant.objects.create(user=user, role=Role.ENERGY_MANAGER, group=group)

    page = client.get("/notifications/").content.decode()
    assert f'value="{mine.pk}"' in page
    assert f'value="{theirs.pk}"' not in page
    response = client.post("/notifications/", {"email_kinds": ["faulted"], "all_sites": "0", "sites": [theirs.pk]})

    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert not NotificationPreference.objects.filter(user=user).exists()


def test_only_organisation_admins_reach_the_webhooks_pages(make_user) -> None:
    _, manager = make_user(Role.ENERGY_MANAGER)
    _, admin = make_user(Role.ADMIN)

    assert manager.get("/webhooks/").status_code == 403
    assert manager.get("/webhooks/deliveries/").status_code == 403
    assert admin.get("/webhooks/").status_code == 200
    assert admin.get("/webhooks/deliveries/").status_code == 200


def test_adding_an_endpoint_shows_its_secret_once_and_audits_it_without_the_secret(make_user) -> None:
    _, admin = make_user(Role.ADMIN)

    response = admin.post(
        "/webhooks/", {"name": "Ops", "url": "https://93.184.216.34/hooks", "kinds": ["faulted"], "send_cleared": "on"}
    )

    assert response.status_code == 200
    secret = secret_shown(response.content.decode())
    endpoint = WebhookEndpoint.objects.get(name="Ops")
    assert secret == endpoint_secret(endpoint.secret_salt)
    assert secret_shown(admin.get("/webhooks/").content.decode()) is None
    audit = AuditEvent.objects.filter(object_type="webhook", object_id=str(endpoint.pk))
    assert {a.field for a in audit} >= {"url", "kinds"}
    assert all(secret not in a.new_value for a in audit)


def test_a_plain_http_url_to_another_host_is_refused_naming_the_url(make_user) -> None:
    _, admin = make_user(Role.ADMIN)

    response = admin.post("/webhooks/", {"name": "Plain", "url": "http://93.184.216.34/hooks"})

    assert response.status_code == 400
    assert "plain http only to localhost" in response.content.decode()
    assert not WebhookEndpoint.objects.filter(name="Plain").exists()


def test_rotating_shows_a_new_secret_and_a_test_event_is_queued_for_that_endpoint(
    make_user, django_capture_on_commit_callbacks
) -> None:
    _, admin = make_user(Role.ADMIN)
    admin.post("/webhooks/", {"name": "Rot", "url": "https://93.184.216.34/hooks"})
    endpoint = WebhookEndpoint.objects.get(name="Rot")
    old = endpoint_secret(endpoint.secret_salt)

    rotated = secret_shown(admin.post(f"/webhooks/{endpoint.pk}/act/", {"action": "rotate"}).content.decode())
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        tested = admin.post(f"/webhooks/{endpoint.pk}/act/", {"action": "test"})

    endpoint.refresh_from_db()
    assert rotated is not None
    assert rotated != old
    assert rotated == endpoint_secret(endpoint.secret_salt)
    assert tested.status_code == 302
    assert len(callbacks) == 1
    [delivery] = WebhookDelivery.objects.filter(endpoint=endpoint)
    assert delivery.event.type == "test"
    assert str(delivery.pk) in admin.get(f"/webhooks/deliveries/?endpoint={endpoint.pk}").content.decode()
    assert AuditEvent.objects.filter(object_type="webhook", object_id=str(endpoint.pk), field="secret").exists()


def test_pausing_an_endpoint_is_audited_and_an_unknown_action_is_refused(make_user) -> None:
    _, admin = make_user(Role.ADMIN)
    admin.post("/webhooks/", {"name": "Pause", "url": "https://93.184.216.34/hooks"})
    endpoint = WebhookEndpoint.objects.get(name="Pause")

    admin.post(f"/webhooks/{endpoint.pk}/act/", {"action": "pause"})
    refused = admin.post(f"/webhooks/{endpoint.pk}/act/", {"action": "explode"})

    endpoint.refresh_from_db()
    assert endpoint.is_active is False
    assert AuditEvent.objects.filter(object_type="webhook", field="is_active", new_value="False").exists()
    assert refused.status_code == 400
    assert "action" in refused.content.decode()
