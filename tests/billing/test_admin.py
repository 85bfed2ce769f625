"""Organisation admin: tariffs and reports are listed read-only, files download with their bytes,
and one tenant's admin cannot fetch another's report file."""

import pytest
from django_tenants.utils import tenant_context

from billing.models import SavingsReport, SavingsReportFile
from billing.savings_reports import savings_report_generate
from tenants.accounts.models import User
from tests.billing.test_reports import mall_site
from tests.conftest import ALPHA, BETA

pytestmark = pytest.mark.django_db


def admin_of(tenant, email: str) -> User:
    with tenant_context(tenant):
        return User.objects.get(email=email)


def test_the_admin_lists_reports_and_downloads_the_stored_bytes(tenant, alpha_client) -> None:
    mall_site()
    report = savings_report_generate(year=2026, month=10, reason="request")
    stored = SavingsReportFile.objects.get(report=report, format="pdf")
    alpha_client.force_login(admin_of(tenant, ALPHA.admin_email))

    listing = alpha_client.get("/admin/billing/savingsreport/")
    detail = alpha_client.get(f"/admin/billing/savingsreport/{report.pk}/change/")
    download = alpha_client.get(f"/admin/billing/savingsreport/file/{stored.pk}/")
    tariffs = alpha_client.get("/admin/billing/tariff/")
    costs = alpha_client.get("/admin/billing/installationcostmodel/")

    assert listing.status_code == detail.status_code == tariffs.status_code == costs.status_code == 200
    assert stored.sha256 in detail.content.decode()
    assert download.status_code == 200
    assert download["Content-Type"] == "application/pdf"
    assert download.content == bytes(stored.content)
    assert alpha_client.post(f"/admin/billing/savingsreport/{report.pk}/delete/").status_code == 403
    assert SavingsReport.objects.filter(pk=report.pk).exists()


def test_another_tenants_admin_cannot_fetch_the_file(tenant, other_tenant, beta_client) -> None:
    mall_site()
    stored = SavingsReportFile.objects.get(
        report=savings_report_generate(year=2026, month=10, reason="request"), format="csv"
    )
    with tenant_context(other_tenant):  # the session lives in beta's own schema
        beta_client.force_login(admin_of(other_tenant, BETA.admin_email))
        assert beta_client.get("/admin/billing/savingsreport/").status_code == 200

    response = beta_client.get(f"/admin/billing/savingsreport/file/{stored.pk}/")

    assert response.status_code == 404


def test_regenerate_in_the_admin_queues_a_new_version_after_commit(
    tenant, alpha_client, django_capture_on_commit_callbacks
) -> None:
    mall_site()
    report = savings_report_generate(year=2026, month=10, reason="request")
    alpha_client.force_login(admin_of(tenant, ALPHA.admin_email))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = alpha_client.post(
            "/admin/billing/savingsreport/", {"action": "regenerate", "_selected_action": [report.pk]}
        )

    assert response.status_code == 302
    assert len(callbacks) == 1
