"""Bad query values are a 400 naming the parameter, never a 500: NUL characters anywhere (portal,
organisation admin, API), and ``since``/``until`` times outside what a range can be shifted by."""

from decimal import Decimal

import pytest
from django.test import Client

from balancing.models import SiteLimitSchedule
from chargepoint.models import ChargingStation
from tenants.accounts.models import Role
from tenants.accounts.tokens import api_token_create
from tests.conftest import ALPHA
from tests.factories import SiteFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def site():
    site = SiteFactory(slug="mall")
    ChargingStation.objects.create(charge_point_id="CP-1", site=site, max_current_a=Decimal(32))
    return site


@pytest.fixture
def api(make_user) -> Client:
    user, _ = make_user(Role.ADMIN, email="bad.params.api@alpha.localhost")
    _, raw = api_token_create(user=user, name="test")
    return Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}", raise_request_exception=False)


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("/?q=%00", "q"),
        ("/?q=mall%00", "q"),
        ("/audit/?type=%00", "type"),
        ("/chargers/CP%001/", "path"),
        ("/chargers/CP%001/chart.json", "path"),
        ("/sites/mall/?range=hour&x%00=1", "x\\x00"),
    ],
)
def test_a_nul_in_a_portal_parameter_is_a_400_naming_it(make_user, site, url: str, named: str) -> None:
    _, client = make_user(Role.ADMIN)
    client.raise_request_exception = False

    response = client.get(url)

    assert response.status_code == 400
    assert f"{named} must not contain a NUL character" in response.content.decode()


def test_a_nul_in_a_portal_form_field_is_a_400_and_nothing_is_stored(make_user, site) -> None:
    _, client = make_user(Role.ENERGY_MANAGER)
    client.raise_request_exception = False
    form = {"name": "Peak", "weekdays": "0\x00", "start_time": "16:00", "end_time": "21:00", "limit_kw": "10"}

    response = client.post("/sites/mall/schedules/", form)

    assert response.status_code == 400
    assert "weekdays must not contain a NUL character" in response.content.decode()
    assert not SiteLimitSchedule.objects.exists()


def test_a_nul_in_an_admin_filter_is_a_400(alpha_client, site) -> None:
    alpha_client.force_login(UserFactory(email="nul.admin@alpha.localhost", is_staff=True, is_superuser=True))
    alpha_client.raise_request_exception = False

    assert alpha_client.get("/admin/balancing/site/?slug=%00").status_code == 400


def test_a_nul_in_an_api_filter_or_body_field_is_a_400_in_the_api_error_shape(api, site) -> None:
    listed = api.get("/api/v1/circuits/?site=%00")
    created = api.post(
        "/api/v1/schedules/",
        {"site": "mall\x00", "name": "x", "weekdays": "0", "start_time": "10:00", "end_time": "11:00"},
        content_type="application/json",
    )

    assert listed.status_code == 400
    assert listed.json()["error"]["fields"] == {"site": ["must not contain a NUL character"]}
    assert created.status_code == 400
    assert list(created.json()["error"]["fields"]) == ["site"]
    assert not SiteLimitSchedule.objects.exists()


def test_an_api_form_body_that_cannot_be_read_is_refused_in_the_api_error_shape(api, site) -> None:
    body = b'--xx\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n'

    response = api.generic("POST", "/api/v1/schedules/", body, content_type="multipart/form-data; boundary=")

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("/api/v1/readings/?since=9999-12-31T23:00:00Z", "since"),
        ("/api/v1/readings/?until=0001-01-01T00:00:00Z", "until"),
        ("/api/v1/readings/?since=0001-01-01T00:00:00%2B01:00", "since"),
        ("/api/v1/sites/mall/meter-readings/?since=9999-12-31T23:00:00Z", "since"),
        ("/api/v1/sites/mall/meter-readings/?until=0001-01-01T00:00:00Z", "until"),
        ("/api/v1/sessions/?since=0001-01-01T00:00:00Z", "since"),
        ("/api/v1/runs/?since=1999-12-31T23:59:59Z", "since"),
        ("/api/v1/sessions/?since=9999-99-99", "since"),
        ("/api/v1/sessions/?since=10000-01-01T00:00:00Z", "since"),
        ("/api/v1/sessions/?until=2026-02-30T00:00:00Z", "until"),
    ],
)
def test_a_time_out_of_range_is_a_400_naming_it(api, site, url: str, named: str) -> None:
    response = api.get(url)

    assert response.status_code == 400
    assert named in response.json()["error"]["fields"]


def test_times_within_the_years_are_still_served(api, site) -> None:
    response = api.get("/api/v1/readings/?since=2000-01-01T00:00:00Z&until=2000-01-31T00:00:00Z")
    assert response.status_code == 200
