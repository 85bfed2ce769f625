"""Every portal page and API endpoint of one organisation is closed to another's users."""

import pytest
from django.test import Client
from django_tenants.utils import tenant_context

from tenants.accounts.models import Role, User
from tenants.accounts.tokens import api_token_create
from tests.conftest import ALPHA, BETA
from tests.factories import ChargingStationFactory, SiteFactory

pytestmark = pytest.mark.django_db

PORTAL = [
    "/",
    "/sites/alpha-site/",
    "/sites/alpha-site/chart.json",
    "/sites/alpha-site/settings/",
    "/chargers/ALPHA-CP/",
    "/chargers/ALPHA-CP/chart.json",
    "/users/",
    "/tokens/",
    "/audit/",
    "/reports/",
]
API = [
    "/api/v1/sites/",
    "/api/v1/sites/alpha-site/",
    "/api/v1/sites/alpha-site/status/",
    "/api/v1/circuits/",
    "/api/v1/schedules/",
    "/api/v1/runs/",
    "/api/v1/chargers/",
    "/api/v1/chargers/ALPHA-CP/",
    "/api/v1/sessions/",
    "/api/v1/readings/",
    "/api/v1/reports/",
]


@pytest.fixture
def alpha_data(tenant):
    with tenant_context(tenant):
        site = SiteFactory(slug="alpha-site", name="Alpha site")
        ChargingStationFactory(charge_point_id="ALPHA-CP", site=site)


@pytest.fixture
def beta_user(other_tenant):
    with tenant_context(other_tenant):
        user = User.objects.create_user(email="boss@beta.example", password="beta-password-123", role=Role.ADMIN)
        _, raw = api_token_create(user=user, name="beta")
    return user, raw


@pytest.mark.parametrize("url", PORTAL)
def test_a_user_of_another_tenant_is_not_signed_in_on_this_domain(alpha_data, beta_user, other_tenant, url) -> None:
    client = Client(HTTP_HOST=BETA.domain)
    with tenant_context(other_tenant):
        client.force_login(beta_user[0])
    response = client.get(url, HTTP_HOST=ALPHA.domain)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("url", PORTAL[1:6])
def test_this_tenants_objects_do_not_exist_on_another_domain(alpha_data, beta_user, other_tenant, url) -> None:
    client = Client(HTTP_HOST=BETA.domain)
    with tenant_context(other_tenant):
        client.force_login(beta_user[0])
    assert client.get(url).status_code == 404


@pytest.mark.parametrize("url", API)
def test_a_token_of_another_tenant_is_unknown_here(alpha_data, beta_user, url) -> None:
    response = Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {beta_user[1]}").get(url)
    assert response.status_code == 401


@pytest.mark.parametrize("url", [u for u in API if "alpha" in u.lower()])
def test_this_tenants_objects_are_404_through_another_tenants_api(alpha_data, beta_user, url) -> None:
    response = Client(HTTP_HOST=BETA.domain, HTTP_AUTHORIZATION=f"Bearer {beta_user[1]}").get(url)
    assert response.status_code == 404


@pytest.mark.parametrize("url", API)
def test_anonymous_api_calls_get_401(url) -> None:
    assert Client(HTTP_HOST=ALPHA.domain).get(url).status_code == 401
