"""Django admin views of the notification tables: read-only (changes go through the portal, audited)."""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from balancing.notifications.models import (
    EmailDelivery,
    NotificationEvent,
    NotificationPreference,
    WebhookDelivery,
    WebhookEndpoint,
)
from evplatform.admin_sites import tenant_admin_site


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookEndpoint, site=tenant_admin_site)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    list_display = ("name", "url", "is_active", "send_cleared", "secret_rotated_at", "created_by")
    exclude = ("secret_salt",)


@admin.register(WebhookDelivery, site=tenant_admin_site)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "endpoint", "event", "status", "attempts", "response_code", "next_attempt_at")
    list_filter = ("status", "endpoint")


@admin.register(EmailDelivery, site=tenant_admin_site)
class EmailDeliveryAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "email", "event", "status", "attempts", "next_attempt_at")
    list_filter = ("status",)


@admin.register(NotificationEvent, site=tenant_admin_site)
class NotificationEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "type", "kind", "site", "subject")
    list_filter = ("type", "kind")


@admin.register(NotificationPreference, site=tenant_admin_site)
class NotificationPreferenceAdmin(ReadOnlyAdmin):
    list_display = ("user", "all_sites", "email_cleared", "updated_at")
