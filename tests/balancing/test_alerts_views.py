"""Faults visible where an operator looks: site page, charger page, overview, status API, audit, admin.

Alerts are raised and cleared through ``balancing.alerts`` (as the balancing runs do); the
pages and the API are read through the real portal and REST stack of tenant alpha.
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone
from django_tenants.utils import tenant_context

from balancing.alerts import alert_clear, alert_raise, compliance_note
from balancing.models import ChargerModelCompliance, SiteAlert, SiteMeterReading
from balancing.selectors import site_overview
from tenants.accounts.models import AuditEvent, Role, User
from tenants.accounts.tokens import api_token_create
from tests.conftest import ALPHA, BETA
from tests.factories import ChargingStationFactory, ConnectorFactory, SiteFactory, UserFactory

pytestmark = pytest.mark.django_db

DETAIL = "draws 31.8 A where it was offered 16 A (2 readings)"


@pytest.fixture
def site():
    return SiteFactory(slug="mall", name="Mall garage")


@pytest.fixture
def connector(site):
    station = ChargingStationFactory(
        charge_point_id="ALERT-CP-1",
        site=site,
        vendor="Acme",
        model="Wallbox X",
        firmware_version="1.4.2",
        ocpp_version="1.6",
        is_online=True,
    )
    return ConnectorFactory(station=station, connector_id=1)


def raise_overdraw(site, connector, *, detail: str = DETAIL) -> SiteAlert:
    return alert_raise(site=site, kind=SiteAlert.Kind.OVERDRAW, detail=detail, now=timezone.now(), connector=connector)


def api_client(role: str, email: str) -> Client:
    user = User.objects.create_user(email=email, password="correct-horse-battery-9", role=role)
    _, raw = api_token_create(user=user, name="ops")
    return Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}")


def test_a_site_viewer_sees_an_open_alert_naming_the_charger_its_model_and_what_it_did(
    make_user, site, connector
) -> None:
    raise_overdraw(site, connector)
    _, viewer = make_user(Role.SITE_VIEWER)

    page = viewer.get("/sites/mall/").content.decode()

    assert "1 open" in page
    assert 'class="alert-open" data-kind="overdraw"' in page
    assert "Draws more than offered" in page
    for text in ("ALERT-CP-1", "/1", "Acme", "Wallbox X", "firmware 1.4.2", DETAIL):
        assert text in page, text


def test_a_cleared_alert_moves_from_the_open_list_to_the_cleared_list(make_user, site, connector) -> None:
    raise_overdraw(site, connector)
    assert alert_clear(site=site, kind=SiteAlert.Kind.OVERDRAW, now=timezone.now(), connector=connector)
    _, viewer = make_user(Role.SITE_VIEWER)

    live = viewer.get("/sites/mall/", headers={"HX-Request": "true"}).content.decode()

    assert "alert-open" not in live
    assert "No open alerts" in live
    assert "Cleared in the last 24 hours (1)" in live
    assert 'class="alert-cleared" data-kind="overdraw"' in live
    assert DETAIL in live


def test_an_alert_cleared_more_than_a_day_ago_is_no_longer_listed(make_user, site, connector) -> None:
    alert = raise_overdraw(site, connector)
    SiteAlert.objects.filter(pk=alert.pk).update(cleared_at=timezone.now() - timedelta(days=2))
    _, viewer = make_user(Role.SITE_VIEWER)

    live = viewer.get("/sites/mall/", headers={"HX-Request": "true"}).content.decode()

    assert "Cleared in the last 24 hours" not in live
    assert DETAIL not in live


def test_the_overview_counts_open_alerts_with_the_charger_and_sorts_by_them(make_user, site, connector) -> None:
    quiet = SiteFactory(slug="quiet", name="AAA quiet")
    raise_overdraw(site, connector)
    alert_raise(
        site=site, kind=SiteAlert.Kind.REFUSES, detail="rejects every profile", now=timezone.now(), connector=connector
    )
    _, viewer = make_user(Role.SITE_VIEWER)

    rows = {row.site.slug: row for row in site_overview(now=timezone.now())}
    page = viewer.get("/?sort=alerts").content.decode()

    assert "ALERT-CP-1/1: Draws more than offered" in rows["mall"].alerts
    assert "ALERT-CP-1/1: Refuses charging profiles" in rows["mall"].alerts
    assert len(rows["mall"].open_alerts) == 2
    assert rows[quiet.slug].alerts == []
    assert "ALERT-CP-1/1: Refuses charging profiles" in page
    assert page.index("Mall garage") < page.index("AAA quiet")  # the site with alerts first


def test_the_status_api_lists_alert_objects_the_failsafe_and_the_latest_site_meter_reading(site, connector) -> None:
    raise_overdraw(site, connector)
    now = timezone.now()
    SiteMeterReading.objects.create(
        site=site, measured_at=now - timedelta(seconds=40), source="api", current_a=[20, 21, 19], power_kw=Decimal("14")
    )
    latest = now - timedelta(seconds=10)
    SiteMeterReading.objects.create(
        site=site, measured_at=latest, source="mqtt", current_a=[30, 31, 29], power_kw=Decimal("21")
    )
    client = api_client(Role.SITE_VIEWER, "viewer.api@alpha.localhost")

    status = client.get("/api/v1/sites/mall/status/").json()

    (alert,) = status["alerts"]
    assert {k: alert[k] for k in ("kind", "charger", "connector", "vendor", "model", "firmware", "detail")} == {
        "kind": "overdraw",
        "charger": "ALERT-CP-1",
        "connector": 1,
        "vendor": "Acme",
        "model": "Wallbox X",
        "firmware": "1.4.2",
        "detail": DETAIL,
    }
    assert alert["opened_at"] == alert["last_seen_at"]
    assert alert["opened_at"] is not None
    assert status["alert_count"] == 1
    assert status["alert_summary"] == ["ALERT-CP-1/1: Draws more than offered"]
    assert status["failsafe"]["limit_a"] == "6.0"
    assert status["failsafe"]["auto"] is True
    assert "sized" in status["failsafe"]["chosen"]
    assert status["site_meter"]["source"] == "mqtt"
    assert status["site_meter"]["power_kw"] == "21.00"
    assert status["site_meter"]["current_a"] == [30, 31, 29]


def test_the_status_api_of_a_quiet_site_without_a_meter(site) -> None:
    site.failsafe_auto = False
    site.save()
    client = api_client(Role.SITE_VIEWER, "viewer.quiet@alpha.localhost")

    status = client.get("/api/v1/sites/mall/status/").json()

    assert status["alerts"] == []
    assert status["alert_count"] == 0
    assert status["site_meter"] is None
    assert status["failsafe"] == {"limit_a": "6.0", "auto": False, "chosen": "set by hand"}


def test_the_openapi_schema_describes_the_status_and_its_alert_objects() -> None:
    from drf_spectacular.validation import validate_schema

    client = api_client(Role.SITE_VIEWER, "viewer.schema@alpha.localhost")
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    validate_schema(schema)

    response = schema["paths"]["/api/v1/sites/{slug}/status/"]["get"]["responses"]["200"]
    ref = response["content"]["application/json"]["schema"]["$ref"]
    status = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert status["properties"]["alerts"]["type"] == "array"
    alert_ref = status["properties"]["alerts"]["items"]["$ref"]
    alert = schema["components"]["schemas"][alert_ref.rsplit("/", 1)[1]]
    fields = {"kind", "charger", "connector", "vendor", "model", "firmware", "detail", "opened_at", "last_seen_at"}
    assert fields <= set(alert["properties"])
    assert {"failsafe", "site_meter", "alert_count", "alert_summary"} <= set(status["properties"])


def test_a_user_of_another_tenant_gets_404_for_the_site_page_and_status(site, connector, other_tenant, tenant) -> None:
    raise_overdraw(site, connector)
    with tenant_context(other_tenant):
        user = User.objects.create_user(email="boss@beta.example", password="beta-password-123", role=Role.ADMIN)
        _, raw = api_token_create(user=user, name="beta")
    browser = Client(HTTP_HOST=BETA.domain)
    with tenant_context(other_tenant):
        browser.force_login(user)
    api = Client(HTTP_HOST=BETA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}")

    assert browser.get("/sites/mall/").status_code == 404
    assert browser.get("/chargers/ALERT-CP-1/").status_code == 404
    assert api.get("/api/v1/sites/mall/status/").status_code == 404


def test_the_charger_page_shows_its_alerts_and_its_models_compliance_record(make_user, site, connector) -> None:
    raise_overdraw(site, connector)
    compliance_note(station=connector.station, accepted=9, rejected=1, ignored=3, reaction_s=4.0)
    compliance_note(station=connector.station, reaction_s=8.0)
    ChargerModelCompliance.objects.filter(vendor="Acme").update(use_station_max=True)
    _, viewer = make_user(Role.SITE_VIEWER)

    page = viewer.get("/chargers/ALERT-CP-1/").content.decode()

    assert DETAIL in page
    assert "Draws more than offered" in page
    assert "<dt>Profiles accepted</dt><dd>9</dd>" in page
    assert "<dt>Profiles rejected</dt><dd>1</dd>" in page
    assert "<dt>Accepted but ignored</dt><dd>3</dd>" in page
    assert "6.0 s (over 2)" in page
    assert "station-wide maximum profile" in page


def test_a_charger_of_an_unknown_model_says_nothing_was_learnt(make_user, site, connector) -> None:
    _, viewer = make_user(Role.SITE_VIEWER)
    page = viewer.get("/chargers/ALERT-CP-1/").content.decode()
    assert "Nothing learnt about this model yet." in page
    assert "No alerts" in page


def test_alert_rows_read_well_in_the_audit_log_and_can_be_filtered(make_user, site, connector) -> None:
    raise_overdraw(site, connector)
    alert_clear(site=site, kind=SiteAlert.Kind.OVERDRAW, now=timezone.now(), connector=connector, why="draw back under")
    AuditEvent.objects.create(actor="x@alpha.localhost", action="update", object_type="site", object_id="1")
    _, admin = make_user(Role.ADMIN)

    page = admin.get("/audit/?type=alert").content.decode()

    assert "alert raised" in page
    assert "alert cleared" in page
    assert "Mall garage / ALERT-CP-1/1" in page
    assert f"{DETAIL} [Acme Wallbox X 1.4.2]" in page
    assert "draw back under" in page
    assert "x@alpha.localhost" not in page  # filtered to alerts
    assert '<option value="alert" selected>' in page


# --- Organisation admin --------------------------------------------------------------------


@pytest.fixture
def admin_client(alpha_client):
    alpha_client.force_login(UserFactory(email="alerts.admin@alpha.localhost", is_staff=True, is_superuser=True))
    return alpha_client


def test_the_admin_lists_alerts_read_only(admin_client, site, connector) -> None:
    alert = raise_overdraw(site, connector)

    listing = admin_client.get("/admin/balancing/sitealert/")
    change = admin_client.post(f"/admin/balancing/sitealert/{alert.pk}/change/", {"detail": "edited"})

    assert listing.status_code == 200
    assert DETAIL in listing.content.decode()
    assert admin_client.get(f"/admin/balancing/sitealert/{alert.pk}/change/").status_code == 200  # view only
    assert admin_client.get("/admin/balancing/sitealert/add/").status_code == 403
    assert change.status_code == 403
    alert.refresh_from_db()
    assert alert.detail == DETAIL


def test_an_admin_switches_a_model_to_station_max_profiles_and_it_is_audited(admin_client, site, connector) -> None:
    record = compliance_note(station=connector.station, accepted=5, ignored=5)

    listing = admin_client.get("/admin/balancing/chargermodelcompliance/")
    saved = admin_client.post(
        f"/admin/balancing/chargermodelcompliance/{record.pk}/change/",
        {"use_station_max": "on", "profiles_accepted": "999"},
    )

    assert listing.status_code == 200
    assert "Wallbox X" in listing.content.decode()
    assert saved.status_code == 302
    record.refresh_from_db()
    assert record.use_station_max is True
    assert record.profiles_accepted == 5  # the learnt counters are not editable
    event = AuditEvent.objects.get(object_type="compliance", field="use_station_max")
    assert (event.actor, event.old_value, event.new_value) == ("alerts.admin@alpha.localhost", "False", "True")
    assert admin_client.get("/admin/balancing/chargermodelcompliance/add/").status_code == 403


def test_the_charger_api_gives_its_open_alerts_and_its_models_record(site, connector) -> None:
    raise_overdraw(site, connector)
    cleared = alert_raise(
        site=site, kind=SiteAlert.Kind.REFUSES, detail="rejected a profile", now=timezone.now(), connector=connector
    )
    alert_clear(site=site, kind=SiteAlert.Kind.REFUSES, now=timezone.now(), connector=connector)
    compliance_note(station=connector.station, accepted=4, ignored=2, reaction_s=3.0)
    ChargingStationFactory(charge_point_id="ALERT-CP-2", site=site, vendor="Other")
    client = api_client(Role.SITE_VIEWER, "viewer.chargers@alpha.localhost")

    detail = client.get("/api/v1/chargers/ALERT-CP-1/").json()
    listing = client.get("/api/v1/chargers/", {"site": "mall"}).json()["results"]

    (alert,) = detail["alerts"]
    assert (alert["kind"], alert["connector"], alert["detail"]) == ("overdraw", 1, DETAIL)
    assert cleared.detail not in str(detail["alerts"])
    assert detail["compliance"] == {
        "profiles_accepted": 4,
        "profiles_rejected": 0,
        "accepted_ignored": 2,
        "reactions": 1,
        "mean_reaction_s": 3.0,
        "use_station_max": False,
    }
    other = next(c for c in listing if c["charge_point_id"] == "ALERT-CP-2")
    assert (other["alerts"], other["compliance"]) == ([], None)


def test_a_site_wide_alert_names_no_charger(make_user, site) -> None:
    detail = "site meter 22.3 kW over the 20 kW cap"
    alert_raise(site=site, kind=SiteAlert.Kind.SITE_OVER_LIMIT, detail=detail, now=timezone.now())
    _, viewer = make_user(Role.SITE_VIEWER)
    client = api_client(Role.SITE_VIEWER, "viewer.sitewide@alpha.localhost")

    (alert,) = client.get("/api/v1/sites/mall/status/").json()["alerts"]
    page = viewer.get("/sites/mall/").content.decode()

    assert (alert["kind"], alert["charger"], alert["connector"], alert["vendor"]) == ("site_over_limit", None, None, "")
    assert "whole site" in page
    assert detail in page


def test_the_charger_list_reads_the_models_records_once_whatever_the_number_of_chargers(site) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = api_client(Role.SITE_VIEWER, "viewer.queries@alpha.localhost")

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/api/v1/chargers/").status_code == 200
        return sum("balancing_chargermodelcompliance" in q["sql"] for q in captured.captured_queries)

    ChargingStationFactory(charge_point_id="Q-CP-1", site=site)
    assert queries() == 1
    for n in range(2, 6):
        ChargingStationFactory(charge_point_id=f"Q-CP-{n}", site=site)
    assert queries() == 1
