"""What each person wants to hear, the organisation's webhook endpoints and the delivery log. Schema: tenant.

Loaded by ``balancing.models`` (they are the balancing app's models; migrations live there).
"""

import uuid

from django.conf import settings
from django.db import models

from balancing.models import Site, SiteAlert, SiteGroup

REPORT_READY = "report_ready"
# Every kind of event a person or an endpoint may subscribe to: each alert kind, and the monthly report.
EVENT_KINDS: tuple[tuple[str, str], ...] = (*SiteAlert.Kind.choices, (REPORT_READY, "Monthly report ready"))
EVENT_KIND_VALUES = tuple(value for value, _ in EVENT_KINDS)


class EventType(models.TextChoices):
    """The ``type`` of a webhook body and of the ``X-EVP-Event`` header."""

    ALERT_OPENED = "alert.opened", "Alert opened"
    ALERT_CLEARED = "alert.cleared", "Alert cleared"
    REPORT_READY = "report.ready", "Report ready"
    TEST = "test", "Test event"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class NotificationPreference(models.Model):
    """One person's choice: which kinds to get by email, for which of the sites they can see.

    A person without a row gets the defaults (``routing.default_kinds``). ``all_sites`` off
    narrows to the chosen groups and sites; either way only sites the person may see count.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preference"
    )
    email_kinds = models.JSONField(default=list, blank=True, help_text="Event kinds sent by email.")
    email_cleared = models.BooleanField(default=False, help_text="Also an email when an alert clears.")
    all_sites = models.BooleanField(default=True, help_text="Every site the person can see.")
    groups = models.ManyToManyField(SiteGroup, blank=True, related_name="+")
    sites = models.ManyToManyField(Site, blank=True, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"notifications of {self.user}"


class WebhookEndpoint(models.Model):
    """A URL of the organisation that gets signed POSTs of the events it subscribes to.

    The signing secret is never stored: it is HMAC-SHA256(WEBHOOK_SIGNING_KEY, ``secret_salt``)
    (``webhooks.endpoint_secret``), shown once at creation and at each rotation (a new salt).
    """

    name = models.CharField(max_length=100)
    url = models.URLField(max_length=500)
    kinds = models.JSONField(default=list, blank=True, help_text="Event kinds sent; empty = every kind.")
    send_cleared = models.BooleanField(default=True, help_text="Also alert.cleared events.")
    groups = models.ManyToManyField(
        SiteGroup, blank=True, related_name="webhook_endpoints", help_text="Only these groups' sites; none = all."
    )
    is_active = models.BooleanField(default=True)
    secret_salt = models.CharField(max_length=64)
    secret_rotated_at = models.DateTimeField()
    created_by = models.CharField(max_length=254, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"


class NotificationEvent(models.Model):
    """One thing that happened and was told: the body every webhook of it got (``payload``)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=20, choices=EventType.choices)
    kind = models.CharField(max_length=20, help_text="Alert kind, report_ready or test.")
    site = models.ForeignKey(Site, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    alert = models.ForeignKey(SiteAlert, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    subject = models.CharField(max_length=200)
    body = models.TextField()
    link = models.URLField(max_length=500, blank=True)
    payload = models.JSONField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.type} {self.subject}"


class _Delivery(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        abstract = True
        ordering = ["-created_at"]


class EmailDelivery(_Delivery):
    """One email of one event to one person; every attempt counted."""

    event = models.ForeignKey(NotificationEvent, on_delete=models.CASCADE, related_name="emails")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    email = models.EmailField()

    class Meta(_Delivery.Meta):
        constraints = [models.UniqueConstraint(fields=["event", "email"], name="email_delivery_once_per_event")]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="email_delivery_pending")]

    def __str__(self) -> str:
        return f"{self.email}: {self.status}"


class WebhookDelivery(_Delivery):
    """One POST of one event to one endpoint; ``id`` is the ``X-EVP-Delivery`` header."""

    event = models.ForeignKey(NotificationEvent, on_delete=models.CASCADE, related_name="webhooks")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta(_Delivery.Meta):
        constraints = [models.UniqueConstraint(fields=["event", "endpoint"], name="webhook_delivery_once_per_event")]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"], name="webhook_delivery_pending"),
            models.Index(fields=["endpoint", "-created_at"], name="webhook_delivery_latest"),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint.name}: {self.status}"
