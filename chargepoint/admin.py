"""Organisation admin (tenant schema): chargers, connectors, sessions, meter samples, idTags, commands.

Also the platform admin's (public schema) charger identity registry: operators register chargers,
move them between sites or organisations, and reset their passwords there; a new password is
shown once and stored only as a hash (``chargepoint.registry``).
"""

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django_tenants.utils import get_public_schema_name

from balancing.admin import AuditedAdmin
from chargepoint.models import ChargerCommand, ChargingSession, ChargingStation, Connector, IdTag
from chargepoint.registry import charger_move, charger_password_generate, charger_password_reset
from chargepoint.services import charger_register
from evplatform.admin_sites import platform_admin_site, tenant_admin_site
from evplatform.permissions import actor_of
from tenants.models import ChargePointIdentity, Tenant


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


# --- Platform admin (public schema): the charger identity registry ----------------------------


def _organisations() -> Any:
    return Tenant.objects.exclude(schema_name=get_public_schema_name()).order_by("name")


class RegisterChargerForm(forms.Form):
    tenant = forms.ModelChoiceField(queryset=Tenant.objects.none(), label="Organisation")
    site_slug = forms.SlugField(label="Site (slug)")
    charge_point_id = forms.CharField(max_length=48, label="Charge point id")
    max_current_a = forms.DecimalField(min_value=Decimal(6), max_value=Decimal(1000), label="Rating per phase (A)")
    phases = forms.TypedChoiceField(choices=[(3, "3"), (1, "1")], coerce=int)
    wiring = forms.ChoiceField(choices=[("", "default"), *ChargingStation.Wiring.choices], required=False)
    circuit = forms.CharField(max_length=100, required=False, label="Circuit (name)")
    connectors = forms.IntegerField(min_value=1, max_value=16, initial=1)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tenant"].queryset = _organisations()  # type: ignore[attr-defined]


class MoveChargerForm(forms.Form):
    tenant = forms.ModelChoiceField(queryset=Tenant.objects.none(), label="Organisation")
    site_slug = forms.SlugField(label="Site (slug)")
    circuit = forms.CharField(max_length=100, required=False, label="Circuit (name)")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["tenant"].queryset = _organisations()  # type: ignore[attr-defined]


@admin.register(ChargePointIdentity, site=platform_admin_site)
class ChargePointIdentityAdmin(admin.ModelAdmin):
    list_display = ("charge_point_id", "tenant", "site_slug", "is_active", "password_changed_at")
    list_filter = ("tenant", "is_active")
    search_fields = ("charge_point_id", "site_slug")
    exclude = ("password_hash",)
    readonly_fields = ("charge_point_id", "tenant", "site_slug", "password_changed_at", "created_at", "updated_at")
    actions = ("reset_passwords",)
    change_form_template = "admin/tenants/chargepointidentity/change_form.html"
    change_list_template = "admin/tenants/chargepointidentity/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # registering needs the charger's site and rating: the "Register a charger" page

    def get_urls(self) -> list[URLPattern]:
        extra = [
            path(
                "register/", self.admin_site.admin_view(self.register_view), name="tenants_chargepointidentity_register"
            ),
            path("<int:pk>/move/", self.admin_site.admin_view(self.move_view), name="tenants_chargepointidentity_move"),
        ]
        return extra + super().get_urls()

    @admin.action(description="Reset the password of the selected chargers (shown once)")
    def reset_passwords(self, request: HttpRequest, queryset: Any) -> None:
        for identity in queryset.select_related("tenant"):
            password = charger_password_reset(identity=identity, actor=actor_of(request))
            messages.warning(request, f"{identity.charge_point_id}: new password {password} (shown only now)")

    def _render(self, request: HttpRequest, title: str, form: forms.Form, obj: Any = None) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "form": form,
            "original": obj,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/tenants/chargepointidentity/form.html", context)

    def register_view(self, request: HttpRequest) -> HttpResponse:
        form = RegisterChargerForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            password = charger_password_generate()
            try:
                charger_register(
                    tenant=data["tenant"],
                    site_slug=data["site_slug"],
                    charge_point_id=data["charge_point_id"],
                    password=password,
                    max_current_a=data["max_current_a"],
                    phases=data["phases"],
                    wiring=data["wiring"] or None,
                    circuit_name=data["circuit"] or None,
                    connectors=data["connectors"],
                )
            except (ValidationError, ObjectDoesNotExist) as exc:
                form.add_error(None, "; ".join(getattr(exc, "messages", [str(exc)])))
            else:
                messages.warning(
                    request,
                    f"{data['charge_point_id']} registered; its password is {password} "
                    "(shown only now: configure it in the charger)",
                )
                return redirect("platform_admin:tenants_chargepointidentity_changelist")
        return self._render(request, "Register a charger", form)

    def move_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        identity = get_object_or_404(ChargePointIdentity.objects.select_related("tenant"), pk=pk)
        form = MoveChargerForm(
            request.POST or None, initial={"tenant": identity.tenant, "site_slug": identity.site_slug}
        )
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                outcome = charger_move(
                    identity=identity,
                    tenant=data["tenant"],
                    site_slug=data["site_slug"],
                    circuit_name=data["circuit"] or None,
                    actor=actor_of(request),
                )
            except (ValidationError, ObjectDoesNotExist) as exc:
                form.add_error(None, "; ".join(getattr(exc, "messages", [str(exc)])))
            else:
                note = f"; new password {outcome.new_password} (shown only now)" if outcome.new_password else ""
                messages.success(
                    request, f"{identity.charge_point_id} moved to {data['tenant'].slug}/{data['site_slug']}{note}"
                )
                return redirect("platform_admin:tenants_chargepointidentity_changelist")
        return self._render(request, f"Move {identity.charge_point_id}", form, identity)
