"""REST API for the monthly savings reports: list, download, regenerate. Schema: tenant."""

import json
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from balancing.access import access_of, site_for
from balancing.models import Site
from billing.models import SavingsReport, Tariff
from billing.reports import CONTENT_TYPES
from billing.services import savings_report_request, tariff_version_import
from billing.tariffs import TariffError, tariff_json_load
from billing.views import report_file_response
from evplatform.api_plumbing import FileDownloadNegotiation, StrictRegexField, query_params, slug_filter
from evplatform.api_writes import SITE_NOT_FOUND_RESPONSE, service_errors
from evplatform.idempotency import IDEMPOTENCY_PARAMETER, KEY_REUSED_RESPONSE, idempotent
from evplatform.permissions import (
    CHANGE_LIMITS,
    MANAGE_REPORTS,
    READ_REPORTS,
    RoleForWrites,
    SiteRoleForWrites,
    actor_of,
)

# A month YYYY-MM, years 1000 to 9999 (a report's month needs the month after it in the calendar too).
MONTH_PATTERN = r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])$"


def month_field(**kwargs: Any) -> serializers.RegexField:
    return StrictRegexField(
        MONTH_PATTERN,
        max_length=7,
        error_messages={"invalid": "a month in the form YYYY-MM, e.g. 2026-05"},
        **kwargs,
    )


@extend_schema_field({"type": "string", "pattern": MONTH_PATTERN, "example": "2026-05"})
class MonthField(serializers.DateField):
    """A report's month as YYYY-MM (stored as its first day)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="%Y-%m", **kwargs)


class ReportSerializer(serializers.ModelSerializer):
    month = MonthField(read_only=True)
    formats = serializers.SerializerMethodField()

    class Meta:
        model = SavingsReport
        fields = [
            "id",
            "month",
            "version",
            "reason",
            "requested_by",
            "generated_at",
            "tariffs",
            "data_sha256",
            "formats",
        ]

    def get_formats(self, report: SavingsReport) -> list[str]:
        return sorted(f.format for f in report.files.all())


class ReportFilter(serializers.Serializer):
    month = month_field(required=False, help_text="Only this month's versions, YYYY-MM.")


class DownloadQuery(serializers.Serializer):
    file_format = serializers.ChoiceField(choices=list(CONTENT_TYPES), default="pdf", help_text="csv, xlsx or pdf")


class RegenerateSerializer(serializers.Serializer):
    month = month_field(help_text="The month to report again, YYYY-MM.")


@extend_schema_view(list=extend_schema(parameters=[ReportFilter]))
class ReportViewSet(viewsets.ReadOnlyModelViewSet):
    """Every stored version of every month (newest first); ``?month=YYYY-MM`` filters."""

    serializer_class = ReportSerializer
    permission_classes = [RoleForWrites]
    read_roles = READ_REPORTS
    write_roles = MANAGE_REPORTS

    def get_queryset(self) -> Any:
        qs = SavingsReport.objects.prefetch_related("files").order_by("-month", "-version")
        if self.action != "list":
            return qs
        month = query_params(self.request, ReportFilter).get("month")
        return qs.filter(month=f"{month}-01") if month else qs

    @extend_schema(
        parameters=[DownloadQuery],
        responses={
            (200, media_type.split(";")[0]): OpenApiResponse(
                OpenApiTypes.BINARY, description=f"The {name} file, byte for byte."
            )
            for name, media_type in CONTENT_TYPES.items()
        },
    )
    @action(detail=True, methods=["get"], url_path="download", content_negotiation_class=FileDownloadNegotiation)
    def download(self, request: Request, pk: str | None = None) -> Any:
        """The stored file of this version, byte for byte (its SHA-256 in ``X-Content-SHA256``)."""
        file_format = query_params(request, DownloadQuery)["file_format"]
        report = self.get_object()
        if not report.files.filter(format=file_format).exists():
            raise NotFound(f"version {report.version} has no {file_format} file")
        tenant_slug = getattr(getattr(request, "tenant", None), "slug", "tenant")
        return report_file_response(report=report, file_format=file_format, tenant_slug=tenant_slug)

    @extend_schema(
        request=RegenerateSerializer,
        responses={202: OpenApiResponse(RegenerateSerializer, description="Queued.")},
    )
    @action(detail=False, methods=["post"])
    def regenerate(self, request: Request) -> Response:
        """Queue a new version of a month's report (finance and admins)."""
        body = RegenerateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        month = body.validated_data["month"]
        savings_report_request(month=month, requested_by=actor_of(request))
        return Response({"month": month}, status=status.HTTP_202_ACCEPTED)


# --- Tariffs --------------------------------------------------------------------------------


class TariffSerializer(serializers.ModelSerializer):
    site: "serializers.SlugRelatedField[Site]" = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Tariff
        fields = [
            "id",
            "site",
            "version",
            "name",
            "utility",
            "urdb_label",
            "valid_from",
            "valid_until",
            "record_sha256",
            "imported_at",
            "imported_by",
        ]


class TariffImportSerializer(serializers.Serializer):
    site = serializers.SlugField(max_length=50, help_text="The site's slug.")
    valid_from = serializers.DateField(help_text="First day (site local) it applies; after the latest version's.")
    record = serializers.DictField(help_text="An OpenEI URDB v7 rate record (or a URDB answer holding one in items).")


class TariffFilter(serializers.Serializer):
    site = slug_filter("Site slug: only this site's versions.")


@extend_schema_view(list=extend_schema(parameters=[TariffFilter]))
class TariffViewSet(viewsets.ReadOnlyModelViewSet):
    """Tariff versions of each site (newest first); energy managers and admins of a site import the
    next one (POST a URDB v7 record with the day it applies from)."""

    serializer_class = TariffSerializer
    permission_classes = [SiteRoleForWrites]
    write_roles = CHANGE_LIMITS
    reads_by_site = True

    def get_queryset(self) -> Any:
        qs = access_of(self.request).filter(Tariff.objects.select_related("site")).order_by("site__slug", "-version")
        if self.action != "list":
            return qs
        site = query_params(self.request, TariffFilter).get("site")
        return qs.filter(site__slug=site) if site else qs

    @extend_schema(
        request=TariffImportSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={
            201: TariffSerializer,
            200: OpenApiResponse(TariffSerializer, description="The same record from the same day: that version."),
            404: SITE_NOT_FOUND_RESPONSE,
            422: KEY_REUSED_RESPONSE,
        },
    )
    @idempotent()
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Import a rate record as the site's next version (the one before ends where it begins);
        the same record from the same day again is that version (200), not a new one."""
        body = TariffImportSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        values = body.validated_data
        site = site_for(request, values["site"], CHANGE_LIMITS)
        try:
            # Through the upload's checks: size, depth, digits, NUL characters.
            record = tariff_json_load(json.dumps(values["record"]))
        except TariffError as exc:
            raise ValidationError({"record": [exc.problem]}) from exc
        with service_errors():
            outcome = tariff_version_import(
                site=site, record=record, valid_from=values["valid_from"], actor=actor_of(request)
            )
        code = status.HTTP_201_CREATED if outcome.created else status.HTTP_200_OK
        return Response(TariffSerializer(outcome.obj).data, status=code)
