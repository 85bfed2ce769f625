"""The portal in a real headless Chromium (Debian's, driven by Playwright) against a real server.

Screenshots of the main pages are saved under test-artifacts/ for people to look at.
"""

import os
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone
from django_tenants.utils import tenant_context
from playwright.sync_api import Dialog, Page, expect, sync_playwright

from balancing.models import BalancingRun, Circuit, Site
from tenants.accounts.models import Role, User
from tests.conftest import ALPHA

pytestmark = pytest.mark.django_db
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts"
PASSWORD = "browser-test-pass-2026"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def portal_data(tenant, django_db_blocker):
    """Committed demo-like data in alpha (the server process reads it), removed afterwards."""
    with django_db_blocker.unblock(), tenant_context(tenant):
        site = Site.objects.create(
            slug="browser-mall",
            name="Browser Mall Garage",
            limit_a=Decimal("63"),
            demand_cap_kw=Decimal("20"),
            timezone="UTC",
        )
        Circuit.objects.create(site=site, name="Panel A", kind="panel", limit_a=Decimal("63"))
        now = timezone.now()
        for minutes in range(60, 0, -2):
            BalancingRun.objects.create(
                site=site,
                reason="sweep",
                started_at=now - timedelta(minutes=minutes),
                inputs_digest="b" * 64,
                problem={"evses": []},
                result={"allocations_a": {}, "node_load_a": {"site": [28, 28, 28]}},
                measured_kw=15 + (minutes % 10) / 2,
                allocated_kw=19.3,
                limit_kw=20.0,
                phase_measured_a=[22, 21, 23],
                phase_limit_a=[63, 63, 63],
                limits={"bound_kw": "demand_cap"},
            )
        users = {
            role: User.objects.create_user(email=f"{role}.browser@alpha.localhost", password=PASSWORD, role=role)
            for role in (Role.ENERGY_MANAGER, Role.SITE_VIEWER, Role.FINANCE)
        }
    yield site
    with django_db_blocker.unblock(), tenant_context(tenant):
        BalancingRun.objects.filter(site=site).delete()
        site.circuits.all().delete()
        site.delete()
        for user in users.values():
            user.delete()


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API runs an event loop in this thread; Django's ORM calls made by the
    # test itself (not by the server, a separate process) are still plain synchronous calls.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def open_page(browser, web_server: str) -> Page:
    context = browser.new_context(
        base_url=f"http://{ALPHA.domain}:{web_server}", viewport={"width": 1280, "height": 900}
    )
    return context.new_page()


def sign_in(page: Page, email: str) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/")


def csp_directives(header: str) -> dict[str, str]:
    """A Content-Security-Policy header by directive (django-csp writes them in no fixed order)."""
    return dict(part.strip().partition(" ")[::2] for part in header.split(";") if part.strip())


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_an_energy_manager_signs_in_sees_the_sites_and_the_live_chart(browser, web_server, portal_data) -> None:
    page = open_page(browser, web_server)
    sign_in(page, "energy_manager.browser@alpha.localhost")

    expect(page.get_by_role("link", name="Browser Mall Garage")).to_be_visible()
    shot(page, "overview")
    page.get_by_role("link", name="Browser Mall Garage").click()
    chart = page.locator("#load-chart")
    expect(chart).to_have_attribute("data-drawn", "true", timeout=15000)
    assert page.locator("#load-chart svg path").count() > 0
    shot(page, "site")


def test_a_limit_changed_in_the_portal_is_used_by_the_next_balancing_run(
    browser, web_server, portal_data, celery_worker, tenant
) -> None:
    page = open_page(browser, web_server)
    sign_in(page, "energy_manager.browser@alpha.localhost")
    page.goto(f"/sites/{portal_data.slug}/settings/")
    page.get_by_label("Demand cap (kW)").fill("15")
    page.get_by_role("button", name="Review changes").click()
    expect(page.get_by_text("Please confirm these changes")).to_be_visible()
    shot(page, "confirm-limit")
    page.get_by_role("button", name="Confirm and apply").click()
    expect(page.get_by_text("Limits saved")).to_be_visible()

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with tenant_context(tenant):
            # The run's row is written when it starts; wait until the run has finished.
            run = BalancingRun.objects.filter(
                site=portal_data, reason="limits changed", finished_at__isnull=False
            ).first()
        if run is not None:
            break
        time.sleep(0.3)
    assert run is not None, "no balancing run followed the change"
    assert run.limit_kw == 15.0
    assert run.problem["nodes"][0]["limit_kw"] == 15.0


def test_a_site_viewer_cannot_change_limits(browser, web_server, portal_data) -> None:
    page = open_page(browser, web_server)
    sign_in(page, "site_viewer.browser@alpha.localhost")
    page.goto(f"/sites/{portal_data.slug}/")
    expect(page.get_by_role("link", name="Change limits")).to_have_count(0)
    response = page.goto(f"/sites/{portal_data.slug}/settings/")
    assert response is not None
    assert response.status == 403


@pytest.fixture(scope="module")
def finance_report(tenant, django_db_blocker):
    """A stored October report in alpha (committed for the server), removed afterwards."""
    from billing.models import IntervalEnergy, SavingsReport, SessionDraw, SiteMonthDemand, Tariff
    from billing.savings_reports import savings_report_generate
    from chargepoint.models import ChargingSession, ChargingStation
    from tests.billing.test_reports import mall_site

    with django_db_blocker.unblock(), tenant_context(tenant):
        site = mall_site("browser-report")
        report = savings_report_generate(year=2026, month=10, reason="request", requested_by="browser test")
    yield report
    with django_db_blocker.unblock(), tenant_context(tenant):
        SavingsReport.objects.filter(pk=report.pk).delete()
        SiteMonthDemand.objects.filter(site=site).delete()
        IntervalEnergy.objects.filter(site=site).delete()
        SessionDraw.objects.filter(session__station__site=site).delete()
        ChargingSession.objects.filter(station__site=site).delete()
        ChargingStation.objects.filter(site=site).delete()  # their readings with them (ON DELETE CASCADE)
        Tariff.objects.filter(site=site).delete()
        site.delete()


def test_finance_downloads_the_monthly_report_as_a_pdf_that_opens(
    browser, web_server, portal_data, finance_report
) -> None:
    import io

    from pypdf import PdfReader

    page = open_page(browser, web_server)
    sign_in(page, "finance.browser@alpha.localhost")
    page.get_by_role("link", name="Reports").click()
    expect(page.get_by_text("October 2026")).to_be_visible()
    shot(page, "reports")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="PDF").first.click()
    download = download_info.value
    assert download.suggested_filename == "savings-alpha-2026-10-v1.pdf"
    content = Path(download.path()).read_bytes()
    pdf = PdfReader(io.BytesIO(content))
    assert len(pdf.pages) >= 1
    assert "October 2026" in pdf.pages[0].extract_text() or "2026-10" in pdf.pages[0].extract_text()


@pytest.fixture(scope="module")
def station(tenant, portal_data, django_db_blocker):
    """A charger at the browser site, committed for the server process, removed afterwards."""
    from chargepoint.models import ChargingStation

    with django_db_blocker.unblock(), tenant_context(tenant):
        station = ChargingStation.objects.create(charge_point_id="CSP-CP-1", site=portal_data, max_current_a=32)
    yield station
    with django_db_blocker.unblock(), tenant_context(tenant):
        station.delete()


def test_the_pages_work_under_the_content_security_policy(browser, web_server, portal_data, station) -> None:
    page = open_page(browser, web_server)
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    response = page.goto("/accounts/login/")
    assert response is not None
    assert csp_directives(response.headers["content-security-policy"])["script-src"] == "'self'"
    sign_in(page, "energy_manager.browser@alpha.localhost")
    response = page.goto(f"/sites/{portal_data.slug}/")
    assert response is not None
    # Vega compiles chart expressions with Function(): only the chart pages allow that.
    assert csp_directives(response.headers["content-security-policy"])["script-src"] == "'self' 'unsafe-eval'"
    expect(page.locator("#load-chart")).to_have_attribute("data-drawn", "true", timeout=15000)

    # The charger's command form asks first (portal.js; an inline onclick would be refused).
    page.goto(f"/chargers/{station.charge_point_id}/")
    questions: list[str] = []

    def answer_no(dialog: Dialog) -> None:
        questions.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", answer_no)
    page.get_by_role("button", name="Send").click()
    page.wait_for_timeout(300)
    assert questions == ["Send this command to the charger?"]
    assert page.url.endswith(f"/chargers/{station.charge_point_id}/")
    assert page.locator(".messages li").count() == 0

    page.goto("/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("EV load-balancing platform API", timeout=15000)
    assert refused == []


def test_the_admin_works_under_the_content_security_policy(browser, web_server, portal_data) -> None:
    page = open_page(browser, web_server)
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto("/admin/login/")
    page.get_by_label("Email").fill(ALPHA.admin_email)
    page.get_by_label("Password").fill(ALPHA.admin_password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("link", name="Sites", exact=True)).to_be_visible()
    page.goto(f"/admin/balancing/site/{portal_data.pk}/change/")
    expect(page.locator("#site_form")).to_be_visible()
    page.goto("/admin/accounts/user/add/")
    expect(page.locator("#user_form")).to_be_visible()
    shot(page, "admin-under-csp")
    assert refused == []


@pytest.fixture(scope="module")
def fleet_admin(tenant, django_db_blocker):
    """A committed admin of alpha; the campus an import makes is removed afterwards."""
    from django_tenants.utils import schema_context

    from chargepoint.models import ChargingStation
    from tenants.models import ChargePointIdentity

    with django_db_blocker.unblock(), tenant_context(tenant):
        admin = User.objects.create_user(email="admin.browser@alpha.localhost", password=PASSWORD, role=Role.ADMIN)
    yield admin
    with django_db_blocker.unblock(), tenant_context(tenant):
        ChargingStation.objects.filter(site__slug="campus").delete()
        Circuit.objects.filter(site__slug="campus", parent__isnull=False).delete()
        Site.objects.filter(slug="campus").delete()
        admin.delete()
        with schema_context("public"):
            ChargePointIdentity.objects.filter(charge_point_id__startswith="CAMPUS-").delete()


def test_an_admin_imports_300_chargers_two_bad_rows_are_listed_and_nothing_written_until_fixed(
    browser, web_server, fleet_admin, tenant
) -> None:
    from chargepoint.models import ChargingStation
    from tests.chargepoint.test_onboarding import as_csv, campus_rows

    rows = campus_rows(chargers=300)
    rows[40]["max_current_a"] = "thirty-two"  # file row 42
    rows[200]["circuit"] = "Feeder 9"  # file row 202
    page = open_page(browser, web_server)
    page.set_default_timeout(120_000)
    sign_in(page, fleet_admin.email)
    page.get_by_role("link", name="Import").click()

    def submit(content: bytes, *, dry_run: bool) -> None:
        page.get_by_label("CSV or XLSX file").set_input_files(
            {"name": "campus.csv", "mimeType": "text/csv", "buffer": content}
        )
        page.get_by_label("Dry run: check every row, write nothing").set_checked(dry_run)
        page.get_by_role("button", name="Check and import").click()

    submit(as_csv(rows), dry_run=False)
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("2 problems in campus.csv (305 rows): nothing was written")
    expect(alert.locator("tbody tr")).to_have_count(2)
    expect(alert.locator("tbody tr").nth(0)).to_contain_text("42")
    expect(alert.locator("tbody tr").nth(0)).to_contain_text("max_current_a")
    expect(alert.locator("tbody tr").nth(1)).to_contain_text("202")
    expect(alert.locator("tbody tr").nth(1)).to_contain_text("Feeder 9")
    shot(page, "import-errors")
    with tenant_context(tenant):
        assert not ChargingStation.objects.filter(charge_point_id__startswith="CAMPUS-").exists()

    rows[40]["max_current_a"] = "32"
    rows[200]["circuit"] = "Feeder 3"
    submit(as_csv(rows), dry_run=False)

    expect(page.get_by_role("status")).to_contain_text("Chargers: 300 new, 0 changed")
    with tenant_context(tenant):
        assert ChargingStation.objects.filter(site__slug="campus").count() == 300
