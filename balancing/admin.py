"""Organisation admin (tenant schema): sites, circuit trees, limits, balancing runs, site groups and grants."""

from collections.abc import Sequence
from typing import Any

from django.contrib import admin
from django.db import transaction
from django.forms import ModelForm
from django.http import HttpRequest

from balancing.dispatch import site_rebalance_request
from balancing.groups import (
    site_grant_create,
    site_grant_delete,
    site_group_create,
    site_group_delete,
    site_group_update,
)
from balancing.models import (
    BalancingRun,
    ChargerModelCompliance,
    Circuit,
    LimitOverride,
    ProfilePush,
    Site,
    SiteAlert,
    SiteGrant,
    SiteGroup,
    SiteLimitSchedule,
)
from balancing.services import site_limits_refresh
from evplatform.admin_sites import tenant_admin_site
from tenants.accounts.services import audit_record


def _actor(request: HttpRequest) -> str:
    return getattr(request.user, "email", "") or "admin"


def _site_id(obj: Any) -> int | None:
    """The site whose limits ``obj`` (a site, circuit, schedule, override, charger, connector) is part of."""
    if isinstance(obj, Site):
        return obj.pk
    if hasattr(obj, "site_id"):
        return obj.site_id
    station = getattr(obj, "station", None)
    return getattr(station, "site_id", None)


def _value(obj: Any, name: str) -> Any:
    return getattr(obj, name, None)


class AuditedAdmin(admin.ModelAdmin):
    """Every change made in the admin is audited (who, when, old, new) and rebalances the site.

    That holds for additions, edits, the rows of inlines, and deletions (one at a time and the
    "delete selected" action): each is an audit row per field, and the affected sites get their
    fail-safe sized again and a balancing run once the change commits. ``audit_fields``: the
    fields a deletion records (their last values).
    """

    audit_fields: tuple[str, ...] = ()

    def _refresh(self, request: HttpRequest, site_ids: set[int | None], reason: str) -> None:
        for site_id in sorted(s for s in site_ids if s is not None):
            site_limits_refresh(site_id=site_id, actor=_actor(request), reason=reason)

    def _audit_deletion(self, request: HttpRequest, obj: Any) -> None:
        audit_record(
            actor=_actor(request),
            action="delete",
            object_type=type(obj).__name__.lower(),
            object_id=obj.pk,
            label=str(obj),
            changes=[(f, _value(obj, f), None) for f in self.audit_fields] or [("", str(obj), None)],
        )

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:
        old = type(obj).objects.filter(pk=obj.pk).first() if change else None
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            audit_record(
                actor=_actor(request),
                action="update" if change else "create",
                object_type=type(obj).__name__.lower(),
                object_id=obj.pk,
                label=str(obj),
                changes=[(f, getattr(old, f, None), getattr(obj, f)) for f in form.changed_data],
            )
            old_site = _site_id(old) if old is not None else None
            self._refresh(request, {_site_id(obj), old_site}, f"{type(obj).__name__} changed in admin")

    def save_formset(self, request: HttpRequest, form: ModelForm, formset: Any, change: bool) -> None:
        """The rows of an inline (a site's circuits, a charger's connectors): audited like the rest."""
        deleted = [f.instance for f in formset.deleted_forms] if formset.can_delete else []
        edited = [
            (f, type(f.instance).objects.filter(pk=f.instance.pk).first() if f.instance.pk else None)
            for f in formset.forms
            if f.has_changed() and f.instance not in deleted
        ]
        with transaction.atomic():
            for obj in deleted:
                self._audit_deletion(request, obj)
            super().save_formset(request, form, formset, change)
            for inline_form, old in edited:
                obj = inline_form.instance
                audit_record(
                    actor=_actor(request),
                    action="update" if old is not None else "create",
                    object_type=type(obj).__name__.lower(),
                    object_id=obj.pk,
                    label=str(obj),
                    changes=[(f, getattr(old, f, None), getattr(obj, f, None)) for f in inline_form.changed_data],
                )
            if deleted or edited:
                self._refresh(request, {_site_id(form.instance)}, f"{type(form.instance).__name__} changed in admin")

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        with transaction.atomic():
            site_id = _site_id(obj)
            self._audit_deletion(request, obj)
            super().delete_model(request, obj)
            self._refresh(request, {site_id}, f"{type(obj).__name__} deleted in admin")

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        with transaction.atomic():
            objs = list(queryset)
            for obj in objs:
                self._audit_deletion(request, obj)
            super().delete_queryset(request, queryset)
            self._refresh(request, {_site_id(obj) for obj in objs}, f"{queryset.model.__name__} deleted in admin")


class CircuitInline(admin.TabularInline):
    model = Circuit
    extra = 0
    fields = ("name", "kind", "parent", "limit_a", "limit_kw")


@admin.register(Site, site=tenant_admin_site)
class SiteAdmin(AuditedAdmin):
    list_display = ("name", "slug", "phases", "voltage_v", "limit_a", "demand_cap_kw", "balancing_policy", "timezone")
    list_filter = ("balancing_policy",)
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    inlines = (CircuitInline,)
    audit_fields = ("slug", "limit_a", "demand_cap_kw", "balancing_policy", "peak_margin_kw")


@admin.register(Circuit, site=tenant_admin_site)
class CircuitAdmin(AuditedAdmin):
    list_display = ("name", "site", "kind", "parent", "limit_a", "limit_kw")
    list_filter = ("site", "kind")
    search_fields = ("name",)
    audit_fields = ("name", "limit_a", "limit_kw")


@admin.register(SiteLimitSchedule, site=tenant_admin_site)
class SiteLimitScheduleAdmin(AuditedAdmin):
    list_display = ("name", "site", "weekdays", "start_time", "end_time", "limit_kw", "limit_a", "is_active")
    list_filter = ("site", "is_active")
    audit_fields = ("weekdays", "start_time", "end_time", "limit_kw", "limit_a")


@admin.register(LimitOverride, site=tenant_admin_site)
class LimitOverrideAdmin(AuditedAdmin):
    list_display = ("site", "reason", "limit_kw", "limit_a", "starts_at", "ends_at", "created_by")
    list_filter = ("site",)
    audit_fields = ("limit_kw", "limit_a", "starts_at", "ends_at")


class ProfilePushInline(admin.TabularInline):
    model = ProfilePush
    extra = 0
    fields = ("station", "connector", "kind", "old_limit_a", "new_limit_a", "status", "error", "sent_at")
    readonly_fields = fields
    can_delete = False


@admin.register(BalancingRun, site=tenant_admin_site)
class BalancingRunAdmin(admin.ModelAdmin):
    list_display = ("started_at", "site", "reason", "status", "repeats", "last_repeated_at", "solve_ms")
    list_filter = ("site", "status")
    date_hierarchy = "started_at"
    readonly_fields = [f.name for f in BalancingRun._meta.fields]
    inlines = (ProfilePushInline,)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(SiteAlert, site=tenant_admin_site)
class SiteAlertAdmin(admin.ModelAdmin):
    """Alerts are raised and cleared by the platform only: read-only here."""

    list_display = (
        "opened_at",
        "site",
        "kind",
        "station",
        "connector",
        "vendor",
        "model",
        "firmware_version",
        "detail",
        "last_seen_at",
        "cleared_at",
    )
    list_filter = ("site", "kind", ("cleared_at", admin.EmptyFieldListFilter))
    search_fields = ("detail", "station__charge_point_id", "vendor", "model")
    date_hierarchy = "opened_at"
    list_select_related = ("site", "station", "connector__station")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ChargerModelCompliance, site=tenant_admin_site)
class ChargerModelComplianceAdmin(admin.ModelAdmin):
    """What each charger model does with our profiles (learnt, read-only); an admin may switch a model
    to station-wide maximum profiles, which is audited and rebalances the sites with such chargers."""

    list_display = (
        "vendor",
        "model",
        "firmware_version",
        "profiles_accepted",
        "profiles_rejected",
        "accepted_ignored",
        "mean_reaction",
        "use_station_max",
        "updated_at",
    )
    list_editable = ("use_station_max",)
    list_filter = ("use_station_max",)
    search_fields = ("vendor", "model", "firmware_version")
    fields = (
        "vendor",
        "model",
        "firmware_version",
        "profiles_accepted",
        "profiles_rejected",
        "accepted_ignored",
        "reactions",
        "reaction_s_total",
        "use_station_max",
        "updated_at",
    )
    readonly_fields = tuple(f for f in fields if f != "use_station_max")

    @admin.display(description="mean reaction (s)")
    def mean_reaction(self, obj: ChargerModelCompliance) -> str:
        mean = obj.mean_reaction_s
        return "-" if mean is None else f"{mean:.1f}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:
        from chargepoint.models import ChargingStation

        old = type(obj).objects.filter(pk=obj.pk).first()
        with transaction.atomic():
            # Only the switch is written: the counters keep what the balancer added meanwhile.
            type(obj).objects.filter(pk=obj.pk).update(use_station_max=obj.use_station_max)
            if old is not None and old.use_station_max != obj.use_station_max:
                audit_record(
                    actor=getattr(request.user, "email", "") or "admin",
                    action="update",
                    object_type="compliance",
                    object_id=obj.pk,
                    label=str(obj) or "unknown model",
                    changes=[("use_station_max", old.use_station_max, obj.use_station_max)],
                )
                site_ids = (
                    ChargingStation.objects.filter(
                        vendor=obj.vendor, model=obj.model, firmware_version=obj.firmware_version
                    )
                    .values_list("site_id", flat=True)
                    .distinct()
                )
                for site_id in site_ids:
                    site_rebalance_request(site_id=site_id, reason=f"{obj}: limits as station maximum changed")


@admin.register(SiteGroup, site=tenant_admin_site)
class SiteGroupAdmin(admin.ModelAdmin):
    """Site groups with their sites; every change goes through ``balancing.groups`` (audited)."""

    list_display = ("name", "slug", "site_count")
    search_fields = ("name", "slug")
    fields = ("name", "slug", "sites")
    filter_horizontal = ("sites",)
    prepopulated_fields = {"slug": ("name",)}

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return ("slug",) if obj is not None else ()

    def get_prepopulated_fields(self, request: HttpRequest, obj: Any = None) -> dict[str, Sequence[str]]:
        return {} if obj is not None else {"slug": ("name",)}

    @admin.display(description="sites")
    def site_count(self, obj: SiteGroup) -> int:
        return obj.sites.count()

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:
        sites = form.cleaned_data.get("sites", ())
        if change:
            site_group_update(group=obj, name=obj.name, sites=sites, actor=_actor(request))
        else:
            created = site_group_create(name=obj.name, slug=obj.slug, sites=sites, actor=_actor(request))
            # The admin goes on with the object it built (its pk names the new row in messages and links).
            obj.pk, obj.created_at, obj.updated_at = created.pk, created.created_at, created.updated_at
            obj._state.adding = False

    def save_related(self, request: HttpRequest, form: ModelForm, formsets: Any, change: bool) -> None:
        """The sites were set (and audited) with the group in ``save_model``."""

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        site_group_delete(group=obj, actor=_actor(request))

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        with transaction.atomic():
            for group in queryset:
                site_group_delete(group=group, actor=_actor(request))


@admin.register(SiteGrant, site=tenant_admin_site)
class SiteGrantAdmin(admin.ModelAdmin):
    """Roles held on one site group or one site (a role on the whole organisation is the user's own).

    Added or removed, never edited (remove it and grant another); both audited.
    """

    list_display = ("user", "role", "group", "site", "created_at")
    list_filter = ("role", "group", "site")
    search_fields = ("user__email",)
    fields = ("user", "role", "group", "site")
    list_select_related = ("user", "group", "site")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:
        created = site_grant_create(user=obj.user, role=obj.role, group=obj.group, site=obj.site, actor=_actor(request))
        obj.pk, obj.created_at = created.pk, created.created_at
        obj._state.adding = False

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        site_grant_delete(grant=obj, actor=_actor(request))

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        with transaction.atomic():
            for grant in queryset.select_related("user", "group", "site"):
                site_grant_delete(grant=grant, actor=_actor(request))


from balancing.notifications import admin as notification_admin  # noqa: E402, F401 - registers its admins
