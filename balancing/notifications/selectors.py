"""Reads of the notification pages: preferences, endpoints, deliveries. Schema: tenant."""

from django.db.models import QuerySet

from balancing.access import Access
from balancing.models import Site, SiteGroup
from balancing.notifications.models import (
    DeliveryStatus,
    EmailDelivery,
    NotificationPreference,
    WebhookDelivery,
    WebhookEndpoint,
)
from tenants.accounts.models import User


def preference_find(*, user: User) -> NotificationPreference | None:
    """The person's own choice, with its groups and sites; None: they get the defaults."""
    return NotificationPreference.objects.filter(user=user).prefetch_related("groups", "sites").first()


def preference_sites(*, access: Access) -> QuerySet[Site]:
    """The sites a person may choose: those in their reach, by name."""
    return access.sites().order_by("name")


def preference_groups(*, access: Access) -> QuerySet[SiteGroup]:
    """The site groups a person may choose: every one on the whole organisation, else those with a site in reach."""
    groups = SiteGroup.objects.order_by("name")
    site_ids = access.site_ids()
    if site_ids is not None:
        groups = groups.filter(sites__in=site_ids).distinct()
    return groups


def endpoint_list(*, with_groups: bool = False) -> QuerySet[WebhookEndpoint]:
    """The organisation's webhook endpoints by name (``with_groups``: their groups fetched with them)."""
    endpoints = WebhookEndpoint.objects.order_by("name")
    return endpoints.prefetch_related("groups") if with_groups else endpoints


def endpoint_find(*, pk: int) -> WebhookEndpoint | None:
    return WebhookEndpoint.objects.filter(pk=pk).first()


def webhook_deliveries(*, endpoint_id: int | None = None, status: str = "") -> QuerySet[WebhookDelivery]:
    """Webhook POSTs, newest first, to one endpoint and in one status (``DeliveryStatus``) if given."""
    posts = WebhookDelivery.objects.select_related("event", "endpoint", "event__site").order_by("-created_at")
    if endpoint_id is not None:
        posts = posts.filter(endpoint_id=endpoint_id)
    if status in DeliveryStatus.values:
        posts = posts.filter(status=status)
    return posts


def email_deliveries(*, status: str = "", limit: int) -> QuerySet[EmailDelivery]:
    """The latest notification emails, newest first, in one status (``DeliveryStatus``) if given."""
    emails = EmailDelivery.objects.select_related("event", "event__site").order_by("-created_at")
    if status in DeliveryStatus.values:
        emails = emails.filter(status=status)
    return emails[:limit]
