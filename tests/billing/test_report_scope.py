"""Reports narrowed to the sites a reader reaches (a site group's finance sees its sites only, with
totals over them), the PDF's summary page, the year to date, and deterministic renderings."""

import csv
import hashlib
import io
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.test import Client
from openpyxl import load_workbook
from pypdf import PdfReader

from balancing.models import Site, SiteGrant, SiteGroup
from billing.models import SavingsReport, SavingsReportFile
from billing.reports import FORMATS, render
from billing.reports.scope import report_data_narrow
from billing.savings_reports import savings_report_generate
from tenants.accounts.models import Role
from tenants.accounts.tokens import api_token_create
from tests.billing.conftest import simple_record
from tests.billing.test_reports import mall_site, ran_cost_aware
from tests.conftest import ALPHA

pytestmark = pytest.mark.django_db
GENERATED = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def two_sites() -> tuple[Site, Site]:
    """mall: $10/kW demand charge, so 8 kW less peak saves $80; plaza: $25/kW, saves $200.

    Each has two chargers, two sessions and 16 kWh (see ``mall_site``); each avoids
    (12,192 - 2,290) x 2 / 4 = $4,951 of installation. mall has a 12 kW demand cap.
    """
    mall = mall_site("mall")
    plaza = mall_site("plaza", record=simple_record(flat_rate="25", energy_rates=("0.10",), fixed="100"))
    Site.objects.filter(pk=mall.pk).update(demand_cap_kw=Decimal(12))
    mall.refresh_from_db()
    return mall, plaza


@pytest.fixture
def october() -> tuple[SavingsReport, Site, Site]:
    mall, plaza = two_sites()
    return savings_report_generate(year=2026, month=10, reason="schedule", now=GENERATED), mall, plaza


def group_of(*sites: Site, slug: str = "north") -> SiteGroup:
    group = SiteGroup.objects.create(slug=slug, name=slug.title())
    group.sites.set(sites)
    return group


def granted(make_user, role: str, *, group: SiteGroup | None = None, site: Site | None = None, email: str):
    """A user with no organisation-wide role, holding ``role`` on a group or a site, signed in."""
    user, client = make_user("", email=email)
    SiteGrant.objects.create(user=user, role=role, group=group, site=site)
    return user, client


def pages(content: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(content)).pages]


def csv_rows(content: bytes) -> dict[str, dict[str, str]]:
    return {row["site"]: row for row in csv.DictReader(io.StringIO(content.decode()))}


def test_narrowing_to_one_site_keeps_its_figures_and_totals_only_them(october) -> None:
    report, mall, _ = october
    assert Decimal(report.data["total"]["savings"]["total"]) == 280  # 80 + 200

    narrowed = report_data_narrow(report.data, site_ids={mall.pk}, site_slugs={"mall"})

    assert [s["slug"] for s in narrowed["sites"]] == ["mall"]
    total = narrowed["total"]
    assert Decimal(total["savings"]["total"]) == 80
    assert Decimal(total["savings"]["demand_charge"]) == 80
    assert Decimal(total["actual"]["demand_charge"]) == 80  # 8 kW x $10
    assert Decimal(total["unmanaged"]["peak_kw"]) == 16
    assert Decimal(total["energy_delivered_kwh"]) == 16
    assert Decimal(total["avoided_capital_cost"]) == 4951
    assert (total["sessions"], total["chargers"]) == (2, 2)
    assert Decimal(narrowed["year_to_date"]["total"]["savings_total"]) == 80
    assert narrowed["scope"] == {"sites": ["mall"]}
    daily = {day: (Decimal(a), Decimal(u)) for day, a, u in narrowed["charts"]["daily_peak_kw"]}
    assert daily["2026-10-05"] == (8, 16)  # mall's own peaks, not the organisation's 16 vs 32
    assert narrowed["charts"]["load_duration_kw"] == {}
    assert Decimal(report.data["total"]["savings"]["total"]) == 280  # the stored figures are untouched


def test_a_report_stored_before_site_ids_were_kept_is_narrowed_by_slug(october) -> None:
    report, _, _ = october
    old = {**report.data, "sites": [{k: v for k, v in s.items() if k != "site_id"} for s in report.data["sites"]]}

    narrowed = report_data_narrow(old, site_ids={-1}, site_slugs={"plaza"})

    assert [s["slug"] for s in narrowed["sites"]] == ["plaza"]
    assert Decimal(narrowed["total"]["savings"]["total"]) == 200


def test_narrowed_to_every_site_the_totals_are_the_stored_ones(october) -> None:
    report, mall, plaza = october

    narrowed = report_data_narrow(report.data, site_ids={mall.pk, plaza.pk}, site_slugs=set())

    assert narrowed["total"] == report.data["total"]


def test_the_year_to_date_adds_the_latest_version_of_each_earlier_month_of_the_year(october) -> None:
    _, mall, _ = october
    savings_report_generate(year=2026, month=10, reason="request", now=GENERATED)  # v2: same figures

    november = savings_report_generate(year=2026, month=11, reason="schedule", now=GENERATED)
    january = savings_report_generate(year=2027, month=1, reason="schedule", now=GENERATED)

    ytd = november.data["year_to_date"]
    assert ytd["months"] == ["2026-10", "2026-11"]  # no report of January to September: not counted
    assert Decimal(ytd["total"]["savings_total"]) == 280  # October's, once (v2 only), + November's 0
    assert Decimal(ytd["total"]["energy_delivered_kwh"]) == 32
    assert Decimal(november.data["total"]["savings"]["total"]) == 0
    narrowed = report_data_narrow(november.data, site_ids={mall.pk}, site_slugs=set())
    assert Decimal(narrowed["year_to_date"]["total"]["savings_total"]) == 80
    assert january.data["year_to_date"]["months"] == ["2027-01"]
    assert Decimal(january.data["year_to_date"]["total"]["savings_total"]) == 0


def test_the_pdf_opens_with_the_summary_and_then_each_sites_load_against_its_cap(october) -> None:
    report, _, _ = october

    text = pages(bytes(report.files.get(format="pdf").content))

    first = text[0]
    assert "Savings report October 2026: Alpha" in first
    assert "All 2 sites of the organisation" in first
    assert "Year to date (October 2026)" in first
    assert "$280.00" in first  # savings, total and demand charges avoided
    assert "32.0 kWh" in first  # energy delivered
    assert "16.0 kW" in first
    assert "32.0 kW" in first
    assert "16.0 kW (50%)" in first
    assert "$9,902.00" in first  # avoided upgrade: (12,192 - 2,290) x 4 chargers / 4
    assert "$2,290.00" in first
    assert "$12,192.00" in first
    assert "Methodology" not in first
    assert "Flat billing kW" not in first
    rest = "\n".join(text[1:])
    assert "Flat billing kW" in rest  # the detail tables follow
    assert "mall: load against its demand cap" in rest
    assert "demand cap 12.0 kW" in rest
    assert "plaza: load against its demand cap" in rest
    assert "Load duration curve" in rest
    assert "Methodology" in rest


def test_a_narrowed_pdf_holds_only_its_site_in_every_page(october) -> None:
    report, mall, _ = october

    text = pages(render(report_data_narrow(report.data, site_ids={mall.pk}, site_slugs=set()), "pdf"))

    assert "The sites in your reach only: mall" in text[0]
    assert "$80.00" in text[0]
    assert "$4,951.00" in text[0]
    assert "$280.00" not in text[0]
    assert "mall: load against its demand cap" in "\n".join(text[1:])
    assert not any("plaza" in page for page in text)


def test_the_pdf_and_csv_are_the_same_bytes_every_time(october) -> None:
    """(An XLSX carries the time it was written in its properties; its cells are compared elsewhere.)"""
    report, mall, _ = october
    narrowed = report_data_narrow(report.data, site_ids={mall.pk}, site_slugs=set())
    again = savings_report_generate(year=2026, month=10, reason="request", now=GENERATED)

    for fmt in ("pdf", "csv"):
        assert render(narrowed, fmt) == render(narrowed, fmt)
        assert again.files.get(format=fmt).sha256 == report.files.get(format=fmt).sha256
    assert again.data_sha256 == report.data_sha256


def test_a_group_finance_user_downloads_only_its_sites_in_the_portal(make_user, october) -> None:
    report, mall, _ = october
    _, client = granted(make_user, Role.FINANCE, group=group_of(mall), email="north.finance@alpha.localhost")

    page = client.get("/reports/")
    assert page.status_code == 200
    assert "Your downloads hold only the sites you are responsible for" in page.content.decode()
    assert "Prepare a new version" not in page.content.decode()  # an organisation-wide version is not theirs
    answer = client.get(f"/reports/{report.pk}/csv/")
    rows = csv_rows(answer.content)
    assert set(rows) == {"mall", "TOTAL"}
    assert rows["TOTAL"]["savings_total"] == rows["mall"]["savings_total"] == "80.00"
    assert rows["TOTAL"]["avoided_capital_cost"] == "4951.00"
    assert answer["X-Report-Scope"] == "sites"
    assert answer["X-Content-SHA256"] == hashlib.sha256(answer.content).hexdigest()
    assert 'filename="savings-alpha-2026-10-v1-your-sites.csv"' in answer["Content-Disposition"]
    pdf = client.get(f"/reports/{report.pk}/pdf/").content
    assert "$80.00" in pages(pdf)[0]
    assert b"plaza" not in pdf
    assert not any("plaza" in p for p in pages(pdf))
    workbook = load_workbook(io.BytesIO(client.get(f"/reports/{report.pk}/xlsx/").content))
    assert [row[0] for row in workbook["Summary"].iter_rows(min_row=5, values_only=True)] == ["mall", "TOTAL"]
    assert client.post("/reports/regenerate/", {"month": "2026-10"}).status_code == 403


def test_an_organisation_wide_finance_user_gets_the_stored_files_byte_for_byte(make_user, october) -> None:
    report, _, _ = october
    _, client = make_user(Role.FINANCE)

    for fmt in FORMATS:
        answer = client.get(f"/reports/{report.pk}/{fmt}/")
        stored = SavingsReportFile.objects.get(report=report, format=fmt)
        assert answer.content == bytes(stored.content)
        assert answer["X-Content-SHA256"] == stored.sha256
        assert answer["X-Report-Scope"] == "organisation"


def test_a_group_holding_every_site_gets_the_stored_files(make_user, october) -> None:
    report, mall, plaza = october
    _, client = granted(make_user, Role.FINANCE, group=group_of(mall, plaza), email="all.finance@alpha.localhost")

    answer = client.get(f"/reports/{report.pk}/pdf/")

    assert answer.content == bytes(report.files.get(format="pdf").content)


def test_a_site_finance_user_downloads_only_its_site_through_the_api(make_user, october) -> None:
    report, _, plaza = october
    user, _ = granted(make_user, Role.FINANCE, site=plaza, email="plaza.finance@alpha.localhost")
    # Holding roles on sites only, the user limits its tokens to a group within its reach.
    _, raw = api_token_create(user=user, name="plaza finance", site_groups=[group_of(plaza, slug="plaza")])
    api = Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}")

    listed = api.get("/api/v1/reports/").json()["results"]
    assert [(r["month"], r["scope"], sorted(r["tariffs"])) for r in listed] == [("2026-10", "sites", ["plaza"])]
    answer = api.get(f"/api/v1/reports/{report.pk}/download/", {"file_format": "csv"})
    assert answer.status_code == 200
    rows = csv_rows(answer.content)
    assert set(rows) == {"plaza", "TOTAL"}
    assert rows["TOTAL"]["savings_total"] == "200.00"
    pdf = api.get(f"/api/v1/reports/{report.pk}/download/", {"file_format": "pdf"}).content
    assert "$200.00" in pages(pdf)[0]
    assert not any("mall" in p for p in pages(pdf))
    regenerate = api.post("/api/v1/reports/regenerate/", {"month": "2026-10"}, content_type="application/json")
    assert regenerate.status_code == 403


def test_an_organisation_finance_token_in_a_group_gets_the_groups_sites(make_user, october) -> None:
    report, mall, _ = october
    user, _ = make_user(Role.FINANCE)
    token, raw = api_token_create(user=user, name="north only")
    group_of(mall).api_tokens.add(token)
    api = Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}")

    rows = csv_rows(api.get(f"/api/v1/reports/{report.pk}/download/", {"file_format": "csv"}).content)

    assert set(rows) == {"mall", "TOTAL"}


def test_a_reader_reaching_no_site_with_a_report_role_is_refused(make_user, october) -> None:
    report, mall, _plaza = october
    empty = SiteGroup.objects.create(slug="empty", name="Empty")
    user, client = granted(make_user, Role.FINANCE, group=empty, email="nobody.finance@alpha.localhost")
    # It reads mall, as a viewer: its token, limited to mall's group, reaches a site but no report role.
    mall_group = group_of(mall, slug="mall")
    SiteGrant.objects.create(user=user, role=Role.SITE_VIEWER, group=mall_group)
    _viewer, viewer_client = granted(make_user, Role.SITE_VIEWER, site=mall, email="viewer@alpha.localhost")
    _, raw = api_token_create(user=user, name="mall", site_groups=[mall_group])

    assert client.get("/reports/").status_code == 403
    assert client.get(f"/reports/{report.pk}/pdf/").status_code == 403
    assert viewer_client.get(f"/reports/{report.pk}/csv/").status_code == 403
    api = Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/api/v1/reports/").status_code == 403
    assert api.get(f"/api/v1/reports/{report.pk}/download/", {"file_format": "pdf"}).status_code == 403


def test_only_sites_where_the_reader_holds_a_report_role_count(make_user, october) -> None:
    report, mall, plaza = october
    user, client = granted(make_user, Role.SITE_VIEWER, site=mall, email="mixed@alpha.localhost")
    SiteGrant.objects.create(user=user, role=Role.ENERGY_MANAGER, site=plaza)

    rows = csv_rows(client.get(f"/reports/{report.pk}/csv/").content)

    assert set(rows) == {"plaza", "TOTAL"}  # sees mall as a viewer, reads reports of plaza only


def test_the_narrowed_report_lists_months_the_same_as_the_organisations(make_user, october) -> None:
    report, mall, _ = october
    _, client = granted(make_user, Role.FINANCE, group=group_of(mall), email="g@alpha.localhost")

    page = client.get("/reports/").content.decode()

    assert "October 2026" in page
    assert f"/reports/{report.pk}/pdf/" in page
    assert report.month == date(2026, 10, 1)


POLICY_KEYS = ("policy", "static_cap", "cost_aware", "year_to_date_partial")


def before_the_policies(data: dict) -> dict:
    """``data`` as a report stored before the policies were compared held it."""
    sites = [{k: v for k, v in section.items() if k not in POLICY_KEYS} for section in data["sites"]]
    for section in sites:
        section["year_to_date"] = {
            k: v for k, v in section["year_to_date"].items() if not k.startswith(("bill_", "savings_static"))
        }
        section["year_to_date"].pop("savings_cost_aware", None)
    total = {k: v for k, v in data["total"].items() if k not in POLICY_KEYS}
    total["unmanaged"] = {k: v for k, v in total["unmanaged"].items() if k != "energy_kwh"}
    ytd = data["year_to_date"]
    ytd_total = {k: v for k, v in ytd["total"].items() if not k.startswith(("bill_", "savings_static", "savings_cost"))}
    return {**data, "sites": sites, "total": total, "year_to_date": {**ytd, "total": ytd_total}}


def test_narrowing_carries_each_policys_figures_over_the_sites_kept(october) -> None:
    report, mall, _ = october

    narrowed = report_data_narrow(report.data, site_ids={mall.pk}, site_slugs=set())

    total = narrowed["total"]
    assert total["policy"] == {"static": 1}
    assert total["static_cap"]["basis"] == {"metered": 1}  # mall ran the static cap
    assert Decimal(total["static_cap"]["bill_total"]) == Decimal("181.60")  # 8 kW x $10 + $1.60 + $100
    assert Decimal(total["static_cap"]["savings"]["total"]) == 80
    assert Decimal(total["unmanaged"]["bill_total"]) == Decimal("261.60")
    ytd = narrowed["year_to_date"]["total"]
    assert (Decimal(ytd["bill_static_cap"]), Decimal(ytd["bill_unmanaged"])) == (Decimal("181.60"), Decimal("261.60"))
    rows = csv_rows(render(narrowed, "csv"))
    assert set(rows) == {"mall", "TOTAL"}
    assert (rows["TOTAL"]["static_cap_bill"], rows["TOTAL"]["static_cap_basis"]) == ("181.60", "metered=1")


def test_a_report_stored_before_the_policies_were_compared_narrows_and_renders(october) -> None:
    report, mall, _ = october
    old = before_the_policies(report.data)

    narrowed = report_data_narrow(old, site_ids={mall.pk}, site_slugs=set())

    assert "static_cap" not in narrowed["total"]
    assert "bill_static_cap" not in narrowed["year_to_date"]["total"]
    assert Decimal(narrowed["total"]["savings"]["total"]) == 80
    rows = csv_rows(render(narrowed, "csv"))
    assert (rows["mall"]["static_cap_bill"], rows["TOTAL"]["static_cap_bill"], rows["mall"]["policy"]) == ("", "", "")
    first = pages(render(narrowed, "pdf"))[0]
    assert "Policies compared" in first
    assert "Static cap (-)\n-\n-\n-\n-" in first  # no static cap figures were stored: each is "-"
    assert load_workbook(io.BytesIO(render(narrowed, "xlsx")))["Summary"]["A5"].value == "mall"


def test_an_earlier_month_stored_before_the_policies_counts_as_the_static_cap_in_the_year_to_date(october) -> None:
    report, mall, plaza = october
    old = before_the_policies(report.data)
    SavingsReport.objects.create(
        month=date(2026, 10, 1),
        version=2,
        reason="request",
        generated_at=GENERATED,
        tariffs=report.tariffs,
        data=old,
        data_sha256="0" * 64,
    )

    for site in (mall, plaza):
        ran_cost_aware(site)

    november = savings_report_generate(year=2026, month=11, reason="schedule", now=GENERATED)

    ytd = november.data["year_to_date"]
    assert ytd["months"] == ["2026-10", "2026-11"]
    # the cost-aware policy both ran in November has no figures in October: its year covers November
    assert ytd["partial"]["bill_cost_aware"] == ["2026-11"]
    assert Decimal(ytd["total"]["bill_cost_aware"]) == 200
    assert "$200.00 (1 month)" in pages(bytes(november.files.get(format="pdf").content))[0]
    # October's actual bills (the static cap they ran: mall 8 kW x $10, plaza 8 kW x $25, each $1.60 of
    # energy and $100 fixed) + November's fixed charges
    assert Decimal(ytd["total"]["bill_static_cap"]) == Decimal("181.60") + Decimal("301.60") + 200
    assert Decimal(ytd["total"]["savings_static_cap"]) == 280
    mall_ytd = next(s for s in november.data["sites"] if s["slug"] == "mall")["year_to_date"]
    assert Decimal(mall_ytd["bill_unmanaged"]) == Decimal("261.60") + 100
