"""Users in both admin sites: platform staff in public, an organisation's people in its own."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from evplatform.admin_sites import platform_admin_site, tenant_admin_site
from tenants.accounts.models import User, WorkerHeartbeat


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
