"""Bad input to the REST API: a 400 in the one error shape naming what was wrong, never a 500."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from balancing.models import Circuit, SiteLimitSchedule, SiteMeterReading
from tenants.accounts.models import Role
from tenants.accounts.tokens import api_token_create
from tests.conftest import ALPHA
from tests.factories import ChargingStationFactory, MeterReadingFactory, SiteFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(make_user) -> Client:
    user, _ = make_user(Role.ADMIN)
    _, raw = api_token_create(user=user, name="test")
    return Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}")


def error_of(response, status: int = 400) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["status"] == status
    return error


def post_json(api: Client, url: str, raw: str):
    return api.generic("POST", url, raw.encode(), content_type="application/json")


def schedule_body(**changes: object) -> dict:
    body = {"site": "mall", "name": "Peak", "weekdays": "01234", "start_time": "16:00", "end_time": "21:00"}
    return {**body, "limit_kw": "12", **changes}


def test_a_limit_past_what_postgresql_takes_is_a_400_naming_the_maximum(api) -> None:
    site = SiteFactory(slug="mall")
    SiteMeterReading.objects.create(
        site=site, measured_at=timezone.now() - timedelta(minutes=1), source="api", current_a=[1, 1, 1]
    )

    error = error_of(api.get("/api/v1/sites/mall/meter-readings/", {"limit": str(2**63)}))

    assert "1000" in error["fields"]["limit"][0]


@pytest.mark.parametrize(
    "params",
    [{"limit": "abc"}, {"limit": "0"}, {"limit": "1001"}, {"offset": "-1"}, {"offset": "x"}, {"offset": str(2**63)}],
)
def test_paging_values_that_cannot_be_used_are_refused_not_ignored(api, params) -> None:
    error = error_of(api.get("/api/v1/sites/", params))

    assert list(error["fields"]) == list(params)


def test_a_paging_value_given_twice_is_refused(api) -> None:
    error = error_of(api.get("/api/v1/sites/?limit=5&limit=6"))

    assert list(error["fields"]) == ["limit"]


@pytest.mark.parametrize(
    "url", ["/api/v1/circuits/", "/api/v1/schedules/", "/api/v1/chargers/", "/api/v1/sessions/", "/api/v1/runs/"]
)
def test_a_nul_character_in_a_filter_is_a_400(api, url) -> None:
    error = error_of(api.get(url, {"site": "mall\x00"}))

    assert list(error["fields"]) == ["site"]


def test_a_nul_character_in_a_json_body_is_a_400_and_nothing_is_stored(api) -> None:
    SiteFactory(slug="mall")

    for changes in ({"site": "mall\x00"}, {"name": "Peak\x00"}):
        body = schedule_body(**changes)
        error = error_of(api.post("/api/v1/schedules/", body, content_type="application/json"))
        assert list(error["fields"]) == list(changes)
    assert not SiteLimitSchedule.objects.exists()


def test_json_nested_100000_deep_is_a_400(api) -> None:
    error = error_of(post_json(api, "/api/v1/schedules/", "[" * 100_000 + "]" * 100_000))

    assert error["code"] == "parse_error"


def test_json_nested_past_the_limit_is_a_400_even_where_python_would_parse_it(api) -> None:
    error = error_of(post_json(api, "/api/v1/schedules/", '{"site": ' + "[" * 40 + "]" * 40 + "}"))

    assert "nested deeper" in error["message"]


@pytest.mark.parametrize("number", ["1" * 100_000, "0." + "1" * 100_000, "1" * 50_000 + "e5"])
def test_a_number_of_100000_digits_is_a_400(api, number) -> None:
    SiteFactory(slug="mall")

    error = error_of(post_json(api, "/api/v1/sites/mall/meter-readings/", '{"power_kw": ' + number + "}"))

    assert error["code"] == "parse_error"


def test_form_bodies_are_refused_as_the_api_takes_json_only(api) -> None:
    SiteFactory(slug="mall")

    error = error_of(api.post("/api/v1/schedules/", {"site": "mall"}), status=415)

    assert error["code"] == "unsupported_media_type"


def test_a_lone_since_further_back_than_31_days_is_a_400_naming_the_cap(api) -> None:
    station = ChargingStationFactory(charge_point_id="CP-OLD")
    MeterReadingFactory(station=station, sampled_at=timezone.now() - timedelta(days=700))
    since = (timezone.now() - timedelta(days=730)).isoformat()

    for url in ("/api/v1/readings/", f"/api/v1/sites/{station.site.slug}/meter-readings/"):
        error = error_of(api.get(url, {"since": since}))
        assert "31 days" in error["fields"]["since"][0]


def test_a_lone_since_within_31_days_lists_up_to_now(api) -> None:
    station = ChargingStationFactory(charge_point_id="CP-RECENT")
    for days in (20, 1):
        MeterReadingFactory(station=station, sampled_at=timezone.now() - timedelta(days=days))

    response = api.get("/api/v1/readings/", {"since": (timezone.now() - timedelta(days=30)).isoformat()})

    assert response.status_code == 200
    assert len(response.json()["results"]) == 2


@pytest.mark.parametrize(
    "params",
    [
        {"until": "1117-02-15T06:21:24.707-22:23"},  # a zone PostgreSQL does not take
        {"since": "0001-01-01T00:00:00+01:00"},  # before year 1 in UTC
        {"since": "9999-12-31T23:00:00Z"},  # a window past year 9999
        {"until": "0001-01-01T01:00:00Z"},  # a default window before year 1
    ],
)
@pytest.mark.parametrize("url", ["/api/v1/readings/", "/api/v1/runs/", "/api/v1/sessions/"])
def test_times_at_the_ends_of_the_calendar_are_400s(api, url, params) -> None:
    response = api.get(url, params)

    assert response.status_code in (200, 400), response.content[:300]
    if response.status_code == 400:
        assert set(error_of(response)["fields"]) <= {"since", "until"}


def test_a_zone_offset_postgresql_does_not_take_is_read_in_utc(api) -> None:
    response = api.get("/api/v1/runs/", {"until": "2026-02-15T06:21:24-22:23"})

    assert response.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"idle_default_zero": 0},  # a boolean as a number
        {"idle_default_zero": "yes"},
        {"limit_a": 63},  # a decimal as a number, not its text
        {"limit_a": " 63"},
        {"limit_a": ""},  # not nullable
        {"max_raise_a": "  "},  # none is "" or null
    ],
)
def test_site_limits_take_values_only_in_the_declared_form(api, body) -> None:
    SiteFactory(slug="mall", limit_a=Decimal("63"))

    error = error_of(api.patch("/api/v1/sites/mall/", body, content_type="application/json"))

    assert list(error["fields"]) == list(body)


def test_an_empty_string_clears_a_nullable_limit(api) -> None:
    SiteFactory(slug="mall", max_raise_a=Decimal("4"))

    response = api.patch("/api/v1/sites/mall/", {"max_raise_a": ""}, content_type="application/json")

    assert response.status_code == 200, response.content
    assert response.json()["max_raise_a"] is None


@pytest.mark.parametrize(
    "changes",
    [{"name": 5}, {"weekdays": 1234}, {"weekdays": "0123456789"}, {"start_time": "7.30"}, {"end_time": 730}],
)
def test_schedule_fields_take_only_the_declared_form(api, changes) -> None:
    SiteFactory(slug="mall")

    error = error_of(api.post("/api/v1/schedules/", schedule_body(**changes), content_type="application/json"))

    assert list(error["fields"]) == list(changes)
    assert not SiteLimitSchedule.objects.exists()


@pytest.mark.parametrize("month", ["2026-13", "0000-05", "2026-05\n", "26-05"])
def test_a_report_month_not_in_the_declared_form_is_a_400(api, month) -> None:
    assert list(error_of(api.get("/api/v1/reports/", {"month": month}))["fields"]) == ["month"]
    regenerate = api.post("/api/v1/reports/regenerate/", {"month": month}, content_type="application/json")
    assert list(error_of(regenerate)["fields"]) == ["month"]


def test_a_report_download_in_an_unknown_format_is_a_400(api) -> None:
    assert list(error_of(api.get("/api/v1/reports/1/download/", {"file_format": "docx"}))["fields"]) == ["file_format"]


@pytest.mark.parametrize("method", ["get", "post", "delete"])
def test_an_unknown_route_under_api_is_a_404_in_the_error_shape(api, method) -> None:
    error = error_of(getattr(api, method)("/api/v1/nothing-here/"), status=404)

    assert error["code"] == "not_found"


def test_a_route_without_its_slash_is_still_redirected(api) -> None:
    response = api.get("/api/v1/sites")

    assert response.status_code == 301
    assert response["Location"].endswith("/api/v1/sites/")


def test_a_method_a_route_does_not_take_is_a_405_in_the_error_shape(api) -> None:
    error = error_of(api.put("/api/v1/schedules/", {}, content_type="application/json"), status=405)

    assert error["code"] == "method_not_allowed"


def test_a_circuit_without_a_parent_says_so_with_null(api) -> None:
    site = SiteFactory(slug="mall")
    Circuit.objects.create(site=site, name="Main", limit_a=Decimal("63"))

    (circuit,) = api.get("/api/v1/circuits/", {"site": "mall"}).json()["results"]

    assert circuit["parent_name"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"measured_at": "2026-05-01T00:00:00\x00Z", "power_kw": 1},
        {"measured_at": "now", "current_a": ["1\x00"]},
        {"measured_at": "now", "power_kw": "\x00"},
    ],
)
def test_a_nul_character_in_a_meter_reading_is_a_400(api, body) -> None:
    SiteFactory(slug="mall")
    if body["measured_at"] == "now":
        body = {**body, "measured_at": timezone.now().isoformat()}

    response = api.post("/api/v1/sites/mall/meter-readings/", body, content_type="application/json")

    assert error_of(response)["fields"]
    assert not SiteMeterReading.objects.exists()
