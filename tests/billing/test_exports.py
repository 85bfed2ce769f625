"""Session exports: every session's kWh, peak and energy cost, the charge-back by site group, the
reader's sites only, formula-safe cells; the portal download and the API endpoint."""

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import Client
from openpyxl import load_workbook

from balancing.models import Site
from billing.exports import period_of_dates, period_of_month, sessions_export
from billing.interval_rollup import intervals_roll_up
from billing.tariff_versions import tariff_import
from chargepoint.models import ChargingSession, ChargingStation, Connector
from tenants.accounts.models import Role
from tenants.accounts.tokens import api_token_create
from tests.billing.conftest import LA, simple_record
from tests.billing.readings import readings_write
from tests.billing.test_report_scope import granted, group_of, two_sites
from tests.conftest import ALPHA
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db
FORMULA = '=HYPERLINK("http://evil","x")'


def session_at(site: Site, cp: str, start: datetime, hours: int, *, energy_kwh: int, readings: bool) -> None:
    station = ChargingStation.objects.create(
        charge_point_id=cp, site=site, max_current_a=Decimal(32), phases=1, wiring="L1"
    )
    connector = Connector.objects.create(station=station, connector_id=1)
    ChargingSession.objects.create(
        station=station,
        connector=connector,
        transaction_id="1",
        started_at=start,
        stopped_at=start + timedelta(hours=hours),
        meter_start_wh=Decimal(0),
        meter_stop_wh=Decimal(energy_kwh * 1000),
        energy_kwh=Decimal(energy_kwh),
    )
    if readings:
        steps = hours * 4
        per_step = energy_kwh * 1000 / steps
        readings_write(
            station,
            [
                ((start + timedelta(minutes=15 * i)).astimezone(UTC), {"energy_wh": per_step * i})
                for i in range(steps + 1)
            ],
        )


@pytest.fixture
def fleet() -> dict[str, Site]:
    """mall (groups Campus, North) and plaza (Campus): two 8 kWh sessions each, 10:00-12:30 on
    October 5 at $0.10/kWh, drawn at 4 kW (1 kWh every 15 minutes): $0.80 a session.
    tou (no group): one 8 kWh session 15:00-17:00 at 4 kW: 4 kWh before 16:00 at $0.10 and 4 kWh
    after at $0.30 (the peak period is 16-21): $1.60.
    bare (no group, no tariff): one 5 kWh session, no readings: no cost, no peak."""
    mall, plaza = two_sites()
    Site.objects.filter(pk=plaza.pk).update(name=f"{FORMULA} plaza")
    group_of(mall, slug="north")
    group_of(mall, plaza, slug="campus")
    tou: Site = SiteFactory(slug="tou", timezone="America/Los_Angeles", voltage_v=Decimal(250), phases=1)
    tariff_import(site=tou, record=simple_record(energy_rates=("0.10", "0.30")), valid_from=date(2026, 1, 1))
    session_at(tou, "TOU-1", datetime(2026, 10, 6, 15, tzinfo=LA), 2, energy_kwh=8, readings=True)
    bare: Site = SiteFactory(slug="bare", timezone="America/Los_Angeles")
    session_at(bare, "BARE-1", datetime(2026, 10, 7, 9, tzinfo=LA), 1, energy_kwh=5, readings=False)
    intervals_roll_up()
    return {"mall": mall, "plaza": plaza, "tou": tou, "bare": bare}


def test_each_session_has_its_kwh_peak_and_energy_cost_at_the_sites_tariff(fleet) -> None:
    export = sessions_export(site_ids=None, period=period_of_month(2026, 10))

    rows = [(r.site, r.charger, r.energy_kwh, r.peak_kw, r.energy_cost, r.cost_note) for r in export.rows]
    assert rows == [
        ("bare", "BARE-1", Decimal(5), None, None, "no tariff in force"),
        ("mall", "MALL-1", Decimal(8), Decimal(4), Decimal("0.8"), ""),
        ("mall", "MALL-2", Decimal(8), Decimal(4), Decimal("0.8"), ""),
        ("plaza", "PLAZA-1", Decimal(8), Decimal(4), Decimal("0.8"), ""),
        ("plaza", "PLAZA-2", Decimal(8), Decimal(4), Decimal("0.8"), ""),
        ("tou", "TOU-1", Decimal(8), Decimal(4), Decimal("1.6"), ""),  # 4 x 0.10 + 4 x 0.30
    ]
    assert export.rows[1].groups == ["campus", "north"]
    assert export.rows[1].started_at.isoformat() == "2026-10-05T10:00:00-07:00"  # site local time


def test_the_charge_back_counts_a_site_in_each_of_its_groups_and_the_rest_as_ungrouped(fleet) -> None:
    export = sessions_export(site_ids=None, period=period_of_month(2026, 10))

    lines = {
        line.group: (line.sites, line.sessions, line.energy_kwh, line.energy_cost, line.sessions_without_cost)
        for line in [*export.chargeback, export.total]
    }
    assert lines == {
        "campus": (["mall", "plaza"], 4, Decimal(32), Decimal("3.2"), 0),
        "north": (["mall"], 2, Decimal(16), Decimal("1.6"), 0),
        "ungrouped": (["bare", "tou"], 2, Decimal(13), Decimal("1.6"), 1),
        "TOTAL": (["bare", "mall", "plaza", "tou"], 6, Decimal(45), Decimal("4.8"), 1),
    }
    assert [line.group for line in export.chargeback] == ["campus", "north", "ungrouped"]


def test_only_the_sites_given_are_exported_and_charged_back(fleet) -> None:
    export = sessions_export(site_ids={fleet["mall"].pk}, period=period_of_month(2026, 10))

    assert {r.site for r in export.rows} == {"mall"}
    assert [(c.group, c.sites, c.sessions) for c in export.chargeback] == [
        ("campus", ["mall"], 2),  # plaza is out of reach: not counted, not named
        ("north", ["mall"], 2),
    ]
    assert export.total.sessions == 2


def test_a_date_range_takes_the_sessions_that_started_in_it(fleet) -> None:
    export = sessions_export(site_ids=None, period=period_of_dates(date(2026, 10, 6), date(2026, 10, 7)))

    assert [r.site for r in export.rows] == ["bare", "tou"]
    assert not sessions_export(site_ids=None, period=period_of_month(2026, 9)).rows


def csv_of(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode())))


def test_a_group_finance_user_exports_its_sites_in_the_portal_with_formula_safe_cells(make_user, fleet) -> None:
    _, org_client = make_user(Role.FINANCE)
    _, client = granted(make_user, Role.FINANCE, site=fleet["plaza"], email="plaza.fin@alpha.localhost")

    answer = client.get("/reports/sessions/", {"month": "2026-10", "file_format": "csv"})
    assert answer["Content-Type"] == "text/csv; charset=utf-8"
    assert 'filename="sessions-2026-10.csv"' in answer["Content-Disposition"]
    rows = csv_of(answer.content)
    assert [(r["site"], r["charger"], r["energy_kwh"], r["peak_kw"], r["energy_cost"]) for r in rows] == [
        ("plaza", "PLAZA-1", "8.000", "4.000", "0.80"),
        ("plaza", "PLAZA-2", "8.000", "4.000", "0.80"),
    ]
    assert rows[0]["site_name"] == f"'{FORMULA} plaza"
    assert rows[0]["started_at"] == "2026-10-05T10:00:00-07:00"
    chargeback = csv_of(client.get("/reports/sessions/", {"month": "2026-10", "part": "chargeback"}).content)
    assert [(r["group"], r["sessions"], r["energy_kwh"], r["energy_cost"]) for r in chargeback] == [
        ("campus", "2", "16.000", "1.60"),
        ("TOTAL", "2", "16.000", "1.60"),
    ]
    bare = [
        r for r in csv_of(org_client.get("/reports/sessions/", {"month": "2026-10"}).content) if r["site"] == "bare"
    ]
    assert (bare[0]["energy_cost"], bare[0]["cost_note"], bare[0]["peak_kw"]) == ("", "no tariff in force", "")


def test_the_xlsx_holds_the_sessions_the_charge_back_and_the_notes(make_user, fleet) -> None:
    _, client = make_user(Role.FINANCE)

    answer = client.get("/reports/sessions/", {"month": "2026-10", "file_format": "xlsx"})

    workbook = load_workbook(io.BytesIO(answer.content))
    assert workbook.sheetnames == ["Sessions", "Charge-back", "Notes"]
    sessions = list(workbook["Sessions"].iter_rows(values_only=True))
    header = sessions[0]
    plaza = dict(zip(header, sessions[4], strict=True))
    assert plaza["site_name"] == f"{FORMULA} plaza"
    assert not any(cell.data_type == "f" for row in workbook["Sessions"].iter_rows() for cell in row)
    assert plaza["energy_cost"] == pytest.approx(0.8)
    totals = {row[0]: row for row in workbook["Charge-back"].iter_rows(min_row=2, values_only=True)}
    assert totals["TOTAL"][3:] == (6, pytest.approx(45.0), pytest.approx(4.8), 1)
    assert totals["ungrouped"][2] == "bare; tou"


def test_the_api_exports_the_tokens_sites_and_names_a_bad_parameter(make_user, fleet) -> None:
    labs = group_of(fleet["tou"], slug="labs")
    user, _ = granted(make_user, Role.FINANCE, group=labs, email="labs@alpha.localhost")
    _, raw = api_token_create(user=user, name="labs", site_groups=[labs])
    api = Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}")

    answer = api.get("/api/v1/exports/sessions/", {"month": "2026-10", "file_format": "csv"})
    assert answer.status_code == 200
    assert [(r["site"], r["groups"], r["energy_cost"]) for r in csv_of(answer.content)] == [("tou", "labs", "1.60")]
    xlsx = api.get("/api/v1/exports/sessions/", {"since": "2026-10-01", "until": "2026-10-31", "file_format": "xlsx"})
    assert xlsx.content.startswith(b"PK")
    for params, field in [
        ({}, "month"),
        ({"month": "2026-10", "since": "2026-10-01"}, "month"),
        ({"month": "10/2026"}, "month"),
        ({"since": "2026-10-02"}, "until"),
        ({"since": "2026-10-02", "until": "2026-10-01"}, "until"),
        ({"since": "2025-01-01", "until": "2026-10-01"}, "until"),
        ({"since": "1999-12-31", "until": "2000-01-01"}, "since"),
        ({"month": "2026-10", "file_format": "pdf"}, "file_format"),
    ]:
        refused = api.get("/api/v1/exports/sessions/", params)
        assert refused.status_code == 400, params
        assert field in refused.json()["error"]["fields"], params


def test_a_reader_without_a_report_role_cannot_export(make_user, fleet) -> None:
    _, viewer = make_user(Role.SITE_VIEWER)
    malls = group_of(fleet["mall"], slug="malls")
    user, _ = granted(make_user, Role.SITE_VIEWER, group=malls, email="v@alpha.localhost")
    _, raw = api_token_create(user=user, name="viewer", site_groups=[malls])

    assert viewer.get("/reports/sessions/", {"month": "2026-10"}).status_code == 403
    api = Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/api/v1/exports/sessions/", {"month": "2026-10"}).status_code == 403
