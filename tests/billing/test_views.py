"""Finance's reports pages and API: list, download byte for byte, regenerate; roles; tenants."""

import io

import pytest
from django.test import Client
from django_tenants.utils import tenant_context
from pypdf import PdfReader

from billing.models import SavingsReport, SavingsReportFile
from billing.savings_reports import savings_report_generate
from tenants.accounts.models import Role
from tenants.accounts.tokens import api_token_create
from tests.billing.test_reports import mall_site
from tests.conftest import ALPHA, BETA

pytestmark = pytest.mark.django_db


@pytest.fixture
def report() -> SavingsReport:
    mall_site()
    return savings_report_generate(year=2026, month=10, reason="request", requested_by="test")


def test_finance_sees_the_month_and_downloads_a_pdf_that_opens(make_user, report) -> None:
    _, client = make_user(Role.FINANCE)

    page = client.get("/reports/").content.decode()
    assert "October 2026" in page
    assert f"/reports/{report.pk}/pdf/" in page
    response = client.get(f"/reports/{report.pk}/pdf/")

    assert response["Content-Type"] == "application/pdf"
    assert 'filename="savings-alpha-2026-10-v1.pdf"' in response["Content-Disposition"]
    stored = SavingsReportFile.objects.get(report=report, format="pdf")
    assert response.content == bytes(stored.content)
    assert response["X-Content-SHA256"] == stored.sha256
    assert len(PdfReader(io.BytesIO(response.content)).pages) >= 1


@pytest.mark.parametrize(("fmt", "starts"), [("csv", b"site,site_name,tariff,"), ("xlsx", b"PK")])
def test_csv_and_xlsx_download_too(make_user, report, fmt, starts) -> None:
    _, client = make_user(Role.FINANCE)
    body = client.get(f"/reports/{report.pk}/{fmt}/").content
    assert body.startswith(starts)
    assert body


def test_a_site_viewer_cannot_see_reports(make_user, report) -> None:
    _, client = make_user(Role.SITE_VIEWER)
    assert client.get("/reports/").status_code == 403
    assert client.get(f"/reports/{report.pk}/pdf/").status_code == 403


def test_regenerating_queues_a_new_version_and_refuses_a_bad_month(
    make_user, django_capture_on_commit_callbacks
) -> None:
    _, client = make_user(Role.FINANCE)
    with django_capture_on_commit_callbacks() as callbacks:
        client.post("/reports/regenerate/", {"month": "2026-10"})
        client.post("/reports/regenerate/", {"month": "October"})
    assert len(callbacks) == 1


def test_the_reports_api_lists_downloads_and_queues(make_user, report, django_capture_on_commit_callbacks) -> None:
    user, _ = make_user(Role.FINANCE)
    _, raw = api_token_create(user=user, name="finance")
    api = Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}")

    listed = api.get("/api/v1/reports/", {"month": "2026-10"}).json()
    assert listed["results"][0]["formats"] == ["csv", "pdf", "xlsx"]
    pdf = api.get(f"/api/v1/reports/{report.pk}/download/", {"file_format": "pdf"})
    assert pdf.content.startswith(b"%PDF")
    assert api.get("/api/v1/reports/", {"month": "10/2026"}).status_code == 400
    with django_capture_on_commit_callbacks() as callbacks:
        assert (
            api.post("/api/v1/reports/regenerate/", {"month": "2026-11"}, content_type="application/json").status_code
            == 202
        )
    assert len(callbacks) == 1


def test_another_tenants_finance_cannot_reach_these_reports(report, other_tenant) -> None:
    from tenants.accounts.models import User

    with tenant_context(other_tenant):
        user = User.objects.create_user(email="fin@beta.example", password="beta-finance-pass-1", role=Role.FINANCE)
        _, raw = api_token_create(user=user, name="beta")
    assert Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}").get("/api/v1/reports/").status_code == 401
    on_beta = Client(HTTP_HOST=BETA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert on_beta.get(f"/api/v1/reports/{report.pk}/").status_code == 404
