"""REST API for chargers, sessions, meter readings and charger commands. Schema: tenant."""

from datetime import timedelta
from typing import Any, cast

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch, Q
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from balancing.models import ChargerModelCompliance, Circuit, Site, SiteAlert
from chargepoint.actions import ACTIONS, charger_action
from chargepoint.models import ChargingSession, ChargingStation, Connector, MeterReading
from chargepoint.readings import BY_COLUMN, context_label, reading_values
from evplatform.api import time_filtered, time_range
from evplatform.permissions import CHARGER_ACTIONS, RoleForWrites, actor_of

READINGS_MAX_DAYS = 31
READINGS_DEFAULT_WINDOW = timedelta(days=1)
TIME_PARAMS = [
    OpenApiParameter("since", str, description="ISO 8601 time with zone"),
    OpenApiParameter("until", str, description="ISO 8601 time with zone"),
]


class ConnectorSerializer(serializers.ModelSerializer):
    class Meta:
        model = Connector
        fields = ["connector_id", "status", "error_code", "status_changed_at", "max_current_a"]


class ChargerAlertSerializer(serializers.ModelSerializer):
    """An open alert about the charger: what it did, since when."""

    connector = serializers.IntegerField(source="connector.connector_id", read_only=True, default=None, allow_null=True)
    kind_label = serializers.CharField(source="get_kind_display", read_only=True)

    class Meta:
        model = SiteAlert
        fields = ["kind", "kind_label", "connector", "detail", "opened_at", "last_seen_at"]


class ComplianceSerializer(serializers.ModelSerializer):
    """What the charger's model (vendor, model, firmware) is known to do with our profiles."""

    mean_reaction_s = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = ChargerModelCompliance
        fields = [
            "profiles_accepted",
            "profiles_rejected",
            "accepted_ignored",
            "reactions",
            "mean_reaction_s",
            "use_station_max",
        ]


class ChargerSerializer(serializers.ModelSerializer):
    site: "serializers.SlugRelatedField[Site]" = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    circuit: "serializers.SlugRelatedField[Circuit]" = serializers.SlugRelatedField(slug_field="name", read_only=True)
    connectors = ConnectorSerializer(many=True, read_only=True)
    alerts = ChargerAlertSerializer(source="open_alerts", many=True, read_only=True)
    compliance = serializers.SerializerMethodField()

    @extend_schema_field(ComplianceSerializer(allow_null=True))
    def get_compliance(self, station: ChargingStation) -> dict[str, Any] | None:
        # Looked up once per response (the list too), kept in the serializers' shared context
        # (not ``setdefault``: its default would be queried again for every charger).
        context = cast(dict[str, Any], self.context)
        if "compliance" not in context:
            context["compliance"] = {
                (c.vendor, c.model, c.firmware_version): c for c in ChargerModelCompliance.objects.all()
            }
        records = context["compliance"]
        record = records.get((station.vendor[:50], station.model[:50], station.firmware_version[:50]))
        return None if record is None else dict(ComplianceSerializer(record).data)

    class Meta:
        model = ChargingStation
        fields = [
            "charge_point_id",
            "site",
            "circuit",
            "vendor",
            "model",
            "serial_number",
            "firmware_version",
            "ocpp_version",
            "max_current_a",
            "phases",
            "wiring",
            "is_online",
            "last_seen_at",
            "last_boot_at",
            "connectors",
            "alerts",
            "compliance",
        ]


class SessionSerializer(serializers.ModelSerializer):
    charge_point_id = serializers.CharField(source="station.charge_point_id", read_only=True)
    connector_id = serializers.IntegerField(source="connector.connector_id", read_only=True)

    class Meta:
        model = ChargingSession
        fields = [
            "id",
            "charge_point_id",
            "connector_id",
            "transaction_id",
            "id_tag",
            "started_at",
            "stopped_at",
            "meter_start_wh",
            "meter_stop_wh",
            "energy_kwh",
            "stop_reason",
            "departure_at",
            "energy_needed_kwh",
            "ev_max_current_a",
        ]


class ReadingValueSerializer(serializers.Serializer):
    measurand = serializers.CharField()
    phase = serializers.CharField()
    location = serializers.CharField()
    value = serializers.FloatField()
    unit = serializers.CharField()


class ReadingSerializer(serializers.Serializer):
    """What one connector (0: the station's main meter) reported for one instant."""

    charge_point_id = serializers.SerializerMethodField()
    connector_id = serializers.IntegerField(source="connector_no")
    sampled_at = serializers.DateTimeField()
    context = serializers.SerializerMethodField()
    values = serializers.SerializerMethodField()

    def get_charge_point_id(self, reading: MeterReading) -> str:
        return cast(dict[int, str], self.context["charge_point_ids"]).get(reading.station_id, "")

    def get_context(self, reading: MeterReading) -> str:
        return context_label(reading)

    @extend_schema_field(ReadingValueSerializer(many=True))
    def get_values(self, reading: MeterReading) -> list[dict[str, Any]]:
        measurand = self.context.get("measurand")
        values = reading_values(reading)
        return [v for v in values if v["measurand"] == measurand] if measurand else values


class ReadingCursor(CursorPagination):
    """Readings page by a cursor on (time, station, connector): page 1000 costs what page 1 does."""

    ordering = ("sampled_at", "station_id", "connector_no")
    page_size = 100
    max_page_size = 1000
    page_size_query_param = "limit"


class CommandSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=ACTIONS)
    connector_id = serializers.IntegerField(min_value=0, default=0)


class ChargerViewSet(viewsets.ReadOnlyModelViewSet):
    """Chargers (filter with ``?site=<slug>``); POST ``commands`` to act on one."""

    serializer_class = ChargerSerializer
    lookup_field = "charge_point_id"
    lookup_value_regex = r"[A-Za-z0-9._~-]+"
    permission_classes = [RoleForWrites]
    write_roles = CHARGER_ACTIONS

    def get_queryset(self) -> Any:
        open_alerts = SiteAlert.objects.filter(cleared_at__isnull=True).select_related("connector")
        qs = ChargingStation.objects.select_related("site", "circuit").prefetch_related(
            "connectors", Prefetch("alerts", queryset=open_alerts, to_attr="open_alerts")
        )
        site = self.request.query_params.get("site")
        return (qs.filter(site__slug=site) if site else qs).order_by("charge_point_id")

    @extend_schema(
        request=CommandSerializer,
        responses={
            200: inline_serializer(
                "CommandResult", {"status": serializers.CharField(), "error": serializers.CharField()}
            )
        },
    )
    @action(detail=True, methods=["post"])
    def commands(self, request: Request, charge_point_id: str | None = None) -> Response:
        """Remote stop, availability or reset; 200 with the charger's answer (Accepted, Rejected, ...),
        409 when the charger is offline or did not answer in time."""
        station = self.get_object()
        body = CommandSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            outcome = charger_action(
                station=station,
                action=body.validated_data["action"],
                connector_id=body.validated_data["connector_id"],
                actor=actor_of(request),
            )
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from exc
        answer = {"status": outcome.result.status, "error": outcome.result.error}
        if outcome.result.status in ("Offline", "Timeout"):
            # Not our failure, and nothing the caller can fix by retrying at once: the charger is away.
            return Response(
                {
                    "error": {
                        "status": 409,
                        "code": outcome.result.status.lower(),
                        "message": f"the charger did not answer: {outcome.result.status}",
                    }
                },
                status=status.HTTP_409_CONFLICT,
            )
        return Response(answer)


@extend_schema(parameters=[OpenApiParameter("charger", str), OpenApiParameter("site", str), *TIME_PARAMS])
class SessionViewSet(viewsets.ReadOnlyModelViewSet):
    """Charging sessions, newest first."""

    serializer_class = SessionSerializer
    permission_classes = [RoleForWrites]

    def get_queryset(self) -> Any:
        params = self.request.query_params
        qs = ChargingSession.objects.select_related("station", "connector").order_by("-started_at")
        if params.get("charger"):
            qs = qs.filter(station__charge_point_id=params["charger"])
        if params.get("site"):
            qs = qs.filter(station__site__slug=params["site"])
        return time_filtered(qs, params, "started_at")


@extend_schema(
    parameters=[
        OpenApiParameter("charger", str),
        OpenApiParameter("connector", int),
        OpenApiParameter("measurand", str),
        *TIME_PARAMS,
    ]
)
class ReadingViewSet(viewsets.GenericViewSet, mixins.ListModelMixin):
    """Meter readings, oldest first, paged by a cursor; at most 31 days per request, the last
    day when no ``since`` is given."""

    serializer_class = ReadingSerializer
    permission_classes = [RoleForWrites]
    pagination_class = ReadingCursor

    def get_queryset(self) -> Any:
        params = self.request.query_params
        since, until = time_range(params, max_days=READINGS_MAX_DAYS)
        if until is None:
            until = (since + timedelta(days=READINGS_MAX_DAYS)) if since else timezone.now() + timedelta(minutes=1)
        if since is None:
            since = until - READINGS_DEFAULT_WINDOW
        qs = MeterReading.objects.filter(sampled_at__gte=since, sampled_at__lt=until)
        if params.get("charger"):
            station = ChargingStation.objects.filter(charge_point_id=params["charger"]).first()
            qs = qs.filter(station_id=station.pk if station else -1)
        if params.get("connector"):
            try:
                qs = qs.filter(connector_no=int(params["connector"]))
            except ValueError:
                raise ValidationError({"connector": [f"{params['connector']!r} is not a number"]}) from None
        measurand = params.get("measurand")
        if measurand:
            columns = [column for column, (m, _, _) in BY_COLUMN.items() if m == measurand]
            found = Q(extra__has_key=measurand)
            for column in columns:
                found |= Q(**{f"{column}__isnull": False})
            qs = qs.filter(found)
        return qs

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        context["charge_point_ids"] = dict(ChargingStation.objects.values_list("pk", "charge_point_id"))
        context["measurand"] = self.request.query_params.get("measurand") or ""
        return context
