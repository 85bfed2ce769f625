"""REST API for the monthly savings reports: list, download, regenerate. Schema: tenant.

A reader holding a report role on some sites only (a site group, a site) sees every month's
versions, each narrowed to its sites: ``tariffs`` names only those, downloads are rendered for
them (``scope`` says which). Reaching no site is a 403, as for a site viewer.
"""

import json
from datetime import date
from typing import Any

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from balancing.access import access_of
from balancing.models import Site
from billing.exports import EXPORT_CONTENT_TYPES, MAX_DAYS, period_of_dates, period_of_month, sessions_export
from billing.models import SavingsReport, Tariff
from billing.reports import CONTENT_TYPES
from billing.reports.scope import section_in
from billing.savings_reports import savings_report_request
from billing.selectors import report_site_ids, site_slugs
from billing.tariff_versions import tariff_version_import
from billing.tariffs import TariffError, tariff_json_load
from billing.views import may_manage_reports, report_file_response, sessions_export_response
from evplatform.api_access import ReachableSiteField, SiteScopedMixin
from evplatform.api_plumbing import FileDownloadNegotiation, StrictRegexField, query_params, slug_filter
from evplatform.api_writes import service_errors
from evplatform.idempotency import IDEMPOTENCY_PARAMETER, KEY_REUSED_RESPONSE, idempotent
from evplatform.permissions import CHANGE_LIMITS, actor_of

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


class ReportReach(BasePermission):
    """Reads: a report role on at least one site. Writes: finance or admin on the whole organisation."""

    message = "Your role may not do this with reports."

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        if request.method in SAFE_METHODS:
            return report_site_ids(access_of(request)) != set()
        return may_manage_reports(request)


class ReportSerializer(serializers.ModelSerializer):
    month = MonthField(read_only=True)
    formats = serializers.SerializerMethodField()
    tariffs = serializers.SerializerMethodField(help_text="Site slug -> the tariff version it was billed with.")
    scope = serializers.SerializerMethodField(
        help_text="organisation: the stored version as it is; sites: narrowed to the sites you reach."
    )

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
            "scope",
        ]

    def _reach(self) -> tuple[set[int], set[str]] | None:
        return self.context.get("reach")

    def _in_reach(self, report: SavingsReport) -> list[dict[str, Any]] | None:
        reach = self._reach()
        if reach is None:
            return None
        return [site for site in report.data["sites"] if section_in(site, *reach)]

    def get_formats(self, report: SavingsReport) -> list[str]:
        return sorted(f.format for f in report.files.all())

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "object", "nullable": True}})
    def get_tariffs(self, report: SavingsReport) -> dict[str, Any]:
        kept = self._in_reach(report)
        if kept is None:
            return dict(report.tariffs)
        slugs = {site["slug"] for site in kept}
        return {slug: tariff for slug, tariff in report.tariffs.items() if slug in slugs}

    @extend_schema_field({"type": "string", "enum": ["organisation", "sites"]})
    def get_scope(self, report: SavingsReport) -> str:
        kept = self._in_reach(report)
        return "organisation" if kept is None or len(kept) == len(report.data["sites"]) else "sites"


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
    permission_classes = [ReportReach]

    def get_serializer_context(self) -> dict[str, Any]:
        context = dict(super().get_serializer_context())
        site_ids = report_site_ids(access_of(self.request))
        context["reach"] = None if site_ids is None else (site_ids, site_slugs(site_ids=site_ids))
        return context

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
                OpenApiTypes.BINARY,
                description=f"The {name} file: the stored one byte for byte, or narrowed to the sites you reach.",
            )
            for name, media_type in CONTENT_TYPES.items()
        },
    )
    @action(detail=True, methods=["get"], url_path="download", content_negotiation_class=FileDownloadNegotiation)
    def download(self, request: Request, pk: str | None = None) -> Any:
        """The file of this version (its SHA-256 in ``X-Content-SHA256``): the stored one byte for byte
        for the whole organisation, else the report narrowed to the sites you reach
        (``X-Report-Scope: sites``)."""
        file_format = query_params(request, DownloadQuery)["file_format"]
        report = self.get_object()
        if not report.files.filter(format=file_format).exists():
            raise NotFound(f"version {report.version} has no {file_format} file")
        tenant_slug = getattr(getattr(request, "tenant", None), "slug", "tenant")
        site_ids = report_site_ids(access_of(request))
        return report_file_response(report=report, file_format=file_format, tenant_slug=tenant_slug, site_ids=site_ids)

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


EXPORT_MONTH_PATTERN = r"^(20[0-9]{2}|2100)-(0[1-9]|1[0-2])$"
EXPORT_EARLIEST, EXPORT_LATEST = date(2000, 1, 1), date(2100, 12, 31)


class SessionExportQuery(serializers.Serializer):
    """A month (each site's own) or local dates from ``since`` to ``until`` (both included)."""

    month = StrictRegexField(
        EXPORT_MONTH_PATTERN,
        max_length=7,
        required=False,
        error_messages={"invalid": "a month in the form YYYY-MM (2000 to 2100), e.g. 2026-05"},
        help_text="The month, YYYY-MM, in each site's time zone. Or give since and until.",
    )
    since = serializers.DateField(required=False, help_text="First day (site local), YYYY-MM-DD; with until.")
    until = serializers.DateField(
        required=False, help_text=f"Last day (site local, included), YYYY-MM-DD; at most {MAX_DAYS} days from since."
    )
    file_format = serializers.ChoiceField(choices=["csv", "xlsx"], default="csv", help_text="csv or xlsx")
    part = serializers.ChoiceField(
        choices=["sessions", "chargeback"],
        default="sessions",
        help_text="CSV only: the sessions, or the charge-back by site group (an XLSX holds both).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        month, since, until = attrs.get("month"), attrs.get("since"), attrs.get("until")
        if month and (since or until):
            raise serializers.ValidationError({"month": "give a month or since and until, not both"})
        if month:
            year, number = (int(part) for part in month.split("-"))
            attrs["period"] = period_of_month(year, number)
            return attrs
        if since is None and until is None:
            raise serializers.ValidationError({"month": "required: a month YYYY-MM, or since and until"})
        if since is None or until is None:
            missing = "since" if since is None else "until"
            raise serializers.ValidationError({missing: "required with the other one of since and until"})
        for name, day in (("since", since), ("until", until)):
            if not EXPORT_EARLIEST <= day <= EXPORT_LATEST:
                raise serializers.ValidationError({name: "a day in the years 2000 to 2100"})
        if until < since:
            raise serializers.ValidationError({"until": "may not be before since"})
        if (until - since).days >= MAX_DAYS:
            raise serializers.ValidationError({"until": f"at most {MAX_DAYS} days from since, both included"})
        attrs["period"] = period_of_dates(since, until)
        return attrs


class SessionExportView(APIView):
    """Charging sessions of a month or dates as CSV or XLSX, with the charge-back by site group,
    for the sites where you hold a report role (finance, admin, energy manager)."""

    permission_classes = [ReportReach]
    content_negotiation_class = FileDownloadNegotiation

    @extend_schema(
        operation_id="exports_sessions",
        parameters=[SessionExportQuery],
        responses={
            (200, media_type.split(";")[0]): OpenApiResponse(
                OpenApiTypes.BINARY,
                description=f"The {name} file: sessions (and, in XLSX, the charge-back) of the sites you reach.",
            )
            for name, media_type in EXPORT_CONTENT_TYPES.items()
        },
    )
    def get(self, request: Request) -> HttpResponse:
        query = query_params(request, SessionExportQuery)
        site_ids = report_site_ids(access_of(request))
        export = sessions_export(site_ids=site_ids, period=query["period"])
        return sessions_export_response(export, file_format=query["file_format"], part=query["part"])


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
    site: "serializers.SlugRelatedField[Site]" = ReachableSiteField(
        write_roles=CHANGE_LIMITS, help_text="The site's slug (one the caller reaches)."
    )
    valid_from = serializers.DateField(help_text="First day (site local) it applies; after the latest version's.")
    record = serializers.DictField(help_text="An OpenEI URDB v7 rate record (or a URDB answer holding one in items).")


class TariffFilter(serializers.Serializer):
    site = slug_filter("Site slug: only this site's versions.")


@extend_schema_view(list=extend_schema(parameters=[TariffFilter]))
class TariffViewSet(SiteScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Tariff versions of each site (newest first); energy managers and admins of a site import the
    next one (POST a URDB v7 record with the day it applies from)."""

    serializer_class = TariffSerializer
    write_roles = CHANGE_LIMITS

    def get_queryset(self) -> Any:
        qs = Tariff.objects.select_related("site").order_by("site__slug", "-version")
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
            422: KEY_REUSED_RESPONSE,
        },
    )
    @idempotent()
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Import a rate record as the site's next version (the one before ends where it begins);
        the same record from the same day again is that version (200), not a new one."""
        body = TariffImportSerializer(data=request.data, context=self.get_serializer_context())
        body.is_valid(raise_exception=True)
        values = body.validated_data
        site = values["site"]
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
