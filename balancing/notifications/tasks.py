"""Delivery of emails and webhooks on the ``notifications`` queue. Schema: tenant.

Each task tries its delivery once; a failed try raises ``DeliveryAttemptFailed`` and Celery's
``autoretry_for`` sends the task again after ``NOTIFICATION_RETRY_BACKOFF_S`` x 2^n seconds
(full jitter, at most ``NOTIFICATION_RETRY_BACKOFF_MAX_S``), ``NOTIFICATION_MAX_RETRIES`` times;
the last try marks the delivery failed instead of raising. The delivery row counts every try
and says when the next is due.
"""

from typing import Any

from django.conf import settings

from balancing.notifications.services import delivery_retry_note, email_delivery_attempt, webhook_delivery_attempt
from evplatform.celery import TenantTask, app


class DeliveryAttemptFailed(Exception):
    """One try of a delivery failed; the task is retried (or the delivery marked failed on the last)."""


class DeliveryTask(TenantTask):
    """Writes on the delivery row when its retry is due, then retries as Celery would."""

    abstract = True
    webhook = False

    def retry(self, *args: Any, countdown: float | None = None, **kwargs: Any) -> Any:
        delivery_id = (self.request.kwargs or {}).get("delivery_id")
        if delivery_id and countdown is not None:
            delivery_retry_note(webhook=self.webhook, delivery_id=str(delivery_id), countdown_s=countdown)
        return super().retry(*args, countdown=countdown, **kwargs)


class WebhookDeliveryTask(DeliveryTask):
    abstract = True
    webhook = True


RETRY = {
    "autoretry_for": (DeliveryAttemptFailed,),
    "retry_backoff": settings.NOTIFICATION_RETRY_BACKOFF_S,
    "retry_backoff_max": settings.NOTIFICATION_RETRY_BACKOFF_MAX_S,
    "retry_jitter": True,
    "max_retries": settings.NOTIFICATION_MAX_RETRIES,
}


def _last_try(task: Any) -> bool:
    return task.request.retries >= task.max_retries


@app.task(bind=True, base=DeliveryTask, name="balancing.notifications.tasks.email_deliver", **RETRY)
def email_deliver(self: Any, *, delivery_id: str) -> bool:
    """Send one notification email; retried with back-off until the SMTP server takes it."""
    final = _last_try(self)
    done = email_delivery_attempt(delivery_id=delivery_id, final=final)
    if not done and not final:
        raise DeliveryAttemptFailed(f"email delivery {delivery_id}")
    return done


@app.task(bind=True, base=WebhookDeliveryTask, name="balancing.notifications.tasks.webhook_deliver", **RETRY)
def webhook_deliver(self: Any, *, delivery_id: str) -> bool:
    """POST one webhook; retried with back-off until the endpoint answers 2xx."""
    final = _last_try(self)
    done = webhook_delivery_attempt(delivery_id=delivery_id, final=final)
    if not done and not final:
        raise DeliveryAttemptFailed(f"webhook delivery {delivery_id}")
    return done
