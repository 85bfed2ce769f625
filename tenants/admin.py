"""Platform admin (public schema): organisations and their domains.

The charger identity registry's page (register, move, reset a password) is the chargers' own:
``chargepoint.admin.ChargePointIdentityAdmin``, on the same admin site.
"""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from evplatform.admin_sites import platform_admin_site
from tenants.models import Domain, Tenant


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0


@admin.register(Tenant, site=platform_admin_site)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "schema_name", "is_active", "created_at")
    search_fields = ("name", "slug")
    readonly_fields = ("schema_name", "created_at", "updated_at")
    inlines = (DomainInline,)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting an organisation drops nothing by design; deactivate it instead.
        return False


@admin.register(Domain, site=platform_admin_site)
class DomainAdmin(admin.ModelAdmin):
    list_display = ("domain", "tenant", "is_primary")
    search_fields = ("domain",)
