"""Alerts told by email and webhook, set up in a real Chromium against real processes.

An energy manager chooses its notifications and an admin adds a webhook endpoint (its secret
read off the page, shown once); then a charger reports Faulted (a telemetry batch applied in
another process, as a worker would) and a real worker mails the SMTP server and POSTs to a
local receiver. The web server and the worker run with a queue prefix of their own, so no other
test's worker takes these tasks; the data they read is committed by module fixtures.
"""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone
from django_tenants.utils import tenant_context
from playwright.sync_api import expect

from balancing.models import Site, SiteAlert, SiteGrant, SiteGroup
from balancing.notifications.models import EmailDelivery, NotificationEvent, WebhookEndpoint
from balancing.notifications.webhooks import webhook_signature_verify
from chargepoint.models import ChargingStation, Connector
from tenants.accounts.models import Role, User
from tests.balancing.notification_helpers import Receiver, webhook_receiver
from tests.conftest import (
    _database_url,
    broker_queues_delete,
    start_celery_worker,
    start_web_server,
    stop_celery_worker,
    stop_web_server,
)
from tests.evplatform.test_browser import PASSWORD, browser, open_page, shot, sign_in

pytestmark = pytest.mark.django_db
__all__ = ["browser"]  # the module-scoped Chromium of the portal's browser tests

PREFIX = f"{settings.CELERY_QUEUE_PREFIX}nbrowser{os.getpid()}."
MANAGER = "em.notify@alpha.localhost"
ADMIN = "admin.notify@alpha.localhost"
CHARGER = "NOTIFY-CP-1"
WAIT_S = 60


@pytest.fixture(scope="module")
def notify_site(tenant, django_db_blocker) -> Iterator[Site]:
    """A site in a group, its charger, an energy manager of the group and an admin (committed)."""
    with django_db_blocker.unblock(), tenant_context(tenant):
        site = Site.objects.create(slug="notify-garage", name="Notify Garage", limit_a=Decimal(63))
        station = ChargingStation.objects.create(charge_point_id=CHARGER, site=site, max_current_a=Decimal(32))
        Connector.objects.create(station=station, connector_id=1)
        group = SiteGroup.objects.create(slug="notify-group", name="Notify group")
        group.sites.add(site)
        manager = User.objects.create_user(email=MANAGER, password=PASSWORD, role="")
        SiteGrant.objects.create(user=manager, role=Role.ENERGY_MANAGER, group=group)
        admin = User.objects.create_user(email=ADMIN, password=PASSWORD, role=Role.ADMIN)
    yield site
    with django_db_blocker.unblock(), tenant_context(tenant):
        NotificationEvent.objects.filter(site=site).delete()
        NotificationEvent.objects.filter(type="test").delete()
        WebhookEndpoint.objects.filter(name="Ops receiver").delete()
        SiteAlert.objects.filter(site=site).delete()
        station.delete()
        group.delete()
        site.delete()
        manager.delete()
        admin.delete()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as got:
        yield got


@pytest.fixture
def stack(smtp_server, django_db_blocker, tmp_path) -> Iterator[str]:
    """A web server and a worker of their own deployment, mailing the test SMTP server; yields the web port."""
    env = {"CELERY_QUEUE_PREFIX": PREFIX, "EMAIL_URL": smtp_server.url}
    with django_db_blocker.unblock():
        worker = start_celery_worker(env=env, log_path=tmp_path / "worker.log", hostname=f"nbrowser-{os.getpid()}@%h")
        server, port = start_web_server(env=env)
    yield port
    stop_web_server(server)
    stop_celery_worker(worker)
    broker_queues_delete(PREFIX)


def charger_reports_faulted() -> None:
    """A telemetry batch with a Faulted status, applied in another process under the test deployment's prefix."""
    now = timezone.now().isoformat()
    event = {"type": "status", "cp": CHARGER, "ts": now, "connector": 1, "status": "Faulted"}
    event.update({"error_code": "GroundFailure", "at": now})
    code = (
        "from django_tenants.utils import tenant_context\n"
        "from tenants.models import Tenant\n"
        "from chargepoint.telemetry import telemetry_apply\n"
        "with tenant_context(Tenant.objects.get(slug='alpha')):\n"
        f"    telemetry_apply(events=[{json.dumps(event)}])\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "evplatform.settings.test",
        "DATABASE_URL": _database_url(),
        "CELERY_QUEUE_PREFIX": PREFIX,
    }
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code], cwd=settings.BASE_DIR, env=env, check=True, timeout=60
    )


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {WAIT_S} s for {what}")
        time.sleep(0.25)


def test_a_faulted_charger_is_mailed_to_the_manager_and_posted_signed_to_the_webhook_once(
    browser, stack, notify_site, receiver, smtp_server
) -> None:
    manager = open_page(browser, stack)
    sign_in(manager, MANAGER)
    manager.get_by_role("link", name="Notifications").click()
    for box in manager.locator("input[name=email_kinds]").all():
        box.uncheck()
    manager.get_by_label("Charger faulted").check()
    manager.get_by_label("only the groups and sites chosen below").check()
    manager.get_by_label("Notify Garage").check()
    manager.get_by_role("button", name="Save notification settings").click()
    expect(manager.get_by_text("Notification settings saved.")).to_be_visible()
    expect(manager.get_by_label("Charger faulted")).to_be_checked()
    expect(manager.get_by_label("Draws more than offered")).not_to_be_checked()

    admin = open_page(browser, stack)
    sign_in(admin, ADMIN)
    admin.get_by_role("link", name="Webhooks").click()
    admin.get_by_label("Name").fill("Ops receiver")
    admin.get_by_label("URL").fill(receiver.url)
    admin.get_by_label("Charger faulted").check()
    admin.get_by_role("button", name="Add endpoint").click()
    secret = admin.locator("#webhook-secret").inner_text().strip()
    assert len(secret) == 64
    shot(admin, "webhooks")
    admin.goto("/webhooks/")
    expect(admin.locator("#webhook-secret")).to_have_count(0)  # shown once

    charger_reports_faulted()

    def mails_to_manager() -> list:
        return [m for m in smtp_server.messages if m["To"] == MANAGER]

    wait_for(lambda: mails_to_manager() and receiver.got, "the email and the webhook")
    [mail] = mails_to_manager()
    assert mail["Subject"] == f"Notify Garage: Charger faulted ({CHARGER} connector 1)"
    text = mail.get_content()
    assert "GroundFailure" in text
    assert f"http://alpha.localhost/sites/{notify_site.slug}/" in text

    [post] = receiver.got
    assert webhook_signature_verify(secret, post.headers["X-EVP-Signature"], post.body)
    assert not webhook_signature_verify("0" * 64, post.headers["X-EVP-Signature"], post.body)
    body = json.loads(post.body)
    assert post.headers["X-EVP-Event"] == body["type"] == "alert.opened"
    assert body["site"] == {"slug": "notify-garage", "name": "Notify Garage"}
    assert body["alert"]["kind"] == "faulted"
    assert body["alert"]["charger"] == CHARGER

    admin.goto("/webhooks/deliveries/")
    row = admin.locator("#webhook-deliveries tbody tr", has_text=post.headers["X-EVP-Delivery"])
    expect(row).to_contain_text("delivered")
    expect(row).to_contain_text("HTTP 200")
    shot(admin, "webhook-deliveries")

    charger_reports_faulted()  # the same condition again: the open alert is refreshed, nobody told
    time.sleep(3)

    [alert] = SiteAlert.objects.filter(site=notify_site, kind=SiteAlert.Kind.FAULTED)
    assert alert.last_seen_at > alert.opened_at
    assert NotificationEvent.objects.filter(alert=alert).count() == 1
    assert len(mails_to_manager()) == 1
    assert len(receiver.got) == 1
    assert EmailDelivery.objects.filter(email=MANAGER).count() == 1
