"""Platform admin (public schema): organisations, domains and the charger identity registry."""

from django.contrib import admin

from evplatform.admin_sites import platform_admin_site
from tenants.models import ChargePointIdentity, Domain, Tenant


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0


@admin.register(Tenant, site=platform_admin_site)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "schema_name", "is_active", "created_at")
    search_fields = ("name", "slug")
    readonly_fields = ("schema_name", "created_at", "updated_at")
    inlines = (DomainInline,)

    def has_delete_permission(self, request, obj=None):
        # Deleting an organisation drops nothing by design; deactivate it instead.
        return False


@admin.register(Domain, site=platform_admin_site)
class DomainAdmin(admin.ModelAdmin):
    list_display = ("domain", "tenant", "is_primary")
    search_fields = ("domain",)


@admin.register(ChargePointIdentity, site=platform_admin_site)
class ChargePointIdentityAdmin(admin.ModelAdmin):
    list_display = ("charge_point_id", "tenant", "site_slug", "is_active", "password_changed_at")
    list_filter = ("tenant", "is_active")
    search_fields = ("charge_point_id", "site_slug")
    exclude = ("password_hash",)
    readonly_fields = ("password_changed_at", "created_at", "updated_at")
