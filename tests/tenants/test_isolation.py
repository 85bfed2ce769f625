"""One organisation's data is invisible to another: at the ORM, over HTTP and in the cache."""

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django_tenants.utils import schema_context, tenant_context

from balancing.models import Site
from tests.conftest import ALPHA, BETA, PLATFORM_DOMAIN
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db


def sign_in(client: Client, email: str, password: str) -> bool:
    response = client.post("/admin/login/?next=/admin/", {"username": email, "password": password})
    return response.status_code == 302 and response["Location"] == "/admin/"


def test_rows_of_one_tenant_are_not_in_another_schema(tenant, other_tenant) -> None:
    with tenant_context(tenant):
        SiteFactory(slug="shared-name", name="Alpha garage")
    with tenant_context(other_tenant):
        assert not Site.objects.filter(slug="shared-name").exists()
        SiteFactory(slug="shared-name", name="Beta garage")  # same slug: separate tables
    with tenant_context(tenant):
        assert list(Site.objects.values_list("name", flat=True)) == ["Alpha garage"]
    with schema_context("public"), connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('public.balancing_site')")
        assert cursor.fetchone() == (None,)


def test_the_admin_of_one_tenant_sees_its_sites_and_not_the_others(tenant, other_tenant, alpha_client) -> None:
    with tenant_context(tenant):
        SiteFactory(name="Alpha garage")
    with tenant_context(other_tenant):
        SiteFactory(name="Beta garage")

    assert sign_in(alpha_client, ALPHA.admin_email, ALPHA.admin_password)
    page = alpha_client.get("/admin/balancing/site/").content.decode()

    assert "Alpha garage" in page
    assert "Beta garage" not in page


def test_a_session_of_one_tenant_is_worthless_on_another_domain(tenant, other_tenant, alpha_client) -> None:
    with tenant_context(other_tenant):
        beta_site = SiteFactory(name="Beta garage")
    assert sign_in(alpha_client, ALPHA.admin_email, ALPHA.admin_password)
    assert alpha_client.get("/admin/balancing/site/").status_code == 200

    on_beta = alpha_client.get(f"/admin/balancing/site/{beta_site.pk}/change/", HTTP_HOST=BETA.domain)

    assert on_beta.status_code == 302
    assert on_beta["Location"].startswith("/admin/login/")


def test_credentials_of_one_tenant_do_not_sign_in_elsewhere(beta_client) -> None:
    assert not sign_in(beta_client, ALPHA.admin_email, ALPHA.admin_password)
    assert not sign_in(Client(HTTP_HOST=PLATFORM_DOMAIN), ALPHA.admin_email, ALPHA.admin_password)
    assert sign_in(beta_client, BETA.admin_email, BETA.admin_password)


def test_an_unknown_host_gets_404() -> None:
    assert Client(HTTP_HOST="nobody.localhost").get("/admin/login/").status_code == 404


def test_the_platform_admin_lists_organisations_not_tenant_data(alpha_client) -> None:
    platform = Client(HTTP_HOST=PLATFORM_DOMAIN)
    assert platform.get("/admin/balancing/site/").status_code in (302, 404)
    assert alpha_client.get("/admin/tenants/tenant/").status_code in (302, 404)


def test_cache_keys_are_scoped_to_the_active_tenant(tenant, other_tenant) -> None:
    key = "isolation-probe"
    with tenant_context(tenant):
        cache.set(key, "alpha-value", timeout=30)
    try:
        with tenant_context(other_tenant):
            assert cache.get(key) is None
        with tenant_context(tenant):
            assert cache.get(key) == "alpha-value"
    finally:
        with tenant_context(tenant):
            cache.delete(key)
