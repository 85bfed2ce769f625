"""Deliveries: emails through a real SMTP server, webhooks to a real local receiver, with Celery's retries.

The eager runs (``task.apply``) take Celery's retry path in-process, at once; the worker test
runs a real ``celery worker`` of its own (its own queue prefix, so no other worker takes the
task) and checks that the back-off retries reach a receiver that answers 500 twice, then 200.
"""

import os
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from django_tenants.utils import tenant_context

from balancing.alerts import alert_raise
from balancing.models import Site, SiteAlert
from balancing.notifications.models import (
    DeliveryStatus,
    EmailDelivery,
    EventType,
    NotificationEvent,
    WebhookDelivery,
    WebhookEndpoint,
)
from balancing.notifications.services import webhook_endpoint_create, webhook_test_send
from balancing.notifications.tasks import email_deliver, webhook_deliver
from balancing.notifications.webhooks import endpoint_secret, webhook_signature_verify
from tenants.accounts.models import Role, User
from tests.balancing.notification_helpers import Receiver, webhook_receiver
from tests.conftest import broker_queues_delete, start_celery_worker, stop_celery_worker
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db
ATTEMPTS_AT_MOST = settings.NOTIFICATION_MAX_RETRIES + 1


def test_a_webhook_that_keeps_failing_is_tried_max_retries_times_more_and_marked_failed(
    django_capture_on_commit_callbacks,
) -> None:
    with webhook_receiver([500] * 50) as receiver:
        endpoint, _ = webhook_endpoint_create(
            name="down", url=receiver.url, kinds=[], send_cleared=True, group_ids=[], actor="t"
        )
        with django_capture_on_commit_callbacks(execute=False):
            event = webhook_test_send(endpoint=endpoint, actor="t")
        delivery = event.webhooks.get()

        webhook_deliver.apply(kwargs={"delivery_id": str(delivery.pk)})

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempts == ATTEMPTS_AT_MOST == len(receiver.got)
    assert delivery.response_code == 500
    assert "HTTP 500" in delivery.last_error
    assert delivery.delivered_at is None
    assert {r.headers["X-EVP-Delivery"] for r in receiver.got} == {str(delivery.pk)}


def test_a_webhook_that_recovers_is_delivered_once_and_not_sent_again(django_capture_on_commit_callbacks) -> None:
    with webhook_receiver([500]) as receiver:
        endpoint, secret = webhook_endpoint_create(
            name="flaky", url=receiver.url, kinds=[], send_cleared=True, group_ids=[], actor="t"
        )
        with django_capture_on_commit_callbacks(execute=False):
            event = webhook_test_send(endpoint=endpoint, actor="t")
        delivery = event.webhooks.get()

        webhook_deliver.apply(kwargs={"delivery_id": str(delivery.pk)})
        webhook_deliver.apply(kwargs={"delivery_id": str(delivery.pk)})  # a redelivered task: already done

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == (DeliveryStatus.DELIVERED, 2, 200)
    assert delivery.delivered_at is not None
    assert len(receiver.got) == 2
    assert all(webhook_signature_verify(secret, r.headers["X-EVP-Signature"], r.body) for r in receiver.got)


def test_an_alert_email_reaches_the_smtp_server_naming_the_site_and_condition(
    smtp_server, django_capture_on_commit_callbacks
) -> None:
    site = SiteFactory(slug="mail-garage", name="Mail Garage")
    User.objects.create_user(email="em.mail@alpha.example", password="x-pass-2026-long", role=Role.ENERGY_MANAGER)
    with django_capture_on_commit_callbacks(execute=False):
        alert_raise(site=site, kind=SiteAlert.Kind.OFFLINE, detail="MAIL-CP-1 silent for 5 min", now=timezone.now())
    delivery = EmailDelivery.objects.get(email="em.mail@alpha.example")

    with override_settings(**smtp_server.email_settings):
        email_deliver.apply(kwargs={"delivery_id": str(delivery.pk)})

    [message] = [m for m in smtp_server.messages if m["To"] == "em.mail@alpha.example"]
    assert message["Subject"] == "Mail Garage: Charger offline (the site)"
    text = message.get_content()
    assert "MAIL-CP-1 silent for 5 min" in text
    assert "http://alpha.localhost/sites/mail-garage/" in text
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DELIVERED, 1)


def test_an_email_the_smtp_server_refuses_is_retried_and_marked_failed(
    smtp_server, django_capture_on_commit_callbacks
) -> None:
    site = SiteFactory(slug="refused-garage")
    User.objects.create_user(email="em.refused@alpha.example", password="x-pass-2026-long", role=Role.ADMIN)
    with django_capture_on_commit_callbacks(execute=False):
        alert_raise(site=site, kind=SiteAlert.Kind.OVERDRAW, detail="x", now=timezone.now())
    delivery = EmailDelivery.objects.get(email="em.refused@alpha.example")

    wrong = {**smtp_server.email_settings, "EMAIL_HOST_PASSWORD": "not-the-password", "EMAIL_TIMEOUT": 1}
    with override_settings(**wrong):
        email_deliver.apply(kwargs={"delivery_id": str(delivery.pk)})

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, ATTEMPTS_AT_MOST)
    assert delivery.last_error.startswith("SMTP")  # refused, or cut off while the server stalls a wrong login
    assert smtp_server.messages == []


# --- A real worker and Celery's back-off ------------------------------------------------------

PREFIX = f"{settings.CELERY_QUEUE_PREFIX}notify{os.getpid()}."


@pytest.fixture(scope="module")
def notify_worker(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[None]:
    """A worker of its own deployment (queue prefix): only it takes these deliveries."""
    log_path = tmp_path_factory.mktemp("notify-worker") / "worker.log"
    with django_db_blocker.unblock():
        worker = start_celery_worker(
            env={"CELERY_QUEUE_PREFIX": PREFIX, "NOTIFICATION_RETRY_BACKOFF_S": "1"},
            log_path=log_path,
            hostname=f"notify-worker-{os.getpid()}@%h",
        )
    yield
    stop_celery_worker(worker)
    broker_queues_delete(PREFIX)


@pytest.fixture(scope="module")
def committed_delivery(tenant, django_db_blocker) -> Iterator[tuple[WebhookEndpoint, WebhookDelivery, Receiver]]:
    """An endpoint, an event and its pending delivery, committed (the worker is another process)."""
    receiver_context = webhook_receiver([500, 500])
    receiver = receiver_context.__enter__()
    with django_db_blocker.unblock(), tenant_context(tenant):
        site = Site.objects.create(slug=f"retry-{uuid.uuid4().hex[:6]}", name="Retry Garage", limit_a=63)
        endpoint = WebhookEndpoint.objects.create(
            name="retry", url=receiver.url, secret_salt="retry-salt", secret_rotated_at=timezone.now()
        )
        now = timezone.now()
        event = NotificationEvent.objects.create(
            type=EventType.ALERT_OPENED,
            kind="offline",
            site=site,
            subject="s",
            body="b",
            payload={"id": "x", "type": "alert.opened", "site": {"slug": site.slug, "name": site.name}},
            created_at=now,
        )
        delivery = WebhookDelivery.objects.create(event=event, endpoint=endpoint, created_at=now)
    yield endpoint, delivery, receiver
    receiver_context.__exit__(None, None, None)
    with django_db_blocker.unblock(), tenant_context(tenant):
        event.delete()
        endpoint.delete()
        site.delete()


def test_a_real_worker_retries_with_back_off_until_the_receiver_answers_200(notify_worker, committed_delivery) -> None:
    endpoint, delivery, receiver = committed_delivery

    webhook_deliver.apply_async(
        kwargs={"delivery_id": str(delivery.pk)},
        headers={"_schema_name": "alpha"},
        exchange=f"{PREFIX}evplatform",
        routing_key=f"{PREFIX}notifications",
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        delivery.refresh_from_db()
        if delivery.status != DeliveryStatus.PENDING:
            break
        time.sleep(0.2)

    assert (delivery.status, delivery.attempts, delivery.response_code) == (DeliveryStatus.DELIVERED, 3, 200)
    assert len(receiver.got) == 3
    assert {r.headers["X-EVP-Delivery"] for r in receiver.got} == {str(delivery.pk)}
    secret = endpoint_secret(endpoint.secret_salt)
    assert all(webhook_signature_verify(secret, r.headers["X-EVP-Signature"], r.body) for r in receiver.got)
    assert delivery.delivered_at is not None
    assert delivery.delivered_at - delivery.created_at < timedelta(seconds=30)
