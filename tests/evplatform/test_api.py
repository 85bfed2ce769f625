"""The REST API: token auth, roles, time filters, one error shape, paging, schema."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from balancing.models import BalancingRun, Site, SiteLimitSchedule
from tenants.accounts.models import Role
from tenants.accounts.tokens import api_token_create
from tests.conftest import ALPHA
from tests.factories import ChargingStationFactory, MeterReadingFactory, SiteFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def token_client(make_user):
    def make(role: str) -> Client:
        user, _ = make_user(role)
        _, raw = api_token_create(user=user, name="test")
        return Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}")

    return make


def test_a_request_without_credentials_gets_401_in_the_common_error_shape(alpha_client) -> None:
    response = alpha_client.get("/api/v1/sites/")
    assert response.status_code == 401
    assert response.json()["error"]["status"] == 401
    assert response["WWW-Authenticate"] == "Bearer"


def test_a_bad_or_revoked_token_is_refused(token_client, make_user) -> None:
    assert Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION="Bearer nope").get("/api/v1/sites/").status_code == 401
    user, _ = make_user(Role.SITE_VIEWER, email="revoked@alpha.localhost")
    token, raw = api_token_create(user=user, name="old")
    token.revoked_at = timezone.now()
    token.save()
    assert Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}").get("/api/v1/sites/").status_code == 401


def test_tokens_are_stored_hashed(make_user) -> None:
    user, _ = make_user(Role.SITE_VIEWER)
    token, raw = api_token_create(user=user, name="bms")
    assert raw not in token.key_hash
    assert token.prefix == raw[:8]


def test_sites_list_is_paged(token_client) -> None:
    for n in range(3):
        SiteFactory(slug=f"s{n}", name=f"S{n}")
    body = token_client(Role.SITE_VIEWER).get("/api/v1/sites/?limit=2").json()
    assert body["count"] == Site.objects.count() >= 3
    assert len(body["results"]) == 2
    assert body["next"]


def test_an_energy_manager_changes_limits_a_viewer_cannot(token_client) -> None:
    SiteFactory(slug="mall", limit_a=Decimal("63"), demand_cap_kw=Decimal("20"))

    denied = token_client(Role.SITE_VIEWER).patch(
        "/api/v1/sites/mall/", {"demand_cap_kw": "10"}, content_type="application/json"
    )
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "permission_denied"

    ok = token_client(Role.ENERGY_MANAGER).patch(
        "/api/v1/sites/mall/", {"demand_cap_kw": "10"}, content_type="application/json"
    )
    assert ok.status_code == 200
    assert Site.objects.get(slug="mall").demand_cap_kw == Decimal("10")


def test_stepped_raises_are_set_and_cleared_through_the_api(token_client) -> None:
    SiteFactory(slug="mall")
    client = token_client(Role.ENERGY_MANAGER)
    ok = client.patch("/api/v1/sites/mall/", {"max_raise_a": "4"}, content_type="application/json")
    assert ok.status_code == 200
    assert ok.json()["max_raise_a"] == "4.0"
    assert Site.objects.get(slug="mall").max_raise_a == Decimal("4")
    bad = client.patch("/api/v1/sites/mall/", {"max_raise_a": "0.5"}, content_type="application/json")
    assert bad.status_code == 400
    assert "max_raise_a" in bad.json()["error"]["fields"]
    assert Site.objects.get(slug="mall").max_raise_a == Decimal("4")
    cleared = client.patch("/api/v1/sites/mall/", {"max_raise_a": None}, content_type="application/json")
    assert cleared.status_code == 200
    assert Site.objects.get(slug="mall").max_raise_a is None


def test_invalid_values_name_the_field(token_client) -> None:
    SiteFactory(slug="mall")
    response = token_client(Role.ADMIN).patch("/api/v1/sites/mall/", {"limit_a": "-3"}, content_type="application/json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert "limit_a" in error["fields"]


def test_schedules_through_the_api(token_client) -> None:
    SiteFactory(slug="mall")
    client = token_client(Role.ENERGY_MANAGER)
    created = client.post(
        "/api/v1/schedules/",
        {
            "site": "mall",
            "name": "Peak",
            "weekdays": "01234",
            "start_time": "16:00",
            "end_time": "21:00",
            "limit_kw": "12",
        },
        content_type="application/json",
    )
    assert created.status_code == 201, created.content
    bad = client.post(
        "/api/v1/schedules/",
        {"site": "mall", "name": "x", "weekdays": "01234", "start_time": "1:00", "end_time": "2:00"},
        content_type="application/json",
    )
    assert bad.json()["error"]["fields"]["limit_kw"]
    assert client.delete(f"/api/v1/schedules/{created.json()['id']}/").status_code == 204
    assert not SiteLimitSchedule.objects.exists()


def test_readings_are_time_filtered_and_bad_times_are_named(token_client) -> None:
    station = ChargingStationFactory(charge_point_id="CP-API")
    now = timezone.now().replace(microsecond=0)
    for minutes in (90, 30, 5):
        MeterReadingFactory(station=station, sampled_at=now - timedelta(minutes=minutes), power_w=float(minutes))
    client = token_client(Role.SITE_VIEWER)
    since = (now - timedelta(hours=1)).isoformat()

    body = client.get("/api/v1/readings/", {"charger": "CP-API", "since": since}).json()
    powers = [v["value"] for r in body["results"] for v in r["values"] if v["measurand"] == "Power.Active.Import"]
    assert powers == [30.0, 5.0]
    bad = client.get("/api/v1/readings/", {"since": "yesterday"})
    assert bad.status_code == 400
    assert "since" in bad.json()["error"]["fields"]
    too_long = client.get("/api/v1/readings/", {"since": "2026-01-01T00:00:00Z", "until": "2026-03-01T00:00:00Z"})
    assert "until" in too_long.json()["error"]["fields"]


def test_runs_and_live_status(token_client) -> None:
    site = SiteFactory(slug="mall")
    BalancingRun.objects.create(
        site=site,
        reason="sweep",
        started_at=timezone.now(),
        inputs_digest="0" * 64,
        problem={},
        measured_kw=9.5,
        allocated_kw=10,
        limit_kw=20,
    )
    client = token_client(Role.SITE_VIEWER)
    runs = client.get("/api/v1/runs/", {"site": "mall"}).json()
    assert runs["results"][0]["measured_kw"] == 9.5
    status = client.get("/api/v1/sites/mall/status/").json()
    assert (status["load_kw"], status["limit_kw"]) == (9.5, 20.0)


def test_the_openapi_schema_validates_and_the_docs_page_is_served_locally(token_client) -> None:
    from drf_spectacular.validation import validate_schema

    client = token_client(Role.SITE_VIEWER)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    validate_schema(schema)
    assert "/api/v1/readings/" in schema["paths"]
    docs = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in docs
    # Served from our own static files: nothing is loaded from another host (a CDN).
    assert re.findall(r'(?:src|href)="(https?://[^"]*)"', docs) == []
    assert "/static/drf_spectacular_sidecar/" in docs


@pytest.mark.parametrize(
    ("file_format", "accept"),
    [
        ("csv", "text/csv"),
        ("pdf", "application/pdf"),
        ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ],
)
def test_a_report_download_asked_for_by_its_media_type_is_served(token_client, file_format, accept) -> None:
    from billing.savings_reports import savings_report_generate

    report = savings_report_generate(year=2026, month=10, reason="request")
    client = token_client(Role.FINANCE)

    response = client.get(f"/api/v1/reports/{report.pk}/download/", {"file_format": file_format}, HTTP_ACCEPT=accept)

    assert response.status_code == 200
    assert response["Content-Type"].split(";")[0] == accept
    missing = client.get(f"/api/v1/reports/{report.pk + 1}/download/", {"file_format": file_format}, HTTP_ACCEPT=accept)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
