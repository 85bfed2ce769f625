"""Organisation admin (tenant schema): sites and their circuit trees."""

from django.contrib import admin

from balancing.models import Circuit, Site
from evplatform.admin_sites import tenant_admin_site


class CircuitInline(admin.TabularInline):
    model = Circuit
    extra = 0
    fields = ("name", "kind", "parent", "limit_a", "limit_kw")


@admin.register(Site, site=tenant_admin_site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "phases", "voltage_v", "limit_a", "demand_cap_kw", "timezone")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    inlines = (CircuitInline,)


@admin.register(Circuit, site=tenant_admin_site)
class CircuitAdmin(admin.ModelAdmin):
    list_display = ("name", "site", "kind", "parent", "limit_a", "limit_kw")
    list_filter = ("site", "kind")
    search_fields = ("name",)
