"""REST API for sites, circuits, limit schedules, live status, runs and site meter readings. Schema: tenant."""

from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
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
from balancing.models import (
    BalancingRun,
    Circuit,
    LimitOverride,
    Site,
    SiteAlert,
    SiteLimitSchedule,
    SiteMeterReading,
)
from balancing.selectors import CapInForce, runs_seen_since, site_cap_in_force, site_meter_latest, site_overview
from balancing.services import (
    SITE_LIMIT_FIELDS,
    circuit_create_or_update,
    circuit_delete,
    circuit_update,
    override_create,
    override_end,
    schedule_create,
    schedule_delete,
    schedule_update,
    site_limits_update,
)
from evplatform.api import time_range
from evplatform.api_access import ReachableSiteField, SiteScopedMixin
from evplatform.api_plumbing import (
    STRICT_FIELD_MAPPING,
    LenientJSONParser,
    LocalTimeField,
    StrictBooleanField,
    StrictCharField,
    StrictRegexField,
    TimeBoundField,
    capped_window,
    query_params,
    slug_filter,
)
from evplatform.api_writes import conflict_errors, service_errors
from evplatform.idempotency import IDEMPOTENCY_PARAMETER, KEY_REUSED_RESPONSE, idempotent
from evplatform.permissions import CHANGE_LIMITS, actor_of

# A site meter readings request covers at most this many days (the last day by default).
METER_READINGS_MAX_DAYS = 31


class SiteSerializer(serializers.ModelSerializer):
    serializer_field_mapping = STRICT_FIELD_MAPPING

    class Meta:
        model = Site
        fields = ["slug", "name", "timezone", "voltage_v", "phases", *SITE_LIMIT_FIELDS, "free_vend"]
        read_only_fields = ["slug", "name", "timezone", "voltage_v", "phases", "free_vend"]
        extra_kwargs = {
            "balancing_policy": {
                "error_messages": {
                    "invalid_choice": "'{input}' is not a balancing policy; choose 'static' or 'cost_aware'"
                }
            },
            "peak_margin_kw": {"error_messages": {"min_value": "the peak margin must be 0 kW or more"}},
        }


class SiteDetailSerializer(SiteSerializer):
    """One site with the cap it balances under now (``balancing.selectors.site_cap_in_force``)."""

    policy = serializers.SerializerMethodField(help_text="The balancing policy of the cap in force.")
    effective_cap_kw = serializers.SerializerMethodField(
        help_text="The whole-site cap in force now (kW, building included); null: no kW cap."
    )
    effective_cap_reason = serializers.SerializerMethodField(help_text="Why that cap is in force.")
    effective_cap_at = serializers.SerializerMethodField(
        help_text="Start of the balancing run that chose it; null: the site's setting."
    )

    class Meta(SiteSerializer.Meta):
        fields = [*SiteSerializer.Meta.fields, "policy", "effective_cap_kw", "effective_cap_reason", "effective_cap_at"]

    def _cap(self, site: Site) -> CapInForce:
        caps: dict[int, CapInForce] = self.__dict__.setdefault("_caps", {})
        if site.pk not in caps:
            caps[site.pk] = site_cap_in_force(site=site)
        return caps[site.pk]

    @extend_schema_field(serializers.ChoiceField(choices=Site.Policy.choices))
    def get_policy(self, site: Site) -> str:
        return self._cap(site).policy

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_effective_cap_kw(self, site: Site) -> float | None:
        return self._cap(site).kw

    @extend_schema_field(serializers.CharField())
    def get_effective_cap_reason(self, site: Site) -> str:
        return self._cap(site).reason

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_effective_cap_at(self, site: Site) -> datetime | None:
        return self._cap(site).at


class CircuitSerializer(serializers.ModelSerializer):
    site: "serializers.SlugRelatedField[Site]" = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    parent_name = serializers.CharField(
        source="parent.name", read_only=True, default=None, allow_null=True, help_text="null: a top-level circuit."
    )

    class Meta:
        model = Circuit
        fields = ["id", "site", "name", "kind", "parent_name", "limit_a", "limit_kw"]


class CircuitWriteSerializer(serializers.ModelSerializer):
    """A circuit's values as PUT and PATCH take them (a circuit stays at its site)."""

    serializer_field_mapping = STRICT_FIELD_MAPPING
    parent_name = StrictCharField(
        max_length=100,
        required=False,
        allow_null=True,
        help_text="Name of the circuit it hangs below (same site); null: fed by the grid connection.",
    )

    class Meta:
        model = Circuit
        fields = ["name", "kind", "parent_name", "limit_a", "limit_kw"]
        validators: list[Any] = []  # a name taken at the site is the service's 400, naming it


class CircuitCreateSerializer(CircuitWriteSerializer):
    """A new circuit: its site too."""

    site: "serializers.SlugRelatedField[Site]" = ReachableSiteField(
        write_roles=CHANGE_LIMITS, help_text="The site's slug (one the caller reaches)."
    )

    class Meta(CircuitWriteSerializer.Meta):
        fields = ["site", *CircuitWriteSerializer.Meta.fields]


def _circuit_values(values: dict[str, Any]) -> dict[str, Any]:
    """The API's circuit fields as ``circuit_create_or_update`` and ``circuit_update`` take them."""
    return {
        "name": values["name"],
        "kind": values.get("kind", Circuit.Kind.CIRCUIT),
        "parent_name": values.get("parent_name"),
        "limit_a": values["limit_a"],
        "limit_kw": values.get("limit_kw"),
    }


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
        if self.partial and isinstance(self.instance, SiteLimitSchedule):  # PATCH: the stored values count too
            stored = {name: getattr(self.instance, name) for name in ("limit_kw", "limit_a", "weekdays")}
            attrs = {**stored, **attrs}
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

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        return SiteDetailSerializer if self.action == "retrieve" else SiteSerializer

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
    """The circuit tree of each site (filter with ``?site=<slug>``); energy managers and admins of
    the circuit's site add (POST), change (PUT, PATCH) and remove (DELETE) circuits."""

    serializer_class = CircuitSerializer
    write_roles = CHANGE_LIMITS

    def get_queryset(self) -> Any:
        qs = Circuit.objects.select_related("site", "parent").order_by("site__slug", "name")
        if self.action != "list":
            return qs
        site = query_params(self.request, SiteFilter).get("site")
        return qs.filter(site__slug=site) if site else qs

    @extend_schema(
        request=CircuitCreateSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: CircuitSerializer, 422: KEY_REUSED_RESPONSE},
    )
    @idempotent()
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Add a circuit to a site's tree (under ``parent``, or fed by the grid connection)."""
        body = CircuitCreateSerializer(data=request.data, context=self.get_serializer_context())
        body.is_valid(raise_exception=True)
        values = dict(body.validated_data)
        site = values.pop("site")
        taken = {"name": [f"site {site.slug!r} has a circuit named {values['name']!r}: PUT changes it"]}
        if Circuit.objects.filter(site=site, name=values["name"]).exists():
            raise ValidationError(taken)
        try:
            with service_errors({"circuit": "parent_name", "parent": "parent_name"}):
                outcome = circuit_create_or_update(site=site, **_circuit_values(values), actor=actor_of(request))
        except IntegrityError:  # the same circuit added by a concurrent request
            raise ValidationError(taken) from None
        return Response(CircuitSerializer(outcome.obj).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=CircuitWriteSerializer, responses={200: CircuitSerializer})
    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Bring a circuit to these values (left out: kind circuit, no parent, no kW limit)."""
        return self._change(request, partial=False)

    @extend_schema(request=CircuitWriteSerializer, responses={200: CircuitSerializer})
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Change some of a circuit's values."""
        return self._change(request, partial=True)

    def _change(self, request: Request, *, partial: bool) -> Response:
        circuit = self.get_object()
        body = CircuitWriteSerializer(data=request.data, partial=partial)
        body.is_valid(raise_exception=True)
        stored = {
            "name": circuit.name,
            "kind": circuit.kind,
            "parent_name": circuit.parent.name if circuit.parent else None,
            "limit_a": circuit.limit_a,
            "limit_kw": circuit.limit_kw,
        }
        defaults = {"kind": Circuit.Kind.CIRCUIT, "parent_name": None, "limit_kw": None}
        values = {**(stored if partial else defaults), **body.validated_data}
        try:
            with service_errors({"circuit": "parent_name", "parent": "parent_name"}):
                outcome = circuit_update(circuit=circuit, **_circuit_values(values), actor=actor_of(request))
        except IntegrityError:  # renamed to a name a concurrent request took
            raise ValidationError({"name": [f"the site has a circuit named {values['name']!r}"]}) from None
        return Response(CircuitSerializer(self.get_queryset().get(pk=outcome.obj.pk)).data)

    @extend_schema(responses={204: None, 409: OpenApiResponse(description="Circuits or chargers hang below it.")})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Remove a circuit that has no circuit and no charger below it (else 409 naming them)."""
        circuit = self.get_object()
        with conflict_errors():
            circuit_delete(circuit=circuit, actor=actor_of(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(list=extend_schema(parameters=[SiteFilter]))
class ScheduleViewSet(SiteScopedMixin, viewsets.ModelViewSet):
    """Recurring lower limits of a site (site local time). Changes need the energy manager role on the site."""

    serializer_class = ScheduleSerializer
    write_roles = CHANGE_LIMITS
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]

    @extend_schema(parameters=[IDEMPOTENCY_PARAMETER], responses={201: ScheduleSerializer, 422: KEY_REUSED_RESPONSE})
    @idempotent()
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Add a recurring lower limit to a site."""
        return super().create(request, *args, **kwargs)

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        schedule = serializer.instance
        if not isinstance(schedule, SiteLimitSchedule):
            raise ValidationError({"id": ["unknown schedule"]})
        values = dict(serializer.validated_data)
        site = values.pop("site", schedule.site)
        if site.pk != schedule.site_id:
            raise ValidationError({"site": ["a schedule stays at its site: add one at the other site instead"]})
        with service_errors():
            serializer.instance = schedule_update(schedule=schedule, values=values, actor=actor_of(self.request)).obj

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
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={
            201: MeterReadingSerializer,
            200: OpenApiResponse(MeterReadingSerializer, description="The same reading was already stored."),
            400: OpenApiResponse(description="Refused, naming the field: nothing stored."),
            422: KEY_REUSED_RESPONSE,
        },
    )
    @idempotent()
    def post(self, request: Request, slug: str) -> Response:
        site = site_for(request, slug, CHANGE_LIMITS)
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


# --- Limit overrides ------------------------------------------------------------------------


class OverrideSerializer(serializers.ModelSerializer):
    """A temporary lower limit of a site, from ``starts_at`` (default: now) until ``ends_at``."""

    serializer_field_mapping = STRICT_FIELD_MAPPING
    site: "serializers.SlugRelatedField[Site]" = ReachableSiteField(write_roles=CHANGE_LIMITS)
    starts_at = AwareDateTimeField(required=False, help_text="ISO 8601 with a zone; default: now.")
    ends_at = AwareDateTimeField(help_text="ISO 8601 with a zone, in the future: the override ends then.")
    active = serializers.SerializerMethodField(help_text="In force now.")

    class Meta:
        model = LimitOverride
        fields = ["id", "site", "reason", "limit_kw", "limit_a", "starts_at", "ends_at", "active", "created_by"]
        read_only_fields = ["created_by"]

    def get_active(self, override: LimitOverride) -> bool:
        now = timezone.now()
        return bool(override.starts_at <= now < override.ends_at)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        now = timezone.now()
        attrs.setdefault("starts_at", now)
        if attrs.get("limit_kw") is None and attrs.get("limit_a") is None:
            raise serializers.ValidationError({"limit_kw": ["set limit_kw, limit_a or both"]})
        if attrs["ends_at"] <= max(now, attrs["starts_at"]):
            raise serializers.ValidationError({"ends_at": ["must be in the future and after starts_at"]})
        return attrs


class OverrideFilter(SiteFilter):
    active = serializers.BooleanField(
        required=False, allow_null=True, default=None, help_text="true: only those in force now; false: the others."
    )


@extend_schema_view(list=extend_schema(parameters=[OverrideFilter]))
class LimitOverrideViewSet(
    SiteScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """Temporary lower limits (maintenance, a grid operator's request), newest first. Energy managers
    and admins of the site set them (POST) and end them now (DELETE); each binds while in force."""

    serializer_class = OverrideSerializer
    write_roles = CHANGE_LIMITS

    def get_queryset(self) -> Any:
        qs = LimitOverride.objects.select_related("site").order_by("-starts_at", "-pk")
        if self.action != "list":
            return qs
        filters = query_params(self.request, OverrideFilter)
        if filters.get("site"):
            qs = qs.filter(site__slug=filters["site"])
        now = timezone.now()
        if filters.get("active") is True:
            qs = qs.filter(starts_at__lte=now, ends_at__gt=now)
        elif filters.get("active") is False:
            qs = qs.exclude(starts_at__lte=now, ends_at__gt=now)
        return qs

    @extend_schema(
        request=OverrideSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={201: OverrideSerializer, 422: KEY_REUSED_RESPONSE},
    )
    @idempotent()
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Set a temporary limit: the site is rebalanced under it at once."""
        body = self.get_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = dict(body.validated_data)
        site = values.pop("site")  # in reach with the role: ReachableSiteField
        with service_errors():
            override = override_create(site=site, **values, actor=actor_of(request))
        return Response(OverrideSerializer(override).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """End the override now (one not started yet is removed); an override that ended already stays."""
        override_end(override=self.get_object(), now=timezone.now(), actor=actor_of(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
