"""Portal pages for the monthly savings reports: list, download, regenerate. Schema: tenant.

Finance (and admins; energy managers may read) download every stored version; regenerating
queues a new version on the ``reports`` queue and never touches a stored one.
"""

import re
from collections import defaultdict
from datetime import date

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from billing.models import SavingsReport, SavingsReportFile
from billing.reports import CONTENT_TYPES
from billing.services import savings_report_request
from evplatform.permissions import MANAGE_REPORTS, READ_REPORTS, actor_of, has_role, role_required

MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def report_filename(report: SavingsReport, file_format: str, tenant_slug: str) -> str:
    return f"savings-{tenant_slug}-{report.month:%Y-%m}-v{report.version}.{file_format}"


@role_required(READ_REPORTS)
def reports(request: HttpRequest) -> HttpResponse:
    by_month: dict[date, list[SavingsReport]] = defaultdict(list)
    for report in SavingsReport.objects.prefetch_related("files").order_by("-month", "-version"):
        by_month[report.month].append(report)
    context = {
        "months": [
            {"month": month, "latest": versions[0], "older": versions[1:]} for month, versions in by_month.items()
        ],
        "can_manage": has_role(request.user, MANAGE_REPORTS),
        "nav": "reports",
    }
    return render(request, "portal/reports.html", context)


def report_file_response(*, report: SavingsReport, file_format: str, tenant_slug: str) -> HttpResponse:
    """The stored file as a download, byte for byte, with its checksum in a header."""
    stored = get_object_or_404(SavingsReportFile, report=report, format=file_format)
    response = HttpResponse(bytes(stored.content), content_type=CONTENT_TYPES[file_format])
    response["Content-Disposition"] = f'attachment; filename="{report_filename(report, file_format, tenant_slug)}"'
    response["X-Content-SHA256"] = stored.sha256
    return response


@role_required(READ_REPORTS)
def report_download(request: HttpRequest, pk: int, file_format: str) -> HttpResponse:
    if file_format not in CONTENT_TYPES:
        raise Http404("unknown format")
    report = get_object_or_404(SavingsReport, pk=pk)
    tenant_slug = getattr(getattr(request, "tenant", None), "slug", "tenant")
    return report_file_response(report=report, file_format=file_format, tenant_slug=tenant_slug)


@require_POST
@role_required(MANAGE_REPORTS)
def report_regenerate(request: HttpRequest) -> HttpResponse:
    month = request.POST.get("month", "").strip()
    if not MONTH_RE.match(month):
        messages.error(request, f"Not queued: {month!r} is not a month in the form YYYY-MM.")
    else:
        savings_report_request(month=month, requested_by=actor_of(request))
        messages.success(request, f"A new version of {month} is being prepared; it appears here when done.")
    return redirect("portal:reports")
