"""Organisation admin (tenant schema): tariffs, installation cost models, interval data, reports.

Reports and their files are read-only here: a new version comes from regeneration.
"""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse

from billing.models import (
    InstallationCostModel,
    IntervalEnergy,
    ReportDelivery,
    SavingsReport,
    SavingsReportFile,
    Tariff,
)
from evplatform.admin_sites import tenant_admin_site


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Tariff, site=tenant_admin_site)
class TariffAdmin(ReadOnlyAdmin):
    list_display = ("site", "version", "name", "utility", "valid_from", "valid_until", "imported_at")
    list_filter = ("site",)
    readonly_fields = [f.name for f in Tariff._meta.fields]


@admin.register(InstallationCostModel, site=tenant_admin_site)
class InstallationCostModelAdmin(admin.ModelAdmin):
    list_display = ("site", "reference_chargers", "updated_at")


@admin.register(IntervalEnergy, site=tenant_admin_site)
class IntervalEnergyAdmin(ReadOnlyAdmin):
    list_display = ("site", "station", "start", "energy_kwh", "resets")
    list_filter = ("site",)
    date_hierarchy = "start"


class ReportFileInline(admin.TabularInline):
    model = SavingsReportFile
    fields = ("format", "size_bytes", "sha256", "download")
    readonly_fields = fields
    extra = 0
    can_delete = False

    @admin.display(description="file")
    def download(self, obj: SavingsReportFile) -> str:
        from django.urls import reverse
        from django.utils.html import format_html

        url = reverse("tenant_admin:billing_savingsreport_download", args=[obj.pk])
        return format_html('<a href="{}">download</a>', url)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SavingsReport, site=tenant_admin_site)
class SavingsReportAdmin(ReadOnlyAdmin):
    list_display = ("month", "version", "reason", "requested_by", "generated_at", "data_sha256")
    readonly_fields = ("month", "version", "reason", "requested_by", "generated_at", "tariffs", "data_sha256")
    exclude = ("data",)
    inlines = [ReportFileInline]
    actions = ["regenerate"]

    @admin.action(description="Regenerate as a new version (the selected ones stay as they are)")
    def regenerate(self, request: HttpRequest, queryset: Any) -> None:
        from billing.savings_reports import savings_report_request

        months = sorted({f"{report.month:%Y-%m}" for report in queryset})
        who = getattr(request.user, "email", "") or "admin"
        for month in months:
            savings_report_request(month=month, requested_by=who)
        self.message_user(request, f"Regeneration queued for {', '.join(months)}; a new version appears when done.")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_view_permission(request, obj)

    def get_urls(self) -> list[Any]:
        from django.urls import path

        return [
            path(
                "file/<int:file_id>/",
                self.admin_site.admin_view(self.download_view),
                name="billing_savingsreport_download",
            ),
            *super().get_urls(),
        ]

    def download_view(self, request: HttpRequest, file_id: int) -> HttpResponse:
        from django.core.exceptions import PermissionDenied
        from django.shortcuts import get_object_or_404

        if not self.has_view_permission(request):
            raise PermissionDenied
        from billing.views import report_file_response

        stored = get_object_or_404(SavingsReportFile.objects.select_related("report"), pk=file_id)
        tenant_slug = getattr(getattr(request, "tenant", None), "slug", "tenant")
        return report_file_response(report=stored.report, file_format=stored.format, tenant_slug=tenant_slug)


@admin.register(ReportDelivery, site=tenant_admin_site)
class ReportDeliveryAdmin(ReadOnlyAdmin):
    """Who was mailed which report version, and whether it went (a failed send says why)."""

    list_display = ("report", "email", "status", "attempts", "sent_at", "last_error")
    list_filter = ("status",)
    search_fields = ("email",)
    readonly_fields = [f.name for f in ReportDelivery._meta.fields]
