"""REST API for the monthly savings reports: list, download, regenerate. Schema: tenant."""

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from billing.models import SavingsReport
from billing.reports import CONTENT_TYPES
from billing.services import savings_report_request
from billing.views import MONTH_RE, report_file_response
from evplatform.permissions import MANAGE_REPORTS, READ_REPORTS, RoleForWrites, actor_of


class ReportSerializer(serializers.ModelSerializer):
    month = serializers.DateField(format="%Y-%m")
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


class ReportViewSet(viewsets.ReadOnlyModelViewSet):
    """Every stored version of every month (newest first); ``?month=YYYY-MM`` filters."""

    serializer_class = ReportSerializer
    permission_classes = [RoleForWrites]
    read_roles = READ_REPORTS
    write_roles = MANAGE_REPORTS

    def get_queryset(self) -> Any:
        qs = SavingsReport.objects.prefetch_related("files").order_by("-month", "-version")
        month = self.request.query_params.get("month")
        if month:
            if not MONTH_RE.match(month):
                raise ValidationError({"month": [f"{month!r} is not a month in the form YYYY-MM"]})
            qs = qs.filter(month=f"{month}-01")
        return qs

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "file_format", str, enum=list(CONTENT_TYPES), location="query", description="csv, xlsx or pdf"
            )
        ],
        responses={200: bytes},
    )
    @action(detail=True, methods=["get"], url_path="download")
    def download(self, request: Request, pk: str | None = None) -> Any:
        """The stored file of this version, byte for byte (its SHA-256 in ``X-Content-SHA256``)."""
        file_format = request.query_params.get("file_format", "pdf")
        if file_format not in CONTENT_TYPES:
            raise ValidationError({"file_format": [f"use one of {', '.join(CONTENT_TYPES)}"]})
        report = self.get_object()
        if not report.files.filter(format=file_format).exists():
            raise NotFound(f"version {report.version} has no {file_format} file")
        tenant_slug = getattr(getattr(request, "tenant", None), "slug", "tenant")
        return report_file_response(report=report, file_format=file_format, tenant_slug=tenant_slug)

    @extend_schema(
        request=inline_serializer("RegenerateRequest", {"month": serializers.CharField()}),
        responses={202: inline_serializer("RegenerateQueued", {"month": serializers.CharField()})},
    )
    @action(detail=False, methods=["post"])
    def regenerate(self, request: Request) -> Response:
        """Queue a new version of a month's report (finance and admins)."""
        month = str(request.data.get("month", "") if isinstance(request.data, dict) else "")
        if not MONTH_RE.match(month):
            raise ValidationError({"month": [f"{month!r} is not a month in the form YYYY-MM"]})
        savings_report_request(month=month, requested_by=actor_of(request))
        return Response({"month": month}, status=status.HTTP_202_ACCEPTED)
