"""Portal pages for sites: overview, site page, chart data, settings with confirmation and roles."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from balancing.models import BalancingRun, Site, SiteLimitSchedule
from tenants.accounts.models import AuditEvent, Role
from tests.factories import ChargingStationFactory, ConnectorFactory, SiteFactory

pytestmark = pytest.mark.django_db


def record_run(
    site: Site, *, minutes_ago: float = 1, measured_kw: float = 12.0, limit_kw: float = 20.0
) -> BalancingRun:
    return BalancingRun.objects.create(
        site=site,
        reason="test",
        started_at=timezone.now() - timedelta(minutes=minutes_ago),
        inputs_digest="x" * 64,
        problem={"evses": []},
        result={"allocations_a": {}, "node_load_a": {"site": [20, 20, 20]}},
        measured_kw=measured_kw,
        allocated_kw=measured_kw + 1,
        limit_kw=limit_kw,
        phase_measured_a=[17, 17, 17],
        phase_limit_a=[63, 63, 63],
        limits={"bound_kw": "demand_cap"},
    )


def test_anonymous_visitors_are_sent_to_sign_in(alpha_client) -> None:
    response = alpha_client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_the_overview_lists_sites_with_load_peak_chargers_and_alerts(make_user) -> None:
    mall = SiteFactory(name="Mall garage", slug="mall")
    SiteFactory(name="Campus lot", slug="campus")
    ConnectorFactory(station=ChargingStationFactory(site=mall, is_online=True), status="Charging")
    ChargingStationFactory(site=mall, is_online=False)
    record_run(mall, minutes_ago=5, measured_kw=18.5)
    record_run(mall, minutes_ago=1, measured_kw=12.0)
    _, client = make_user(Role.SITE_VIEWER)

    page = client.get("/").content.decode()

    assert "Mall garage" in page
    assert "Campus lot" in page
    assert "12.0" in page  # load now
    assert "18.5" in page  # today's peak
    assert "1/2 online" in page
    assert "1 charger offline" in page


def test_the_overview_searches_and_sorts(make_user) -> None:
    SiteFactory(name="Mall garage", slug="mall")
    SiteFactory(name="Campus lot", slug="campus")
    _, client = make_user(Role.SITE_VIEWER)

    found = client.get("/", {"q": "camp"}, HTTP_HX_REQUEST="true").content.decode()
    assert "Campus lot" in found
    assert "Mall garage" not in found
    by_name = client.get("/", {"sort": "name"}).content.decode()
    assert by_name.index("Campus lot") < by_name.index("Mall garage")


def test_the_site_page_and_its_chart_carry_the_runs(make_user) -> None:
    site = SiteFactory(name="Mall garage", slug="mall")
    record_run(site, measured_kw=14.0)
    _, client = make_user(Role.SITE_VIEWER)

    assert "Mall garage" in client.get("/sites/mall/").content.decode()
    spec = client.get("/sites/mall/chart.json?range=day").json()
    [point] = spec["data"]["values"]  # one row per minute, the series as its fields
    assert (point["drawn"], point["allowed"], point["limit"]) == (14.0, 15.0, 20.0)
    assert "unmanaged" not in point  # the run had no figure for it
    assert spec["transform"][0]["fold"] == ["drawn", "allowed", "limit", "unmanaged"]
    phases = client.get("/sites/mall/chart.json?range=day&phases=1").json()
    [point] = phases["data"]["values"]
    assert {k: v for k, v in point.items() if k != "time"} == {
        "L1 drawn": 17,
        "L2 drawn": 17,
        "L3 drawn": 17,
        "L1 limit": 63,
        "L2 limit": 63,
        "L3 limit": 63,
    }


def test_the_site_page_shows_the_engines_warnings_of_the_last_run(make_user) -> None:
    site = SiteFactory(slug="mall")
    run = record_run(site)
    run.result["warnings"] = ["node site L1 (63 A) is overloaded by fixed currents alone: nothing else can charge"]
    run.save()
    _, client = make_user(Role.SITE_VIEWER)

    live = client.get("/sites/mall/", headers={"HX-Request": "true"}).content.decode()

    assert "node site L1 (63 A) is overloaded by fixed currents alone" in live


def test_an_energy_manager_changes_a_limit_after_confirming_and_it_is_audited(make_user) -> None:
    site = SiteFactory(slug="mall", limit_a=Decimal("63"), demand_cap_kw=Decimal("20"))
    _, client = make_user(Role.ENERGY_MANAGER)
    form = {
        "limit_a": "63",
        "demand_cap_kw": "15",
        "failsafe_a": "6",
        "failsafe_auto": "on",
        "building_allowance_kw": "0",
        "overdraw_escalation": "none",
        "overdraw_escalation_after_s": "300",
    }

    review = client.post("/sites/mall/settings/", form)
    assert "Please confirm" in review.content.decode()
    site.refresh_from_db()
    assert site.demand_cap_kw == Decimal("20")  # nothing changed before confirming

    done = client.post("/sites/mall/settings/", {**form, "confirm": "on"})
    assert done.status_code == 302
    site.refresh_from_db()
    assert site.demand_cap_kw == Decimal("15")
    event = AuditEvent.objects.get(object_type="site", field="demand_cap_kw")
    assert (event.actor, event.old_value, event.new_value) == ("energy_manager.user@alpha.localhost", "20.00", "15")


@pytest.mark.parametrize("role", [Role.SITE_VIEWER, Role.FINANCE])
def test_viewers_and_finance_cannot_change_limits(make_user, role) -> None:
    SiteFactory(slug="mall", demand_cap_kw=Decimal("20"))
    _, client = make_user(role)

    assert client.get("/sites/mall/settings/").status_code == 403
    post = client.post(
        "/sites/mall/settings/", {"limit_a": "63", "demand_cap_kw": "99", "failsafe_a": "6", "confirm": "on"}
    )
    assert post.status_code == 403
    assert Site.objects.get(slug="mall").demand_cap_kw == Decimal("20")


def test_bad_limits_are_refused_with_the_field_named(make_user) -> None:
    SiteFactory(slug="mall", limit_a=Decimal("63"))
    _, client = make_user(Role.ADMIN)

    page = client.post(
        "/sites/mall/settings/", {"limit_a": "-1", "demand_cap_kw": "", "failsafe_a": "6"}
    ).content.decode()

    assert "greater than or equal to 0" in page
    assert Site.objects.get(slug="mall").limit_a == Decimal("63")


def test_schedules_are_added_and_removed_by_energy_managers(make_user) -> None:
    site = SiteFactory(slug="mall")
    _, client = make_user(Role.ENERGY_MANAGER)

    client.post(
        "/sites/mall/schedules/",
        {"name": "Peak", "weekdays": "43210", "start_time": "16:00", "end_time": "21:00", "limit_kw": "10"},
    )
    schedule = SiteLimitSchedule.objects.get(site=site)
    assert schedule.weekdays == "01234"
    bad = client.post(
        "/sites/mall/schedules/", {"name": "X", "weekdays": "9", "start_time": "1:00", "end_time": "2:00"}
    )
    assert bad.status_code == 302
    assert SiteLimitSchedule.objects.filter(site=site).count() == 1

    client.post(f"/sites/mall/schedules/{schedule.pk}/delete/")
    assert not SiteLimitSchedule.objects.filter(site=site).exists()
    assert set(AuditEvent.objects.filter(object_type="schedule").values_list("action", flat=True)) == {
        "create",
        "delete",
    }
