"""The monthly savings report: figures worked out by hand, the three formats, immutable versions,
the command, and one tenant never seeing another's report."""

import base64
import contextlib
import csv
import io
import re
import zlib
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django_tenants.utils import tenant_context

from balancing.models import Site
from billing.interval_rollup import intervals_roll_up
from billing.models import SavingsReport, SavingsReportFile, SessionDraw, SiteMonthDemand
from billing.savings_reports import savings_report_generate
from billing.tariff_versions import tariff_import
from chargepoint.models import ChargingSession, ChargingStation, Connector
from tests.billing.conftest import LA, simple_record
from tests.billing.readings import readings_write
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db
OCT_5_10AM = datetime(2026, 10, 5, 10, tzinfo=LA)


def mall_site(slug: str = "mall", *, record=None) -> Site:
    """Two 32 A chargers at 250 V single-phase (8 kW each); two cars, 8 kWh each, 10:00-12:30 local.

    Managed, each drew 4 kW 10:00-12:00 (registers every 15 minutes); unmanaged, each car would
    have drawn its declared 32 A = 8 kW from 10:00 until 11:00.
    """
    site = SiteFactory(slug=slug, timezone="America/Los_Angeles", voltage_v=Decimal(250), phases=1)
    tariff_import(
        site=site,
        record=record or simple_record(flat_rate="10", energy_rates=("0.10",), fixed="100"),
        valid_from=date(2026, 1, 1),
    )
    for n in (1, 2):
        station = ChargingStation.objects.create(
            charge_point_id=f"{slug.upper()}-{n}", site=site, max_current_a=Decimal(32), phases=1, wiring="L1"
        )
        connector = Connector.objects.create(station=station, connector_id=1)
        session = ChargingSession.objects.create(
            station=station,
            connector=connector,
            transaction_id=str(n),
            started_at=OCT_5_10AM,
            stopped_at=OCT_5_10AM + timedelta(hours=2, minutes=30),
            meter_start_wh=Decimal(0),
            meter_stop_wh=Decimal(8000),
            energy_kwh=Decimal(8),
            ev_max_current_a=Decimal(32),
            energy_needed_kwh=Decimal(10) if n == 1 else None,
        )
        if n == 1:  # held at our limit and left 2 kWh short of what it asked for
            SessionDraw.objects.create(session=session, was_capped=True)
        readings_write(
            station,
            [((OCT_5_10AM + timedelta(minutes=15 * i)).astimezone(UTC), {"energy_wh": 1000 * i}) for i in range(9)],
        )
    intervals_roll_up()
    return site


def rows(report: SavingsReport) -> dict[str, dict[str, str]]:
    content = bytes(SavingsReportFile.objects.get(report=report, format="csv").content).decode()
    return {row["site"]: row for row in csv.DictReader(io.StringIO(content))}


def test_report_figures_match_the_hand_calculation() -> None:
    mall_site()

    report = savings_report_generate(year=2026, month=10, reason="request")

    mall = rows(report)["mall"]
    assert mall["sessions"] == "2"
    assert mall["energy_delivered_kwh"] == "16.000"
    assert mall["energy_not_delivered_kwh"] == "2.000"
    assert mall["actual_peak_kw"] == "8.000"
    assert mall["unmanaged_peak_kw"] == "16.000"
    assert mall["actual_demand_charge"] == "80.00"  # 8 kW x $10
    assert mall["unmanaged_demand_charge"] == "160.00"  # 16 kW x $10
    assert mall["actual_energy_cost"] == mall["unmanaged_energy_cost"] == "1.60"  # same 16 kWh
    assert mall["fixed_charge"] == "100.00"
    assert mall["actual_bill"] == "181.60"
    assert mall["unmanaged_bill"] == "261.60"
    assert mall["savings_demand_charge"] == "80.00"
    assert mall["savings_energy_cost"] == "0.00"
    assert mall["savings_total"] == "80.00"
    assert mall["avoided_capital_cost"] == "4951.00"  # (12,192 - 2,290) x 2 chargers / 4
    assert mall["rate_sources"] == "declared=2"
    assert mall["tariff_version"] == "1"
    assert rows(report)["TOTAL"]["savings_total"] == "80.00"
    assert report.tariffs["mall"]["version"] == 1


def test_the_charts_round_kw_half_up_as_the_summary_does() -> None:
    site = SiteFactory(slug="half", timezone="America/Los_Angeles", voltage_v=Decimal(250), phases=1)
    tariff_import(site=site, record=simple_record(), valid_from=date(2026, 1, 1))
    station = ChargingStation.objects.create(
        charge_point_id="HALF-1", site=site, max_current_a=Decimal(32), phases=1, wiring="L1"
    )
    start = OCT_5_10AM.astimezone(UTC)
    readings_write(station, [(start, {"energy_wh": 0}), (start + timedelta(minutes=15), {"energy_wh": 2000.125})])
    intervals_roll_up()

    report = savings_report_generate(year=2026, month=10, reason="request")

    assert rows(report)["half"]["actual_peak_kw"] == "8.001"  # 2.000125 kWh in 15 minutes: 8.0005 kW
    charts = report.data["charts"]
    assert {day: actual for day, actual, _ in charts["daily_peak_kw"]}["2026-10-05"] == "8.001"
    assert charts["load_duration_kw"]["actual"][0] == "8.001"


def test_the_ratchet_remembers_earlier_months() -> None:
    site = mall_site(record=simple_record(flat_rate="10", ratchet=[0.8] * 12))
    SiteMonthDemand.objects.create(site=site, month=date(2026, 8, 1), actual_kw=Decimal(20), unmanaged_kw=Decimal(30))

    mall = rows(savings_report_generate(year=2026, month=10, reason="request"))["mall"]

    assert mall["actual_flat_billing_demand_kw"] == "16.000"  # 80 % of 20 kW beats this month's 8 kW
    assert mall["unmanaged_flat_billing_demand_kw"] == "24.000"  # 80 % of 30 kW beats 16 kW
    assert SiteMonthDemand.objects.get(site=site, month=date(2026, 10, 1)).actual_kw == Decimal(8)


def test_regenerating_stores_a_new_version_and_keeps_the_old_one() -> None:
    mall_site()
    first = savings_report_generate(year=2026, month=10, reason="schedule")
    first_files = {f.format: (f.sha256, bytes(f.content)) for f in first.files.all()}

    second = savings_report_generate(year=2026, month=10, reason="request", requested_by="finance@alpha")

    assert (first.version, second.version) == (1, 2)
    assert {f.format: (f.sha256, bytes(f.content)) for f in first.files.all()} == first_files
    assert set(first_files) == {"csv", "xlsx", "pdf"}
    for stored in second.files.all():
        import hashlib

        assert stored.sha256 == hashlib.sha256(bytes(stored.content)).hexdigest()


def test_the_database_refuses_to_change_a_stored_report() -> None:
    mall_site()
    report = savings_report_generate(year=2026, month=10, reason="request")

    with pytest.raises(DatabaseError, match="immutable"), transaction.atomic():
        SavingsReport.objects.filter(pk=report.pk).update(requested_by="someone else")
    with pytest.raises(DatabaseError, match="immutable"), transaction.atomic():
        SavingsReportFile.objects.filter(report=report).update(content=b"forged")


def test_the_xlsx_opens_with_the_same_figures_and_its_charts() -> None:
    from openpyxl import load_workbook

    mall_site()
    report = savings_report_generate(year=2026, month=10, reason="request")

    workbook = load_workbook(io.BytesIO(bytes(report.files.get(format="xlsx").content)))

    assert workbook.sheetnames == ["Summary", "Daily peaks", "Load duration", "Methodology"]
    summary = workbook["Summary"]
    header = [c.value for c in summary[4]]
    mall = dict(zip(header, [c.value for c in summary[5]], strict=True))
    assert mall["site"] == "mall"
    assert mall["savings_total"] == pytest.approx(80.0)
    assert len(workbook["Daily peaks"]._charts) == 1
    daily = {row[0]: row[1:] for row in workbook["Daily peaks"].iter_rows(min_row=2, values_only=True)}
    assert len(daily) == 31
    assert daily["2026-10-05"] == (pytest.approx(8.0), pytest.approx(16.0))
    assert daily["2026-10-06"] == (0, 0)


def pdf_text(content: bytes) -> str:
    """Text drawn on the pages: every content stream decoded (ASCII85, then Flate), no PDF library."""
    text = []
    for stream in re.findall(rb"stream\r?\n(.*?)endstream", content, re.S):
        data = stream.strip()
        if data.endswith(b"~>"):
            data = base64.a85decode(data.removeprefix(b"<~").removesuffix(b"~>"))
        with contextlib.suppress(zlib.error):
            data = zlib.decompress(data)
        text.append(data.decode("latin-1"))
    return "\n".join(text)


def test_the_pdf_is_a_complete_pdf_with_the_summary_charts_and_methodology() -> None:
    mall_site()
    content = bytes(savings_report_generate(year=2026, month=10, reason="request").files.get(format="pdf").content)

    assert content.startswith(b"%PDF-")
    assert content.rstrip().endswith(b"%%EOF")
    pages = re.search(rb"/Type /Pages\s*/Count (\d+)", content) or re.search(rb"/Count (\d+)", content)
    assert pages is not None
    assert int(pages.group(1)) >= 2
    text = pdf_text(content)
    assert "mall" in text
    assert "80.00" in text
    assert "Methodology" in text
    assert "Load duration curve" in text


def test_the_command_writes_the_latest_version_and_generates_one_if_missing(tmp_path: Path, tenant) -> None:
    mall_site()
    output = tmp_path / "october.csv"

    call_command("savings_report", "--tenant", "alpha", "--month", "2026-10", "--format", "csv", "--output", output)
    call_command(
        "savings_report", "--tenant", "alpha", "--month", "2026-10", "--format", "pdf", "--output", tmp_path / "o.pdf"
    )

    assert SavingsReport.objects.count() == 1
    assert output.read_bytes() == bytes(SavingsReportFile.objects.get(format="csv").content)
    assert (tmp_path / "o.pdf").read_bytes().startswith(b"%PDF-")

    call_command(
        "savings_report",
        "--tenant",
        "alpha",
        "--month",
        "2026-10",
        "--format",
        "csv",
        "--output",
        output,
        "--regenerate",
    )
    assert list(SavingsReport.objects.values_list("version", flat=True).order_by("version")) == [1, 2]


@pytest.mark.parametrize(
    ("month", "problem"),
    [
        ("2026-13", "is not a month; write YYYY-MM"),
        ("2026-1", "is not a month"),
        ("october", "is not a month"),
        ("1999-12", "is not a month"),
        ("2999-01", "has not begun yet"),
    ],
)
def test_an_unknown_month_is_refused_naming_the_option_and_writes_nothing(
    tmp_path: Path, month: str, problem: str
) -> None:
    mall_site()
    output = tmp_path / "report.csv"

    with pytest.raises(CommandError, match=rf"^--month: .*{problem}"):
        call_command("savings_report", "--tenant", "alpha", "--month", month, "--format", "csv", "--output", output)

    assert not output.exists()
    assert not SavingsReport.objects.exists()


def test_a_tenant_never_sees_another_tenants_report_or_sites(tenant, other_tenant, tmp_path: Path) -> None:
    mall_site("alpha-mall")
    alpha_report = savings_report_generate(year=2026, month=10, reason="request")

    with tenant_context(other_tenant):
        assert not SavingsReport.objects.exists()
        mall_site("beta-mall")
        call_command(
            "savings_report",
            "--tenant",
            "beta",
            "--month",
            "2026-10",
            "--format",
            "csv",
            "--output",
            tmp_path / "b.csv",
        )
        beta_reports = list(SavingsReport.objects.all())
        assert [r.month for r in beta_reports] == [date(2026, 10, 1)]
        beta_slugs = [s["slug"] for s in beta_reports[0].data["sites"]]
    connection.set_tenant(tenant)

    assert beta_slugs == ["beta-mall"]
    assert [s["slug"] for s in alpha_report.data["sites"]] == ["alpha-mall"]
    assert "alpha-mall" not in (tmp_path / "b.csv").read_text()
    assert SavingsReport.objects.count() == 1


FORMULA = '=HYPERLINK("http://evil","x")'


def formula_named_site() -> Site:
    """A site and its tariff named like a spreadsheet formula (the tariff with markup too)."""
    site = mall_site(record={**simple_record(flat_rate="10", fixed="100"), "name": f"{FORMULA} <b> & co"})
    Site.objects.filter(pk=site.pk).update(name=f"@SUM(A1) {FORMULA}")
    return site


def test_formula_like_names_are_quoted_text_in_the_csv() -> None:
    formula_named_site()

    mall = rows(savings_report_generate(year=2026, month=10, reason="request"))["mall"]

    assert mall["site_name"] == f"'@SUM(A1) {FORMULA}"
    assert mall["tariff"] == f"'{FORMULA} <b> & co"
    assert mall["savings_total"] == "80.00"  # numbers are not quoted


def test_formula_like_names_are_strings_in_the_xlsx_and_numbers_stay_numbers() -> None:
    from openpyxl import load_workbook

    formula_named_site()
    report = savings_report_generate(year=2026, month=10, reason="request")

    summary = load_workbook(io.BytesIO(bytes(report.files.get(format="xlsx").content)))["Summary"]
    header = [c.value for c in summary[4]]
    mall = dict(zip(header, summary[5], strict=True))
    assert mall["site_name"].value == f"@SUM(A1) {FORMULA}"
    assert mall["tariff"].value == f"{FORMULA} <b> & co"
    assert (mall["site_name"].data_type, mall["tariff"].data_type) == ("s", "s")
    assert mall["tariff"].quotePrefix
    assert not any(cell.data_type == "f" for row in summary.iter_rows() for cell in row)
    assert mall["savings_total"].data_type == "n"
    assert mall["savings_total"].value == pytest.approx(80.0)


def test_formula_like_and_markup_names_are_shown_as_typed_in_the_pdf() -> None:
    formula_named_site()

    content = bytes(savings_report_generate(year=2026, month=10, reason="request").files.get(format="pdf").content)

    text = pdf_text(content)
    assert "=HYPERLINK" in text
    assert "'=HYPERLINK" not in text
    assert "(: tariff =HYPERLINK" in text
    assert "> & co v1" in text  # the markup is drawn as typed, not read as bold
    assert "&amp;" not in text


def test_a_stored_tariff_beyond_the_bounds_is_named_and_the_report_is_still_stored() -> None:
    from billing.models import Tariff

    site = mall_site()
    tariff = Tariff.objects.get(site=site)
    Tariff.objects.filter(pk=tariff.pk).update(record={**tariff.record, "flatdemandstructure": [[{"rate": 1e308}]]})

    report = savings_report_generate(year=2026, month=10, reason="request")

    mall = rows(report)["mall"]
    assert (mall["actual_demand_charge"], mall["actual_bill"]) == ("0.00", "0.00")
    assert mall["energy_delivered_kwh"] == "16.000"
    assert "flatdemandstructure[0][0].rate" in report.data["sites"][0]["tariff"]["problem"]
    assert set(report.files.values_list("format", flat=True)) == {"csv", "xlsx", "pdf"}
    assert "not billed: flatdemandstructure" in pdf_text(bytes(report.files.get(format="pdf").content))


def ran_cost_aware(site: Site) -> None:
    """The site ran the cost-aware policy this month (its metered load is the cost-aware column)."""
    Site.objects.filter(pk=site.pk).update(balancing_policy="cost_aware")


def test_the_static_cap_simulated_from_the_sessions_peaks_at_the_cap() -> None:
    """mall (see ``mall_site``) under a 10 kW cap, run cost-aware: the static cap is simulated.

    Two cars of 8 kW and 8 kWh from 10:00 share 10 kW: 5 kW each for 1.5 hours (7.5 kWh), then
    the last 0.5 kWh each in the next 15 minutes. Peak 10 kW, the cap: 10 kW x $10 = $100 demand
    charge; 16 kWh x $0.10 = $1.60; $100 fixed; bill $201.60, $60.00 less than unmanaged ($261.60).
    """
    site = mall_site()
    Site.objects.filter(pk=site.pk).update(demand_cap_kw=Decimal(10))
    ran_cost_aware(site)

    report = savings_report_generate(year=2026, month=10, reason="request")

    mall = rows(report)["mall"]
    assert mall["policy"] == "cost_aware"
    assert mall["static_cap_basis"] == "simulated from the month's sessions"
    assert mall["static_cap_peak_kw"] == "10.000"
    assert mall["static_cap_flat_billing_demand_kw"] == "10.000"
    assert mall["static_cap_demand_charge"] == "100.00"  # the cap x $10/kW
    assert mall["static_cap_energy_cost"] == "1.60"
    assert mall["static_cap_energy_kwh"] == "16.000"
    assert mall["static_cap_energy_short_kwh"] == "0.000"
    assert mall["static_cap_bill"] == "201.60"
    assert mall["static_cap_savings_total"] == "60.00"
    # the policy it ran is the metered load, as the actual columns
    assert mall["cost_aware_basis"] == "metered"
    assert (mall["cost_aware_peak_kw"], mall["cost_aware_bill"]) == ("8.000", "181.60")
    assert mall["cost_aware_savings_total"] == mall["savings_total"] == "80.00"
    assert (mall["unmanaged_bill"], mall["unmanaged_energy_kwh"]) == ("261.60", "16.000")
    total = rows(report)["TOTAL"]
    assert (total["static_cap_bill"], total["cost_aware_bill"]) == ("201.60", "181.60")
    assert total["static_cap_basis"] == "simulated from the month's sessions=1"
    ytd = report.data["year_to_date"]["total"]
    assert [Decimal(ytd[f"bill_{policy}"]) for policy in ("unmanaged", "static_cap", "cost_aware")] == [
        Decimal("261.60"),
        Decimal("201.60"),
        Decimal("181.60"),
    ]
    assert (Decimal(ytd["savings_static_cap"]), Decimal(ytd["savings_cost_aware"])) == (60, 80)


def test_the_xlsx_and_pdf_carry_the_three_policies_and_say_which_is_simulated() -> None:
    from openpyxl import load_workbook
    from pypdf import PdfReader

    site = mall_site()
    Site.objects.filter(pk=site.pk).update(demand_cap_kw=Decimal(10))
    ran_cost_aware(site)
    report = savings_report_generate(year=2026, month=10, reason="request")

    summary = load_workbook(io.BytesIO(bytes(report.files.get(format="xlsx").content)))["Summary"]
    assert "simulated from the month's sessions" in summary["A3"].value
    header = [c.value for c in summary[4]]
    mall = dict(zip(header, [c.value for c in summary[5]], strict=True))
    assert mall["unmanaged_bill"] == pytest.approx(261.6)
    assert mall["static_cap_bill"] == pytest.approx(201.6)
    assert mall["static_cap_peak_kw"] == pytest.approx(10.0)
    assert mall["static_cap_basis"] == "simulated from the month's sessions"
    assert mall["cost_aware_bill"] == pytest.approx(181.6)
    assert mall["cost_aware_basis"] == "metered"

    content = bytes(report.files.get(format="pdf").content)
    first = PdfReader(io.BytesIO(content)).pages[0].extract_text()
    assert "Policies compared" in first
    assert "Static cap (simulated from the month's sessions)" in first
    assert "Cost-aware (metered)" in first
    for figure in ("$261.60", "$201.60", "$181.60", "$60.00", "$80.00"):
        assert figure in first
    text = " ".join(" ".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages).split())
    assert "Policies compared: unmanaged, static cap and cost-aware" in text
    assert "static cap simulated from the month's sessions 10.0 10.0 100.00 1.60 16.0 201.60 60.00" in text
    assert "cost-aware (ran) metered 8.0 8.0 80.00 1.60 16.0 181.60 80.00" in text
    assert "static cap: simulated from the month's sessions, under its 10 kW demand cap" in text
    assert "with the site's tariff" not in text  # only the static cap was simulated
    assert "Policies compared: unmanaged (above), static cap" in text  # the methodology


def test_a_site_without_a_demand_cap_has_the_unmanaged_load_as_its_static_cap() -> None:
    site = mall_site()
    Site.objects.filter(pk=site.pk).update(demand_cap_kw=None)
    ran_cost_aware(site)

    report = savings_report_generate(year=2026, month=10, reason="request")

    mall = rows(report)["mall"]
    assert mall["static_cap_basis"] == "unmanaged (no demand cap)"
    assert (mall["static_cap_peak_kw"], mall["static_cap_bill"]) == ("16.000", "261.60")
    assert mall["static_cap_savings_total"] == "0.00"
    assert report.data["sites"][0]["static_cap"]["note"] == "no demand cap: the static cap column is the unmanaged load"


def test_a_site_that_ran_the_static_cap_has_its_metered_load_as_the_static_cap() -> None:
    mall_site()

    report = savings_report_generate(year=2026, month=10, reason="request")

    mall = rows(report)["mall"]
    assert mall["policy"] == "static"
    assert mall["static_cap_basis"] == "metered"
    assert (mall["static_cap_peak_kw"], mall["static_cap_bill"]) == (mall["actual_peak_kw"], mall["actual_bill"])
    assert mall["static_cap_savings_total"] == mall["savings_total"] == "80.00"
