"""REST API for sites, circuits, limit schedules, live status, runs and site meter readings. Schema: tenant."""

from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import generics, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.response import Response

from balancing.access import access_of, site_for
from balancing.meter import site_meter_record
from balancing.models import BalancingRun, Circuit, Site, SiteAlert, SiteLimitSchedule, SiteMeterReading
from balancing.selectors import runs_seen_since, site_meter_latest, site_overview
from balancing.services import SITE_LIMIT_FIELDS, schedule_create, schedule_delete, site_limits_update
from evplatform.api import time_range
from evplatform.api_access import ReachableSiteField, SiteScopedMixin
from evplatform.api_plumbing import (
    STRICT_FIELD_MAPPING,
    LenientJSONParser,
    LocalTimeField,
    StrictBooleanField,
    StrictRegexField,
    TimeBoundField,
    capped_window,
    query_params,
    slug_filter,
)
from evplatform.permissions import CHANGE_LIMITS, actor_of

# A site meter readings request covers at most this many days (the last day by default).
METER_READINGS_MAX_DAYS = 31


class SiteSerializer(serializers.ModelSerializer):
    serializer_field_mapping = STRICT_FIELD_MAPPING

    class Meta:
        model = Site
        fields = ["slug", "name", "timezone", "voltage_v", "phases", *SITE_LIMIT_FIELDS, "free_vend"]
        read_only_fields = ["slug", "name", "timezone", "voltage_v", "phases", "free_vend"]


class CircuitSerializer(serializers.ModelSerializer):
    site: "serializers.SlugRelatedField[Site]" = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    parent_name = serializers.CharField(
        source="parent.name", read_only=True, default=None, allow_null=True, help_text="null: a top-level circuit."
    )

    class Meta:
        model = Circuit
        fields = ["id", "site", "name", "kind", "parent_name", "limit_a", "limit_kw"]


class ScheduleSerializer(serializers.ModelSerializer):
    serializer_field_mapping = STRICT_FIELD_MAPPING
    site: "serializers.SlugRelatedField[Site]" = ReachableSiteField(write_roles=CHANGE_LIMITS)
    weekdays = StrictRegexField(
        r"^[0-6]{1,7}$",
        max_length=7,
        help_text="Digits 0 (Monday) to 6 (Sunday), e.g. 01234.",
        error_messages={"invalid": "digits 0 (Monday) to 6 (Sunday), e.g. 01234"},
    )
    start_time = LocalTimeField(help_text="Local time the window opens, HH:MM.")
    end_time = LocalTimeField(help_text="Local time it closes, HH:MM; before start_time: it runs past midnight.")

    class Meta:
        model = SiteLimitSchedule
        fields = ["id", "site", "name", "weekdays", "start_time", "end_time", "limit_kw", "limit_a", "is_active"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("limit_kw") is None and attrs.get("limit_a") is None:
            raise serializers.ValidationError({"limit_kw": ["set limit_kw, limit_a or both"]})
        weekdays = attrs.get("weekdays", "")
        if not weekdays or any(ch not in "0123456" for ch in weekdays):
            raise serializers.ValidationError({"weekdays": ["digits 0 (Monday) to 6 (Sunday), e.g. 01234"]})
        return attrs


class RunSerializer(serializers.ModelSerializer):
    site: "serializers.SlugRelatedField[Site]" = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = BalancingRun
        fields = [
            "id",
            "site",
            "reason",
            "started_at",
            "finished_at",
            "status",
            "inputs_digest",
            "measured_kw",
            "allocated_kw",
            "limit_kw",
            "unmanaged_kw",
            "phase_measured_a",
            "phase_allocated_a",
            "phase_limit_a",
            "limits",
            "result",
            "solve_ms",
            "error",
            "repeats",
            "last_repeated_at",
        ]
        extra_kwargs = {
            "repeats": {
                "help_text": "Later runs that found the site unchanged (same inputs digest and outcome, "
                "nothing pushed or changed), counted here instead of stored again: 'repeated N times until "
                "last_repeated_at'."
            },
        }


class StatusAlertSerializer(serializers.ModelSerializer):
    """One open alert: the condition, the charger (as it identified itself at boot) and what it did."""

    kind_label = serializers.CharField(source="get_kind_display", read_only=True)
    charger = serializers.CharField(source="station.charge_point_id", read_only=True, default=None, allow_null=True)
    connector = serializers.IntegerField(source="connector.connector_id", read_only=True, default=None, allow_null=True)
    firmware = serializers.CharField(source="firmware_version", read_only=True)

    class Meta:
        model = SiteAlert
        fields = [
            "kind",
            "kind_label",
            "charger",
            "connector",
            "vendor",
            "model",
            "firmware",
            "detail",
            "opened_at",
            "last_seen_at",
        ]


class StatusFailsafeSerializer(serializers.Serializer):
    """The current every charger of the site falls back to without the platform, and how it was chosen."""

    limit_a = serializers.DecimalField(max_digits=5, decimal_places=1, help_text="Per charger (A).")
    auto = serializers.BooleanField(help_text="True: sized to the site's limits; false: set by hand.")
    chosen = serializers.CharField(help_text="How the value was chosen, in words.")


class StatusMeterSerializer(serializers.ModelSerializer):
    """The site meter's latest reading."""

    class Meta:
        model = SiteMeterReading
        fields = ["measured_at", "received_at", "source", "current_a", "power_kw", "includes_chargers"]


class SiteStatusSerializer(serializers.Serializer):
    """Live status of one site (``GET /sites/<slug>/status/``)."""

    site = serializers.SlugField()
    load_kw = serializers.FloatField(allow_null=True, help_text="What the chargers drew at the last run (kW).")
    limit_kw = serializers.FloatField(allow_null=True, help_text="The binding power limit (kW).")
    load_share = serializers.FloatField(allow_null=True, help_text="load_kw / limit_kw.")
    chargers = serializers.IntegerField()
    online = serializers.IntegerField()
    charging = serializers.IntegerField()
    faulted = serializers.IntegerField()
    peak_today_kw = serializers.FloatField(allow_null=True)
    alerts = StatusAlertSerializer(many=True, help_text="Open alerts, each naming the charger and what it did.")
    alert_count = serializers.IntegerField(help_text="Number of lines in alert_summary.")
    alert_summary = serializers.ListField(
        child=serializers.CharField(),
        help_text="Everything that needs a look, one line each: open alerts, offline chargers, refused profiles.",
    )
    failsafe = StatusFailsafeSerializer()
    site_meter = StatusMeterSerializer(allow_null=True, help_text="Latest site meter reading; null if none.")
    last_run_at = serializers.DateTimeField(allow_null=True)


class SiteViewSet(
    SiteScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.UpdateModelMixin, viewsets.GenericViewSet
):
    """Sites and their grid-connection limits. Energy managers and admins (of the site) may change the limits."""

    queryset = Site.objects.order_by("name")
    serializer_class = SiteSerializer
    lookup_field = "slug"
    site_field = "pk"
    write_roles = CHANGE_LIMITS

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        site = serializer.instance
        if not isinstance(site, Site):
            raise ValidationError({"slug": ["unknown site"]})
        # The stored values (not their JSON strings) for what the request leaves out: only real changes are audited.
        data = {**{name: getattr(site, name) for name in SITE_LIMIT_FIELDS}, **serializer.validated_data}
        try:
            serializer.instance = site_limits_update(site=site, limits=data, actor=actor_of(self.request)).obj
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from exc

    @extend_schema(responses={200: SiteStatusSerializer})
    @action(detail=True, methods=["get"])
    def status(self, request: Request, slug: str | None = None) -> Response:
        """Live status: load against limit, charger counts, today's peak, open alerts, fail-safe, site meter."""
        site = self.get_object()
        (row,) = site_overview(now=timezone.now(), sites=Site.objects.filter(pk=site.pk))
        body = {
            "site": site.slug,
            "load_kw": row.load_kw,
            "limit_kw": row.limit_kw,
            "load_share": row.load_share,
            "chargers": row.stations,
            "online": row.online,
            "charging": row.charging,
            "faulted": row.faulted,
            "peak_today_kw": row.peak_today_kw,
            "alerts": row.open_alerts,
            "alert_count": len(row.alerts),
            "alert_summary": row.alerts,
            "failsafe": {
                "limit_a": site.failsafe_a,
                "auto": site.failsafe_auto,
                "chosen": "sized so that all chargers at their fail-safe stay within the site's limits"
                if site.failsafe_auto
                else "set by hand",
            },
            "site_meter": site_meter_latest(site=site),
            "last_run_at": row.last_run_at,
        }
        return Response(SiteStatusSerializer(body).data)


class SiteFilter(serializers.Serializer):
    site = slug_filter("Site slug: only this site's.")


class RunFilter(SiteFilter):
    since = TimeBoundField(help_text="ISO 8601 time with zone: runs that ran since (started, or repeated).")
    until = TimeBoundField(help_text="ISO 8601 time with zone: runs started before.")


class MeterReadingFilter(serializers.Serializer):
    # A parameter named like Field.source: DRF's serializer metaclass takes it off the class.
    source = serializers.ChoiceField(choices=SiteMeterReading.Source.choices, required=False)  # type: ignore[assignment]
    since = TimeBoundField(
        help_text="ISO 8601 time with zone; default: a day before until. At most 31 days ago when alone."
    )
    until = TimeBoundField(help_text="ISO 8601 time with zone, excluded; default: now. At most 31 days after since.")


@extend_schema_view(list=extend_schema(parameters=[SiteFilter]))
class CircuitViewSet(SiteScopedMixin, viewsets.ReadOnlyModelViewSet):
    """The circuit tree of each site (filter with ``?site=<slug>``)."""

    serializer_class = CircuitSerializer
    write_roles = CHANGE_LIMITS

    def get_queryset(self) -> Any:
        qs = Circuit.objects.select_related("site", "parent").order_by("site__slug", "name")
        if self.action != "list":
            return qs
        site = query_params(self.request, SiteFilter).get("site")
        return qs.filter(site__slug=site) if site else qs


@extend_schema_view(list=extend_schema(parameters=[SiteFilter]))
class ScheduleViewSet(SiteScopedMixin, viewsets.ModelViewSet):
    """Recurring lower limits of a site (site local time). Changes need the energy manager role on the site."""

    serializer_class = ScheduleSerializer
    write_roles = CHANGE_LIMITS
    http_method_names = ["get", "post", "delete", "head", "options"]

    def get_queryset(self) -> Any:
        qs = SiteLimitSchedule.objects.select_related("site").order_by("site__slug", "start_time")
        if self.action != "list":
            return qs
        site = query_params(self.request, SiteFilter).get("site")
        return qs.filter(site__slug=site) if site else qs

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        try:
            serializer.instance = schedule_create(
                schedule=SiteLimitSchedule(**serializer.validated_data), actor=actor_of(self.request)
            )
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from exc

    def perform_destroy(self, instance: SiteLimitSchedule) -> None:
        schedule_delete(schedule=instance, actor=actor_of(self.request))


@extend_schema_view(list=extend_schema(parameters=[RunFilter]))
class RunViewSet(SiteScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Balancing runs: what went in, what came out, what bound, what was pushed."""

    serializer_class = RunSerializer

    def get_queryset(self) -> Any:
        qs = BalancingRun.objects.select_related("site").order_by("-started_at")
        if self.action != "list":
            return qs
        filters = query_params(self.request, RunFilter)
        sites = access_of(self.request).sites()
        if filters.get("site"):
            sites = sites.filter(slug=filters["site"])
            qs = qs.filter(site__in=sites)
        # A run repeated since ``since`` ran then too; ``until`` bounds when it started.
        since, until = time_range(filters)
        if since:
            qs = qs.filter(runs_seen_since(dict.fromkeys(sites.values_list("pk", flat=True), since)))
        if until:
            qs = qs.filter(started_at__lt=until)
        return qs


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 time that must carry its zone: a meter's local clock is not guessed."""

    def enforce_timezone(self, value: datetime) -> datetime:
        if timezone.is_naive(value):
            raise serializers.ValidationError("must be a time with a zone, e.g. 2026-05-01T12:00:00Z")
        return super().enforce_timezone(value)


class AsSentField(serializers.Field):
    """A value passed on as sent: ``site_meter_record`` checks it and names what is wrong (NaN too)."""

    def to_internal_value(self, data: Any) -> Any:
        return data

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field({"type": "array", "items": {"type": "number", "minimum": 0}})
class CurrentsField(AsSentField):
    """Per-phase currents (A), L1 first."""


@extend_schema_field({"type": "number", "minimum": 0, "nullable": True})
class PowerField(AsSentField):
    """Active import power (kW)."""


class MeterReadingInSerializer(serializers.Serializer):
    """One site meter reading as a meter gateway or building management system posts it."""

    measured_at = AwareDateTimeField(help_text="When the meter measured, ISO 8601 with a zone.")
    current_a = CurrentsField(
        required=False,
        help_text="Current per phase (A), L1 first, as many values as the site has phases; [] with power only.",
    )
    power_kw = PowerField(required=False, allow_null=True, default=None, help_text="Active import (kW).")
    includes_chargers = StrictBooleanField(
        default=True, help_text="True: the grid-connection meter (chargers included); false: building load only."
    )


class MeterReadingSerializer(serializers.ModelSerializer):
    site: "serializers.SlugRelatedField[Site]" = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = SiteMeterReading
        fields = ["id", "site", "measured_at", "received_at", "source", "current_a", "power_kw", "includes_chargers"]


class SiteMeterReadingsView(SiteScopedMixin, generics.ListAPIView):
    """A site's meter readings, newest first; POST adds one (energy managers, admins, meter-write tokens).

    A reading that cannot be true (negative, not finite, over 4x the site's limit, wrong number
    of phases, older than BALANCING_SITE_METER_MAX_AGE_S, over 30 s in the future) is refused
    with 400 naming the field and changes nothing. The same ``measured_at`` again is a retry:
    200 with the stored reading. One over a limit makes the site rebalance now.
    """

    serializer_class = MeterReadingSerializer
    write_roles = CHANGE_LIMITS
    accepts_meter_write_token = True
    parser_classes = [LenientJSONParser]

    def site(self) -> Site:
        """The site of the URL: 404 outside reach; posting needs the energy manager role on it (403)."""
        roles = None if self.request.method in SAFE_METHODS else self.write_roles
        return site_for(self.request, self.kwargs["slug"], roles)

    def get_queryset(self) -> Any:
        qs = SiteMeterReading.objects.filter(site=self.site()).select_related("site").order_by("-measured_at")
        filters = query_params(self.request, MeterReadingFilter)
        if filters.get("source"):
            qs = qs.filter(source=filters["source"])
        # A bounded window whatever is asked (its page count is a COUNT over it): the last day
        # unless since/until say otherwise, at most METER_READINGS_MAX_DAYS.
        since, until = capped_window(
            filters, max_days=METER_READINGS_MAX_DAYS, default=timedelta(days=1), now=timezone.now()
        )
        return qs.filter(measured_at__gte=since, measured_at__lt=until)

    @extend_schema(parameters=[MeterReadingFilter])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=MeterReadingInSerializer,
        responses={
            201: MeterReadingSerializer,
            200: OpenApiResponse(MeterReadingSerializer, description="The same reading was already stored."),
            400: OpenApiResponse(description="Refused, naming the field: nothing stored."),
        },
    )
    def post(self, request: Request, slug: str) -> Response:
        site = self.site()
        data = MeterReadingInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        try:
            outcome = site_meter_record(
                site=site,
                measured_at=values["measured_at"],
                current_a=values.get("current_a"),
                power_kw=values["power_kw"],
                source=SiteMeterReading.Source.API,
                includes_chargers=values["includes_chargers"],
                now=timezone.now(),
            )
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from exc
        code = status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK
        return Response(MeterReadingSerializer(outcome.reading).data, status=code)
