"""REST API for chargers, sessions, meter readings and charger commands. Schema: tenant."""

import binascii
from base64 import b64decode, b64encode
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import parse_qs, urlencode

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import BooleanField, Prefetch, Q
from django.db.models.expressions import RawSQL
from django.http import Http404
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
    inline_serializer,
)
from ocpp.v16.enums import Measurand
from ocpp.v201.enums import MeasurandEnumType
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ParseError, PermissionDenied, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from balancing.access import access_of
from balancing.models import ChargerModelCompliance, Circuit, Site, SiteAlert
from chargepoint.actions import ACTIONS, charger_action
from chargepoint.models import ChargingSession, ChargingStation, Connector, MeterReading
from chargepoint.onboarding import MAX_FILE_BYTES, MAX_ROWS, ImportFileError, fleet_import, fleet_rows_read
from chargepoint.readings import BY_COLUMN, context_label, reading_values
from chargepoint.services import (
    CHARGER_PASSWORD_RE,
    MAX_CONNECTORS,
    MAX_STATION_CURRENT_A,
    MIN_CHARGING_CURRENT_A,
    charger_deactivate,
    charger_save,
)
from evplatform.api import time_filtered
from evplatform.api_access import ReachableSiteField, SiteScopedMixin, site_write_check
from evplatform.api_plumbing import (
    SafeJSONParser,
    StrictCharField,
    StrictDecimalField,
    StrictIntegerField,
    StrictRegexField,
    TimeBoundField,
    capped_window,
    query_params,
    slug_filter,
)
from evplatform.api_writes import service_errors
from evplatform.idempotency import IDEMPOTENCY_PARAMETER, KEY_REUSED_RESPONSE, idempotent
from evplatform.permissions import (
    CHARGER_ACTIONS,
    IMPORT_FLEET,
    RoleForWrites,
    actor_of,
)
from tenants.validators import CHARGE_POINT_ID_RE

READINGS_MAX_DAYS = 31
READINGS_DEFAULT_WINDOW = timedelta(days=1)
# Every measurand OCPP 1.6 and 2.0.1 define: the gateway stores no other (the OCPP schemas refuse it).
MEASURANDS = sorted({m.value for m in Measurand} | {m.value for m in MeasurandEnumType})
MAX_CONNECTOR_NO = 32767  # the column is a smallint


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
    circuit: "serializers.SlugRelatedField[Circuit]" = serializers.SlugRelatedField(
        slug_field="name", read_only=True, allow_null=True, help_text="null: not on a circuit of the site's tree."
    )
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
    """One value of a reading, as OCPP names it; kilo-units are given in base units (W, Wh)."""

    measurand = serializers.CharField(help_text="OCPP measurand, e.g. Current.Import.")
    phase = serializers.CharField(help_text="L1, L2, L3 (or L1-N, ...); empty: not per phase.")
    location = serializers.CharField(help_text="Inlet, Cable, EV, Body; empty: the outlet or not said.")
    value = serializers.FloatField()
    unit = serializers.CharField(help_text="Wh, W, A, V, Percent, ...")


class ReadingSerializer(serializers.Serializer):
    """What one connector (0: the station's main meter) reported for one instant."""

    charge_point_id = serializers.SerializerMethodField()
    connector_id = serializers.IntegerField(source="connector_no", help_text="0: the station's main meter.")
    sampled_at = serializers.DateTimeField()
    values = serializers.SerializerMethodField()

    def get_fields(self) -> dict[str, serializers.Field]:
        # Declared here, not as a class attribute, which would shadow the serializer's own context.
        fields = super().get_fields()
        values = fields.pop("values")
        fields["context"] = serializers.SerializerMethodField(
            help_text="OCPP reading context, e.g. Sample.Periodic; empty when the charger gave none."
        )
        fields["values"] = values
        return fields

    def get_charge_point_id(self, reading: MeterReading) -> str:
        return cast(dict[int, str], self.context["charge_point_ids"]).get(reading.station_id, "")

    def get_context(self, reading: MeterReading) -> str:
        return context_label(reading)

    @extend_schema_field(ReadingValueSerializer(many=True))
    def get_values(self, reading: MeterReading) -> list[dict[str, Any]]:
        measurand = self.context.get("measurand")
        values = reading_values(reading)
        return [v for v in values if v["measurand"] == measurand] if measurand else values


ReadingKey = tuple[datetime, int, int]


def reading_key(reading: MeterReading) -> ReadingKey:
    return (reading.sampled_at, reading.station_id, reading.connector_no)


def beyond(key: ReadingKey, *, before: bool = False) -> Q:
    """Rows strictly after ``key`` in (sampled_at, station, connector) order (before it: ``before``).

    Spelled out column by column rather than as a row comparison, with the time bound on its
    own first, so that PostgreSQL prunes partitions and ranges over the time index with it.
    """
    at, station_id, connector_no = key
    op, edge = ("lt", "lte") if before else ("gt", "gte")
    return Q(**{f"sampled_at__{edge}": at}) & (
        Q(**{f"sampled_at__{op}": at})
        | Q(sampled_at=at, **{f"station_id__{op}": station_id})
        | Q(sampled_at=at, station_id=station_id, **{f"connector_no__{op}": connector_no})
    )


class ReadingCursor(CursorPagination):
    """Readings paged by a cursor on their whole key (time, station, connector), oldest first.

    DRF's own cursor keeps only the first ordering field as its position and steps over rows
    sharing it by an offset, which it caps at 1,000: clock-aligned readings of a large tenant
    share their instant by the thousand, and past the cap its pages repeat (and its previous
    links skip rows where the direction changes). Here the position is a row's full key and a
    page starts strictly after (or, going back, before) it, so no row is lost or repeated however
    many share an instant, and page 1,000 costs what page 1 does: one index range from the key.
    """

    ordering = ("sampled_at", "station_id", "connector_no")
    page_size = 100
    max_page_size = 1000
    page_size_query_param = "limit"
    page_size_query_description = "Readings per page, 1-1000 (default 100)."

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any] | None:
        self.request = request
        self.page_size = self.get_page_size(request)
        self.base_url = request.build_absolute_uri()
        reverse, self.key = self._cursor_read(request)
        if self.key is not None:
            queryset = queryset.filter(beyond(self.key, before=reverse))
        ordering = [f"-{name}" for name in self.ordering] if reverse else list(self.ordering)
        rows = list(queryset.order_by(*ordering)[: self.page_size + 1])
        more = len(rows) > self.page_size
        page = rows[: self.page_size]
        if reverse:
            page.reverse()
            self.has_previous, self.has_next = more, self.key is not None
        else:
            self.has_next, self.has_previous = more, self.key is not None
        self.page = page
        self.display_page_controls = self.has_previous or self.has_next
        return page

    def get_page_size(self, request: Request) -> int:
        name = self.page_size_query_param or "limit"
        values = request.query_params.getlist(name)
        if not values:
            return self.page_size
        raw = values[-1]
        size = int(raw) if len(values) == 1 and raw.isascii() and raw.isdigit() and len(raw) <= 4 else 0
        if not 1 <= size <= self.max_page_size:
            raise ValidationError({name: [f"{raw[:20]!r} is not a whole number from 1 to {self.max_page_size}"]})
        return size

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update({"minimum": 1, "maximum": self.max_page_size})
        return parameters

    def get_next_link(self) -> str | None:
        if not self.has_next:
            return None
        return self._link(reverse=False, key=reading_key(self.page[-1]) if self.page else self.key)

    def get_previous_link(self) -> str | None:
        if not self.has_previous:
            return None
        return self._link(reverse=True, key=reading_key(self.page[0]) if self.page else self.key)

    def _link(self, *, reverse: bool, key: ReadingKey | None) -> str | None:
        if key is None:
            return None
        at, station_id, connector_no = key
        tokens = {"p": f"{at.isoformat()}|{station_id}|{connector_no}", **({"r": "1"} if reverse else {})}
        encoded = b64encode(urlencode(tokens).encode("ascii")).decode("ascii")
        return replace_query_param(str(self.base_url), self.cursor_query_param, encoded)

    def _cursor_read(self, request: Request) -> tuple[bool, ReadingKey | None]:
        """Direction and key of a ``next`` or ``previous`` link's cursor; anything else: a 400."""
        raw = request.query_params.get(self.cursor_query_param)
        if raw is None:
            return False, None
        try:
            tokens = parse_qs(b64decode(raw.encode("ascii"), validate=True).decode("ascii"), strict_parsing=True)
            at, station_id, connector_no = tokens["p"][0].split("|")
            parsed = parse_datetime(at)
            if parsed is None or parsed.tzinfo is None:
                raise ValueError(at)
            key = (parsed, int(station_id), int(connector_no))
            if not (0 <= key[1] < 2**63 and 0 <= key[2] <= MAX_CONNECTOR_NO):
                raise ValueError(raw)
            return tokens.get("r") == ["1"], key
        except (KeyError, ValueError, UnicodeError, binascii.Error):
            raise ValidationError({"cursor": ["not a cursor of this list: follow a next or previous link"]}) from None


class CommandSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=ACTIONS)
    connector_id = StrictIntegerField(min_value=0, max_value=MAX_CONNECTOR_NO, default=0)


def charge_point_filter(help_text: str) -> serializers.RegexField:
    return StrictRegexField(
        CHARGE_POINT_ID_RE.pattern,
        required=False,
        max_length=48,
        help_text=help_text,
        error_messages={"invalid": "must be 1-48 characters of letters, digits, '.', '_', '~' or '-'"},
    )


@extend_schema_field({"type": "integer", "enum": [1, 3]})
class PhasesField(StrictIntegerField):
    """1 or 3 phases."""

    def to_internal_value(self, data: Any) -> int:
        value = super().to_internal_value(data)
        if value not in (1, 3):
            raise ValidationError("1 or 3")
        return value


class ChargerWriteSerializer(serializers.Serializer):
    """A charger's registration as PUT (all but ``site`` and ``max_current_a`` optional) and PATCH take it."""

    site: "serializers.SlugRelatedField[Site]" = ReachableSiteField(
        write_roles=CHARGER_ACTIONS, help_text="Slug of the site it is wired to (one the caller reaches)."
    )
    circuit = StrictCharField(
        max_length=100,
        required=False,
        allow_null=True,
        help_text="Name of the circuit of the site's tree it is on; null: straight on the grid connection.",
    )
    max_current_a = StrictDecimalField(
        max_digits=5,
        decimal_places=1,
        min_value=MIN_CHARGING_CURRENT_A,
        max_value=MAX_STATION_CURRENT_A,
        help_text="Per-phase rating (A), 6 to 1000.",
    )
    phases = PhasesField(required=False, help_text="1 or 3 (default 3); at most the site's.")
    wiring = serializers.ChoiceField(
        choices=ChargingStation.Wiring.choices,
        required=False,
        help_text="Site phases its L1 (L2, L3) are on; default L1 or L1L2L3. Must fit phases.",
    )
    connectors = StrictIntegerField(
        min_value=1, max_value=MAX_CONNECTORS, required=False, help_text="Connectors (EVSEs), default 1."
    )
    password = StrictRegexField(
        CHARGER_PASSWORD_RE.pattern,
        required=False,
        write_only=True,
        help_text="OCPP Basic-auth password, 16-40 printable ASCII characters; left out: a new charger gets one "
        "generated (in the answer, once), a registered one keeps its own.",
        error_messages={"invalid": "16 to 40 printable ASCII characters without spaces"},
    )


def _charger_values(stored: ChargingStation | None, given: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    """What ``charger_save`` takes: a PATCH keeps the stored values it leaves out, a PUT the defaults."""
    if partial and stored is not None:
        base: dict[str, Any] = {
            "site": stored.site,
            "circuit": stored.circuit.name if stored.circuit else None,
            "max_current_a": stored.max_current_a,
            "phases": stored.phases,
            "wiring": stored.wiring if "phases" not in given or given["phases"] == stored.phases else None,
            "connectors": stored.connectors.count() or 1,
        }
    else:
        base = {"circuit": None, "phases": 3, "wiring": None, "connectors": 1}
    values = {**base, **given}
    return {
        "site": values["site"],
        "circuit_name": values["circuit"],
        "max_current_a": values["max_current_a"],
        "phases": values["phases"],
        "wiring": values["wiring"],
        "connectors": values["connectors"],
        "password": values.get("password"),
    }


class ChargerSavedSerializer(ChargerSerializer):
    """The charger as stored after a PUT or PATCH, with its generated password when it has just got one."""

    active = serializers.BooleanField(help_text="Its identity may connect (DELETE deactivates it).")
    password = serializers.CharField(
        allow_null=True,
        help_text="The password generated for a charger registered without one: in this answer only (the "
        "platform keeps its hash). null otherwise.",
    )

    class Meta(ChargerSerializer.Meta):
        fields = [*ChargerSerializer.Meta.fields, "active", "password"]


class ChargerFilter(serializers.Serializer):
    site = slug_filter("Site slug: only this site's chargers.")


class SessionFilter(serializers.Serializer):
    charger = charge_point_filter("Charge point id: only its sessions.")
    site = slug_filter("Site slug: only sessions at this site.")
    since = TimeBoundField(help_text="ISO 8601 time with zone: sessions started since.")
    until = TimeBoundField(help_text="ISO 8601 time with zone: sessions started before.")


class ReadingFilter(serializers.Serializer):
    charger = charge_point_filter("Charge point id: only its readings (an unknown one: an empty page).")
    connector = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_CONNECTOR_NO,
        help_text="Connector (EVSE) id: only its readings; 0: the main meter.",
    )
    measurand = serializers.ChoiceField(
        choices=MEASURANDS, required=False, help_text="Only readings with this measurand, and only its values."
    )
    since = TimeBoundField(
        help_text="ISO 8601 time with zone; default: a day before until. Alone: at most 31 days ago "
        "(the readings from it to now)."
    )
    until = TimeBoundField(help_text="ISO 8601 time with zone, excluded; default: now. At most 31 days after since.")


@extend_schema_view(list=extend_schema(parameters=[ChargerFilter]))
class ChargerViewSet(SiteScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Chargers (filter with ``?site=<slug>``); POST ``commands`` to act on one (the role on its site)."""

    serializer_class = ChargerSerializer
    lookup_field = "charge_point_id"
    lookup_value_regex = r"[A-Za-z0-9._~-]+"
    write_roles = CHARGER_ACTIONS

    def get_queryset(self) -> Any:
        open_alerts = SiteAlert.objects.filter(cleared_at__isnull=True).select_related("connector")
        qs = ChargingStation.objects.select_related("site", "circuit").prefetch_related(
            "connectors", Prefetch("alerts", queryset=open_alerts, to_attr="open_alerts")
        )
        site = query_params(self.request, ChargerFilter).get("site") if self.action == "list" else None
        return (qs.filter(site__slug=site) if site else qs).order_by("charge_point_id")

    @extend_schema(
        request=CommandSerializer,
        responses={
            200: inline_serializer(
                "CommandResult", {"status": serializers.CharField(), "error": serializers.CharField()}
            ),
            409: OpenApiResponse(description="The charger is offline or did not answer in time."),
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

    @extend_schema(
        request=ChargerWriteSerializer,
        responses={
            200: OpenApiResponse(ChargerSavedSerializer, description="Updated (or unchanged)."),
            201: OpenApiResponse(
                ChargerSavedSerializer, description="Registered: a generated password is in this answer only."
            ),
        },
    )
    def update(self, request: Request, charge_point_id: str | None = None) -> Response:
        """Register the charger ``charge_point_id`` or bring it to these values (PUT is an upsert).

        A new charger without ``password`` gets one generated, shown in this answer only; a
        registered charger keeps its password unless one is given. Connectors are added up to
        ``connectors``, never removed. A deactivated charger is active again.
        """
        return self._save(request, str(charge_point_id), partial=False)

    @extend_schema(
        request=ChargerWriteSerializer,
        responses={200: OpenApiResponse(ChargerSavedSerializer, description="Updated (or unchanged).")},
    )
    def partial_update(self, request: Request, charge_point_id: str | None = None) -> Response:
        """Change some of a registered charger's values (its site, circuit, rating, ...)."""
        return self._save(request, str(charge_point_id), partial=True)

    def _save(self, request: Request, charge_point_id: str, *, partial: bool) -> Response:
        stored = (
            ChargingStation.objects.select_related("site", "circuit").filter(charge_point_id=charge_point_id).first()
        )
        if stored is not None:
            site_write_check(request, stored.site_id, CHARGER_ACTIONS)
        elif partial:
            raise Http404("No such charger.")
        body = ChargerWriteSerializer(data=request.data, partial=partial, context=self.get_serializer_context())
        body.is_valid(raise_exception=True)
        values = _charger_values(stored, body.validated_data, partial=partial)
        site = values.pop("site")  # in reach with the role: the stored one checked above, a new one by its field
        with service_errors({"site_slug": "site", "circuit_name": "circuit"}):
            saved = charger_save(
                tenant=request.tenant,  # type: ignore[attr-defined]  # set by django-tenants' middleware
                charge_point_id=charge_point_id,
                site_slug=site.slug,
                **values,
                actor=actor_of(request),
            )
        station = self.get_queryset().get(pk=saved.outcome.obj.pk)
        answer = {
            **ChargerSerializer(station, context=self.get_serializer_context()).data,
            "active": saved.active,
            "password": saved.password,
        }
        return Response(answer, status=status.HTTP_201_CREATED if saved.outcome.created else status.HTTP_200_OK)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, charge_point_id: str | None = None) -> Response:
        """Deactivate the charger: its next connection is refused (one open now is not cut); its
        history stays. PUT registers it again."""
        station = self.get_object()
        charger_deactivate(tenant=request.tenant, station=station, actor=actor_of(request))  # type: ignore[attr-defined]
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(list=extend_schema(parameters=[SessionFilter]))
class SessionViewSet(SiteScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Charging sessions, newest first."""

    serializer_class = SessionSerializer
    site_field = "station__site"
    write_roles = CHARGER_ACTIONS

    def get_queryset(self) -> Any:
        qs = ChargingSession.objects.select_related("station", "connector").order_by("-started_at")
        if self.action != "list":
            return qs
        filters = query_params(self.request, SessionFilter)
        if filters.get("charger"):
            qs = qs.filter(station__charge_point_id=filters["charger"])
        if filters.get("site"):
            qs = qs.filter(station__site__slug=filters["site"])
        return time_filtered(qs, filters, "started_at")


def readings_window(params: Any, *, now: datetime) -> tuple[datetime, datetime]:
    """``[since, until)`` of a readings request: at most 31 days; by default the last day.

    Only ``since``: from it to now (so at most 31 days ago); only ``until``: the day before it.
    """
    return capped_window(params, max_days=READINGS_MAX_DAYS, default=READINGS_DEFAULT_WINDOW, now=now)


def _has_measurand(measurand: str) -> Q:
    """Rows holding a value of ``measurand``: in its typed columns, or under an ``extra`` key
    ``measurand[|phase][@location][#unit]`` (one key per phase, location and unit)."""
    found = Q(pk__in=[])
    for column, (name, _, _) in BY_COLUMN.items():
        if name == measurand:
            found |= Q(**{f"{column}__isnull": False})
    table = MeterReading._meta.db_table
    in_extra = RawSQL(  # noqa: S611 - the measurand is a parameter
        f'EXISTS (SELECT 1 FROM jsonb_object_keys("{table}"."extra") AS k '  # noqa: S608 - our own table
        "WHERE split_part(split_part(split_part(k, '#', 1), '@', 1), '|', 1) = %s)",
        [measurand],
        output_field=BooleanField(),
    )
    return found | Q(in_extra)


@extend_schema_view(list=extend_schema(parameters=[ReadingFilter]))
class ReadingViewSet(SiteScopedMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Meter readings, one item per connector and instant with its values, oldest first, paged by
    a cursor (follow ``next``); at most 31 days per request, the last day when no time is given."""

    serializer_class = ReadingSerializer
    pagination_class = ReadingCursor
    site_field = "station__site"

    def reachable(self, queryset: Any) -> Any:
        """By station id, not a join: the readings query keeps naming stations of its own table."""
        site_ids = access_of(self.request).site_ids()
        if site_ids is None:
            return queryset
        return queryset.filter(station_id__in=ChargingStation.objects.filter(site_id__in=site_ids).values("pk"))

    def get_queryset(self) -> Any:
        filters = query_params(self.request, ReadingFilter)
        since, until = readings_window(filters, now=timezone.now())
        qs = MeterReading.objects.filter(sampled_at__gte=since, sampled_at__lt=until)
        charger = filters.get("charger")
        if charger:
            # Looked up on its own so that the readings query names one station: PostgreSQL then
            # reads it from the primary key (station, time, connector) in the order paged on.
            stations = access_of(self.request).filter(ChargingStation.objects.filter(charge_point_id=charger), "site")
            station_id = stations.values_list("pk", flat=True).first()
            qs = qs.filter(station_id=station_id) if station_id is not None else qs.none()
        if filters.get("connector") is not None:
            qs = qs.filter(connector_no=filters["connector"])
        if filters.get("measurand"):
            qs = qs.filter(_has_measurand(filters["measurand"]))
        return qs

    def get_serializer_context(self) -> dict[str, Any]:
        measurand = query_params(self.request, ReadingFilter).get("measurand", "")
        return {**super().get_serializer_context(), "measurand": measurand}

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """One page, and the charge point ids of the stations on it (one query, never all stations)."""
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset())) or []
        station_ids = {reading.station_id for reading in page}
        names = (
            dict(ChargingStation.objects.filter(pk__in=station_ids).values_list("pk", "charge_point_id"))
            if station_ids
            else {}
        )
        serializer = self.get_serializer(
            page, many=True, context={**self.get_serializer_context(), "charge_point_ids": names}
        )
        return self.get_paginated_response(serializer.data)


# --- Fleet import -----------------------------------------------------------------------------


class CsvRows(list[dict[str, str]]):
    """The rows of a ``text/csv`` body, as ``fleet_rows_read`` read them."""


class FleetCsvParser(BaseParser):
    """A ``text/csv`` body (UTF-8, comma separated, a header row with ``kind``), as the file import reads it."""

    media_type = "text/csv"

    def parse(  # type: ignore[override]  # a list of rows, not DRF's usual mapping: the view tells them apart
        self, stream: Any, media_type: str | None = None, parser_context: Any = None
    ) -> CsvRows:
        content = stream.read(MAX_FILE_BYTES + 1) if stream is not None else b""
        try:
            return CsvRows(fleet_rows_read(filename="body.csv", content=content))
        except ImportFileError as exc:
            raise ParseError(f"CSV body: {str(exc).removeprefix('body.csv: ')}") from None


TEXT_COLUMNS = ("site", "name", "timezone", "parent", "kind_of_circuit", "charge_point_id", "circuit", "password")
NUMBER_COLUMNS = ("limit_a", "phases", "voltage_v", "demand_cap_kw", "max_current_a", "connectors")
COLUMN_MAX_CHARS = 200


@extend_schema_field(
    {
        "type": "object",
        "description": "One row, columns as in the CSV file (README, 'Onboarding'): site, circuit or charger.",
        "properties": {
            "kind": {"type": "string", "enum": ["site", "circuit", "charger"]},
            **{name: {"type": "string", "maxLength": COLUMN_MAX_CHARS} for name in TEXT_COLUMNS},
            **{
                name: {"oneOf": [{"type": "string", "maxLength": COLUMN_MAX_CHARS}, {"type": "number"}]}
                for name in NUMBER_COLUMNS
            },
        },
        "required": ["kind"],
        "additionalProperties": False,
    }
)
class FleetRowField(serializers.Field):
    """One row as an object of column -> value (text, or a number for the numeric columns)."""

    def to_internal_value(self, data: Any) -> dict[str, str]:
        if not isinstance(data, dict):
            raise ValidationError("an object of column: value")
        row: dict[str, str] = {}
        for column, value in data.items():
            if column == "kind" and value not in ("site", "circuit", "charger"):
                raise ValidationError("kind: one of site, circuit, charger")
            if column != "kind" and column not in TEXT_COLUMNS and column not in NUMBER_COLUMNS:
                raise ValidationError(f"{str(column)[:40]!r} is not a column of the import")
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if number and column in NUMBER_COLUMNS:
                row[column] = str(value)
            elif isinstance(value, str) and len(value) <= COLUMN_MAX_CHARS and "\x00" not in value:
                row[column] = value.strip()
            else:
                kind = "text or a number" if column in NUMBER_COLUMNS else "text"
                raise ValidationError(f"{column}: {kind} of at most {COLUMN_MAX_CHARS} characters")
        if "kind" not in row:
            raise ValidationError("kind: required (site, circuit or charger)")
        return row

    def to_representation(self, value: Any) -> Any:
        return value


class FleetImportSerializer(serializers.Serializer):
    rows = serializers.ListField(child=FleetRowField(), min_length=1, max_length=MAX_ROWS)


class FleetImportQuery(serializers.Serializer):
    dry_run = serializers.BooleanField(
        default=False, help_text="true: check every row and answer what would change; nothing is written."
    )


class KindCountsSerializer(serializers.Serializer):
    site = serializers.IntegerField()
    circuit = serializers.IntegerField()
    charger = serializers.IntegerField()


class FleetImportResultSerializer(serializers.Serializer):
    rows = serializers.IntegerField(help_text="Rows read.")
    dry_run = serializers.BooleanField()
    written = serializers.BooleanField(help_text="True: every row is stored; false: a dry run, nothing stored.")
    created = KindCountsSerializer(help_text="Objects new (or, on a dry run, that would be).")
    updated = KindCountsSerializer(help_text="Objects changed (or that would be).")
    passwords = serializers.DictField(
        child=serializers.CharField(),
        help_text="Charge point id -> generated password, for new chargers without one: shown in this answer "
        "only (a replay of the request with its Idempotency-Key leaves them out).",
    )


ROW_ERRORS_RESPONSE = OpenApiResponse(
    description="Bad input, nothing written. Rows that are not valid are listed under error.fields.rows, each "
    "as {row, column, message}: row is, for CSV, the line as a spreadsheet numbers it (the header is 1) and, "
    "for JSON, the row's position in rows (from 1)."
)


def _counts(counter: Any) -> dict[str, int]:
    return {kind: int(counter[kind]) for kind in ("site", "circuit", "charger")}


def _without_passwords(body: Any) -> Any:
    """What an idempotent replay answers: the counts, never a password again."""
    return {**body, "passwords": {}} if isinstance(body, dict) and "passwords" in body else body


class FleetImportView(APIView):
    """Sites, circuits and chargers in bulk: the file import of the portal, through the API."""

    permission_classes = [RoleForWrites]
    write_roles = IMPORT_FLEET
    parser_classes = [SafeJSONParser, FleetCsvParser]

    @extend_schema(
        operation_id="imports_fleet_create",
        parameters=[FleetImportQuery, IDEMPOTENCY_PARAMETER],
        request={"application/json": FleetImportSerializer, "text/csv": {"type": "string"}},
        responses={
            201: OpenApiResponse(FleetImportResultSerializer, description="Every row written; something was new."),
            200: OpenApiResponse(
                FleetImportResultSerializer, description="A dry run without errors, or nothing new: nothing written."
            ),
            400: ROW_ERRORS_RESPONSE,
            422: KEY_REUSED_RESPONSE,
        },
    )
    @idempotent(redact=_without_passwords)
    def post(self, request: Request) -> Response:
        """Apply rows of kind site, circuit or charger (JSON ``{"rows": [...]}`` or a ``text/csv`` body
        with a header row), all or nothing: with one bad row, 400 lists every bad row and nothing is
        written. ``?dry_run=true`` checks without writing. Importing the same rows again changes
        nothing. Organisation admins only."""
        if not access_of(request).has_org_role(IMPORT_FLEET):
            raise PermissionDenied("Bulk imports need the admin role on the whole organisation.")
        dry_run = query_params(request, FleetImportQuery)["dry_run"]
        if isinstance(request.data, CsvRows):
            rows, offset = list(request.data), 0
        else:
            given = FleetImportSerializer(data=request.data)
            given.is_valid(raise_exception=True)
            rows, offset = given.validated_data["rows"], 1  # fleet_import numbers a file's rows from 2
        result = fleet_import(tenant=request.tenant, rows=rows, dry_run=dry_run, actor=actor_of(request))  # type: ignore[attr-defined]
        if result.errors:
            errors = [{"row": e.row - offset, "column": e.column, "message": e.message} for e in result.errors]
            bad_rows = len({e.row for e in result.errors})
            message = f"{bad_rows} row{'s' if bad_rows != 1 else ''} not valid: nothing was written"
            body = {"status": 400, "code": "invalid", "message": message, "fields": {"rows": errors}}
            return Response({"error": body}, status=status.HTTP_400_BAD_REQUEST)
        answer = {
            "rows": result.rows,
            "dry_run": result.dry_run,
            "written": result.written,
            "created": _counts(result.created),
            "updated": _counts(result.updated),
            "passwords": result.passwords,
        }
        created = result.written and sum(result.created.values()) > 0
        return Response(answer, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
