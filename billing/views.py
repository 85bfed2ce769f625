"""Portal pages for the monthly savings reports: list, download, regenerate; session exports;
a site's tariff upload. Schema: tenant.

Finance (and admins; energy managers may read) download every stored version. Someone holding
that role on the whole organisation gets the stored files byte for byte; someone holding it on
a site group or a few sites gets each report narrowed to those sites (``billing.reports.scope``)
and reaching no site is refused (403), as for a site viewer. Regenerating stores a new version
for the whole organisation, so it needs finance or admin on the whole organisation; it queues
the work on the ``reports`` queue and never touches a stored version.
"""

import re
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from balancing.access import access_of, site_for
from balancing.forms import TariffUploadForm
from balancing.views import form_errors_text, validation_errors_text
from billing.exports import EXPORT_CONTENT_TYPES, SessionExport, sessions_export, sessions_export_file
from billing.models import SavingsReport
from billing.reports import CONTENT_TYPES
from billing.savings_reports import savings_report_request
from billing.selectors import report_content, report_find, report_months, report_site_ids
from billing.tariff_versions import tariff_file_import
from billing.tariffs import TariffError
from evplatform.permissions import CHANGE_LIMITS, MANAGE_REPORTS, actor_of

MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def report_filename(report: SavingsReport, file_format: str, tenant_slug: str, *, scoped: bool = False) -> str:
    suffix = "-your-sites" if scoped else ""
    return f"savings-{tenant_slug}-{report.month:%Y-%m}-v{report.version}{suffix}.{file_format}"


def report_reach(request: Any) -> set[int] | None:
    """The sites whose report figures this request may see (None: all); 403 when none."""
    site_ids = report_site_ids(access_of(request))
    if site_ids is not None and not site_ids:
        raise PermissionDenied("Your role may not read reports of any site.")
    return site_ids


def may_manage_reports(request: Any) -> bool:
    """Regenerating stores an organisation-wide version: finance or admin on the whole organisation."""
    access = access_of(request)
    return access.has_org_role(MANAGE_REPORTS) and not access.read_only


def reports(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    site_ids = report_reach(request)
    context = {
        "months": report_months(),
        "scoped": site_ids is not None,
        "can_manage": may_manage_reports(request),
        "nav": "reports",
    }
    return render(request, "portal/reports.html", context)


def report_file_response(
    *, report: SavingsReport, file_format: str, tenant_slug: str, site_ids: set[int] | None = None
) -> HttpResponse:
    """The file as a download with its checksum in a header: the stored one byte for byte for the
    whole organisation, else the report narrowed to ``site_ids``."""
    found = report_content(report=report, file_format=file_format, site_ids=site_ids)
    if found is None:
        raise Http404("no such file")
    response = HttpResponse(found.content, content_type=CONTENT_TYPES[file_format])
    filename = report_filename(report, file_format, tenant_slug, scoped=found.scoped)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["X-Content-SHA256"] = found.sha256
    response["X-Report-Scope"] = "sites" if found.scoped else "organisation"
    return response


def report_download(request: HttpRequest, pk: int, file_format: str) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    site_ids = report_reach(request)
    if file_format not in CONTENT_TYPES:
        raise Http404("unknown format")
    report = report_find(pk=pk)
    if report is None:
        raise Http404("No such report.")
    tenant_slug = getattr(getattr(request, "tenant", None), "slug", "tenant")
    return report_file_response(report=report, file_format=file_format, tenant_slug=tenant_slug, site_ids=site_ids)


@require_POST
def report_regenerate(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not may_manage_reports(request):
        raise PermissionDenied("Preparing a report of the whole organisation needs finance or admin on all of it.")
    month = request.POST.get("month", "").strip()
    if not MONTH_RE.match(month):
        messages.error(request, f"Not queued: {month!r} is not a month in the form YYYY-MM.")
    else:
        savings_report_request(month=month, requested_by=actor_of(request))
        messages.success(request, f"A new version of {month} is being prepared; it appears here when done.")
    return redirect("portal:reports")


def sessions_export_response(export: SessionExport, *, file_format: str, part: str) -> HttpResponse:
    content, filename = sessions_export_file(export, file_format=file_format, part=part)
    response = HttpResponse(content, content_type=EXPORT_CONTENT_TYPES[file_format])
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def sessions_export_download(request: HttpRequest) -> HttpResponse:
    """The session export of the reports page: ``?month=YYYY-MM`` (or since/until), file_format, part."""
    from billing.api import SessionExportQuery

    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    site_ids = report_reach(request)
    query = SessionExportQuery(data={k: v for k, v in request.GET.items() if v != ""})
    if not query.is_valid():
        problems = "; ".join(f"{name}: {' '.join(str(m) for m in msgs)}" for name, msgs in query.errors.items())
        messages.error(request, f"No export: {problems}")
        return redirect("portal:reports")
    export = sessions_export(site_ids=site_ids, period=query.validated_data["period"])
    return sessions_export_response(
        export, file_format=query.validated_data["file_format"], part=query.validated_data["part"]
    )


@require_POST
@login_required
def tariff_upload(request: HttpRequest, slug: str) -> HttpResponse:
    """Import a URDB v7 rate record as the site's next tariff version (audited; from the site's settings page)."""
    site = site_for(request, slug, CHANGE_LIMITS)
    form = TariffUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, "Tariff not imported: " + form_errors_text(form))
        return redirect("portal:site-settings", slug=site.slug)
    try:
        tariff = tariff_file_import(
            site=site,
            file=form.cleaned_data["record"],
            valid_from=form.cleaned_data["valid_from"],
            actor=actor_of(request),
        )
    except TariffError as exc:
        messages.error(request, f"Tariff not imported: {exc.problem}.")
    except ValidationError as exc:
        messages.error(request, f"Tariff not imported: {validation_errors_text(exc)}")
    else:
        messages.success(request, f"Tariff '{tariff.name}' imported as version {tariff.version}.")
    return redirect("portal:site-settings", slug=site.slug)
