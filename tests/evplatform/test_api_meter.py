"""Site meter readings over the REST API, and token scopes (read, meter-write) on every endpoint."""

import json
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

from balancing.models import Site, SiteMeterReading
from tenants.accounts.models import ApiToken, Role
from tests.conftest import ALPHA
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/sites/garage/meter-readings/"


@pytest.fixture
def site() -> Site:
    return SiteFactory(slug="garage", limit_a=Decimal("63"), demand_cap_kw=Decimal("20"))


@pytest.fixture
def token_client(make_user):
    def make(role: str = Role.ENERGY_MANAGER, scope: str = ApiToken.Scope.FULL) -> Client:
        from tenants.accounts.tokens import api_token_create

        user, _ = make_user(role, email=f"{role}.{scope}@alpha.localhost")
        _, raw = api_token_create(user=user, name="meter", scope=scope)
        return Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}")

    return make


def body(**overrides: Any) -> dict[str, Any]:
    return {
        "measured_at": (timezone.now() - timedelta(seconds=2)).isoformat(),
        "current_a": [12.5, 11.0, 13.25],
        "power_kw": 8.4,
        "includes_chargers": True,
        **overrides,
    }


def post(client: Client, payload: dict[str, Any] | str, url: str = URL) -> Any:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return client.post(url, data, content_type="application/json")


def test_an_energy_manager_token_stores_a_reading(site: Site, token_client) -> None:
    response = post(token_client(), body())
    assert response.status_code == 201, response.content
    got = response.json()
    assert got["site"] == "garage"
    assert got["source"] == "api"
    assert got["current_a"] == [12.5, 11.0, 13.25]
    assert Decimal(got["power_kw"]) == Decimal("8.40")
    assert SiteMeterReading.objects.get(site=site).current_a == [12.5, 11.0, 13.25]


def test_the_same_reading_posted_twice_is_stored_once_and_answers_200(site: Site, token_client) -> None:
    client = token_client()
    payload = body()
    first = post(client, payload)
    again = post(client, payload)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert SiteMeterReading.objects.filter(site=site).count() == 1


def test_power_only_and_a_building_meter_are_accepted(site: Site, token_client) -> None:
    response = post(token_client(), body(current_a=[], includes_chargers=False))
    assert response.status_code == 201
    row = SiteMeterReading.objects.get(site=site)
    assert (row.current_a, row.includes_chargers) == ([], False)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (lambda: body(current_a=[10, -2, 10]), "current_a"),
        (lambda: body(power_kw=-1), "power_kw"),
        (lambda: body(current_a=[10, 10, 900]), "current_a"),
        (lambda: body(power_kw=500), "power_kw"),
        (lambda: body(current_a=[10, 10]), "current_a"),
        (lambda: body(current_a=[], power_kw=None), "current_a"),
        (lambda: body(current_a=[10, "lots", 10]), "current_a"),
        (lambda: body(power_kw="12kW"), "power_kw"),
        (lambda: body(measured_at=(timezone.now() - timedelta(minutes=5)).isoformat()), "measured_at"),
        (lambda: body(measured_at=(timezone.now() + timedelta(minutes=5)).isoformat()), "measured_at"),
        (lambda: body(measured_at="2026-05-01T12:00:00"), "measured_at"),
        (lambda: body(measured_at="yesterday"), "measured_at"),
        (lambda: {"current_a": [1, 1, 1]}, "measured_at"),
    ],
)
def test_a_bad_reading_gets_400_naming_the_field_and_nothing_is_stored(
    site: Site, token_client, payload: Callable[[], dict[str, Any]], field: str
) -> None:
    response = post(token_client(), payload())  # built now: times are relative to the test's own clock
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["status"], error["code"]) == (400, "invalid")
    assert list(error["fields"]) == [field]
    assert error["fields"][field][0]
    assert not SiteMeterReading.objects.exists()


@pytest.mark.parametrize(("literal", "field"), [("NaN", "power_kw"), ("Infinity", "current_a")])
def test_nan_and_infinity_in_the_json_are_refused_naming_the_field(
    site: Site, token_client, literal: str, field: str
) -> None:
    at = (timezone.now() - timedelta(seconds=1)).isoformat()
    currents = f"[1, {literal}, 1]" if field == "current_a" else "[1, 2, 3]"
    power = literal if field == "power_kw" else "5"
    raw = f'{{"measured_at": "{at}", "current_a": {currents}, "power_kw": {power}}}'
    response = post(token_client(), raw)
    assert response.status_code == 400
    assert "finite" in response.json()["error"]["fields"][field][0]
    assert not SiteMeterReading.objects.exists()


def test_an_unknown_site_is_404(site: Site, token_client) -> None:
    response = post(token_client(), body(), url="/api/v1/sites/nowhere/meter-readings/")
    assert response.status_code == 404
    assert response.json()["error"]["status"] == 404


def test_readings_are_listed_newest_first_and_filtered_by_source(site: Site, token_client) -> None:
    client = token_client()
    now = timezone.now()
    for seconds in (20, 10):
        assert post(client, body(measured_at=(now - timedelta(seconds=seconds)).isoformat())).status_code == 201
    SiteMeterReading.objects.create(site=site, measured_at=now, source="mqtt", current_a=[1, 1, 1])
    listed = client.get(URL).json()
    assert listed["count"] == 3
    assert [r["source"] for r in listed["results"]] == ["mqtt", "api", "api"]
    assert client.get(URL + "?source=api").json()["count"] == 2


def test_the_list_covers_the_last_day_unless_asked_and_at_most_31_days(site: Site, token_client) -> None:
    client = token_client()
    now = timezone.now()
    for days in (0.5, 3, 40):
        SiteMeterReading.objects.create(site=site, measured_at=now - timedelta(days=days), source="mqtt", current_a=[])

    assert client.get(URL).json()["count"] == 1  # the last day: the 12-hour-old reading only
    since = (now - timedelta(days=10)).isoformat()
    assert client.get(URL, {"since": since}).json()["count"] == 2
    old = {"since": (now - timedelta(days=41)).isoformat(), "until": (now - timedelta(days=39)).isoformat()}
    assert client.get(URL, old).json()["count"] == 1
    too_long = client.get(URL, {"since": (now - timedelta(days=41)).isoformat(), "until": now.isoformat()})
    assert too_long.status_code == 400
    assert "until" in too_long.json()["error"]["fields"]


def test_a_site_viewer_reads_readings_but_may_not_post(site: Site, token_client) -> None:
    viewer = token_client(Role.SITE_VIEWER)
    assert viewer.get(URL).status_code == 200
    denied = post(viewer, body())
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "permission_denied"


def test_a_signed_in_energy_manager_posts_from_the_portal_session(site: Site, make_user) -> None:
    _, client = make_user(Role.ENERGY_MANAGER)
    assert post(client, body()).status_code == 201


def test_a_meter_write_token_posts_readings_and_nothing_else(site: Site, token_client) -> None:
    meter = token_client(scope=ApiToken.Scope.METER_WRITE)
    assert post(meter, body()).status_code == 201
    for denied in (
        meter.get("/api/v1/sites/"),
        meter.get(URL),
        meter.get("/api/v1/sites/garage/status/"),
        meter.patch("/api/v1/sites/garage/", {"demand_cap_kw": "99"}, content_type="application/json"),
        meter.post("/api/v1/schedules/", {}, content_type="application/json"),
    ):
        assert denied.status_code == 403
        assert "meter readings" in denied.json()["error"]["message"]
    assert Site.objects.get(slug="garage").demand_cap_kw == Decimal("20")


def test_a_read_token_reads_but_cannot_post(site: Site, token_client) -> None:
    reader = token_client(scope=ApiToken.Scope.READ)
    assert reader.get("/api/v1/sites/").status_code == 200
    assert reader.get(URL).status_code == 200
    denied = post(reader, body())
    assert denied.status_code == 403
    assert "read-only" in denied.json()["error"]["message"]
    assert (
        reader.patch("/api/v1/sites/garage/", {"demand_cap_kw": "9"}, content_type="application/json").status_code
        == 403
    )
    assert not SiteMeterReading.objects.exists()


def test_a_meter_write_token_of_a_viewer_cannot_be_made(make_user) -> None:
    from tenants.accounts.tokens import api_token_create

    user, _ = make_user(Role.SITE_VIEWER)
    with pytest.raises(ValidationError) as caught:
        api_token_create(user=user, name="meter", scope=ApiToken.Scope.METER_WRITE)
    assert "scope" in caught.value.message_dict
    with pytest.raises(ValidationError, match="scope"):
        api_token_create(user=user, name="x", scope="root")


def test_the_portal_creates_a_token_with_the_chosen_scope(make_user) -> None:
    user, client = make_user(Role.ENERGY_MANAGER)
    page = client.post("/tokens/", {"name": "Meter gateway", "expires_in_days": "30", "scope": "meter-write"})
    assert page.status_code == 200
    assert ApiToken.objects.get(user=user, name="Meter gateway").scope == ApiToken.Scope.METER_WRITE
    assert "Post site meter readings only" in client.get("/tokens/").content.decode()


def test_the_portal_refuses_a_meter_write_token_for_a_viewer(make_user) -> None:
    user, client = make_user(Role.SITE_VIEWER)
    page = client.post("/tokens/", {"name": "Meter", "expires_in_days": "30", "scope": "meter-write"})
    assert "energy manager or admin" in page.content.decode()
    assert not ApiToken.objects.filter(user=user).exists()


def test_the_endpoint_is_in_the_openapi_schema(token_client) -> None:
    from drf_spectacular.validation import validate_schema

    schema = (
        token_client(scope=ApiToken.Scope.READ)
        .get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
        .json()
    )
    validate_schema(schema)
    path = schema["paths"]["/api/v1/sites/{slug}/meter-readings/"]
    assert set(path) >= {"get", "post"}
    assert set(path["post"]["responses"]) >= {"200", "201", "400"}
