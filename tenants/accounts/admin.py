"""Users in both admin sites: platform staff in public, an organisation's people in its own."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from evplatform.admin_sites import platform_admin_site, tenant_admin_site
from tenants.accounts.models import AuditEvent, User, WorkerHeartbeat


class UserAdmin(DjangoUserAdmin):
    ordering = ("email",)
    list_display = ("email", "full_name", "role", "is_active", "is_staff", "last_login")
    list_filter = ("role", "is_active", "is_staff")
    search_fields = ("email", "full_name")
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Person", {"fields": ("full_name", "role")}),
        ("Access", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "role", "password1", "password2")}),)


class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ("queue", "completed_at", "sent_at", "worker")
    readonly_fields = ("queue", "token", "sent_at", "completed_at", "worker")


for site in (platform_admin_site, tenant_admin_site):
    site.register(User, UserAdmin)
    site.register(WorkerHeartbeat, WorkerHeartbeatAdmin)


@admin.register(AuditEvent, site=tenant_admin_site)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("at", "actor", "action", "object_type", "object_label", "field", "old_value", "new_value")
    list_filter = ("object_type", "action")
    search_fields = ("actor", "object_label")
    date_hierarchy = "at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
