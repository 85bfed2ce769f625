"""Writes of billing's savings reports: a month's figures stored, rendered, as a new version.

Schema: tenant. ``savings_report_generate`` checks that a tenant schema is active.
"""

from datetime import date, datetime

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from billing.digests import canonical_json, sha256_hex
from billing.models import SavingsReport, SavingsReportFile, SiteMonthDemand
from billing.reports import FORMATS, render
from billing.reports.builder import report_data_build
from billing.selectors import report_next_version
from evplatform.services import require_tenant_schema

REPORT_VERSION_RETRIES = 3


def savings_report_generate(
    *, year: int, month: int, reason: str, requested_by: str = "", now: datetime | None = None
) -> SavingsReport:
    """Compute the month's figures and store them, rendered in every format, as a new version.

    Earlier versions stay as they were (the database refuses updates); the new one names the
    tariff version of each site and carries the SHA-256 of its data and of each file.
    """
    require_tenant_schema("savings_report_generate")
    generated_at = now or timezone.now()
    tenant = getattr(connection, "tenant", None)
    data, demands = report_data_build(
        tenant_slug=getattr(tenant, "slug", ""),
        tenant_name=getattr(tenant, "name", ""),
        year=year,
        month=month,
        generated_at=generated_at,
    )
    files = {fmt: render(data, fmt) for fmt in FORMATS}
    tariffs = {site["slug"]: site["tariff"] for site in data["sites"]}
    first = date(year, month, 1)
    for attempt in range(REPORT_VERSION_RETRIES):
        try:
            with transaction.atomic():
                for demand in demands:
                    SiteMonthDemand.objects.update_or_create(
                        site_id=demand.site_id,
                        month=demand.month,
                        defaults={"actual_kw": demand.actual_kw, "unmanaged_kw": demand.unmanaged_kw},
                    )
                report = SavingsReport.objects.create(
                    month=first,
                    version=report_next_version(month=first),
                    reason=reason,
                    requested_by=requested_by,
                    generated_at=generated_at,
                    tariffs=tariffs,
                    data=data,
                    data_sha256=sha256_hex(canonical_json(data)),
                )
                SavingsReportFile.objects.bulk_create(
                    [
                        SavingsReportFile(
                            report=report,
                            format=fmt,
                            content=content,
                            sha256=sha256_hex(content),
                            size_bytes=len(content),
                        )
                        for fmt, content in files.items()
                    ]
                )
                return report
        except IntegrityError:
            if attempt == REPORT_VERSION_RETRIES - 1:
                raise
    raise RuntimeError("unreachable")


def savings_report_request(*, month: str, requested_by: str) -> None:
    """Queue a new version of ``month``'s (YYYY-MM) report once the current transaction commits."""
    from billing.tasks import generate_savings_report

    transaction.on_commit(
        lambda: generate_savings_report.delay(month=month, reason="request", requested_by=requested_by)
    )
