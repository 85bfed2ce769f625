"""Organisation admin (tenant schema): chargers, connectors, sessions, meter samples, idTags, commands."""

from django.contrib import admin

from balancing.admin import AuditedAdmin
from chargepoint.models import ChargerCommand, ChargingSession, ChargingStation, Connector, IdTag
from evplatform.admin_sites import tenant_admin_site


class ConnectorInline(admin.TabularInline):
    model = Connector
    extra = 0
    fields = ("connector_id", "status", "error_code", "status_changed_at", "max_current_a")
    readonly_fields = ("status", "error_code", "status_changed_at")


@admin.register(ChargingStation, site=tenant_admin_site)
class ChargingStationAdmin(AuditedAdmin):
    """A charger's site, circuit and ratings (and its connectors') limit what it is given: changes
    and deletions are audited and rebalance the site (``AuditedAdmin``)."""

    list_display = ("charge_point_id", "site", "circuit", "max_current_a", "phases", "is_online", "last_seen_at")
    list_filter = ("site", "is_online", "vendor")
    search_fields = ("charge_point_id", "vendor", "model", "serial_number")
    readonly_fields = (
        "vendor",
        "model",
        "serial_number",
        "firmware_version",
        "ocpp_version",
        "is_online",
        "last_seen_at",
        "last_boot_at",
        "registered_at",
        "updated_at",
    )
    inlines = (ConnectorInline,)
    audit_fields = ("charge_point_id", "site", "circuit", "max_current_a", "phases")

    def has_add_permission(self, request):
        # Chargers are registered with their password (register_charger), which also writes
        # the public identity registry; a bare admin form would leave them unable to connect.
        return False


@admin.register(ChargingSession, site=tenant_admin_site)
class ChargingSessionAdmin(admin.ModelAdmin):
    list_display = ("transaction_id", "station", "connector", "started_at", "stopped_at", "energy_kwh")
    list_filter = ("station__site",)
    search_fields = ("transaction_id", "id_tag", "station__charge_point_id")
    date_hierarchy = "started_at"

    def has_add_permission(self, request):
        return False


@admin.register(IdTag, site=tenant_admin_site)
class IdTagAdmin(admin.ModelAdmin):
    """The allow-list a site uses when it does not free-vend (Site.free_vend off)."""

    list_display = ("id_tag", "label", "site", "is_active", "expires_at", "updated_at")
    list_filter = ("site", "is_active")
    search_fields = ("id_tag", "label")


@admin.register(ChargerCommand, site=tenant_admin_site)
class ChargerCommandAdmin(admin.ModelAdmin):
    """What the platform asked of chargers and what they answered (read only)."""

    list_display = ("requested_at", "charge_point_id", "action", "status", "charger_status", "duration_ms")
    list_filter = ("action", "status")
    search_fields = ("charge_point_id", "request_id")
    date_hierarchy = "requested_at"
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
