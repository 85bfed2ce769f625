"""The platform operators' console (public schema): register, move, reset chargers."""

import re
from decimal import Decimal

import pytest
from django.test import Client
from django_tenants.utils import schema_context, tenant_context

from chargepoint.models import ChargingSession, ChargingStation
from tenants.accounts.models import AuditEvent, User
from tenants.models import ChargePointIdentity
from tests.conftest import ALPHA, PLATFORM_DOMAIN
from tests.factories import SiteFactory

pytestmark = [pytest.mark.django_db, pytest.mark.public_schema]
NEW_PASSWORD = re.compile(r"password (?:is )?(\S{16,40})")


@pytest.fixture
def operator() -> Client:
    with schema_context("public"):
        User.objects.create_superuser(email="ops@platform.example", password="platform-ops-pass-2026")
    client = Client(HTTP_HOST=PLATFORM_DOMAIN)
    response = client.post(
        "/admin/login/?next=/admin/", {"username": "ops@platform.example", "password": "platform-ops-pass-2026"}
    )
    assert response.status_code == 302
    return client


@pytest.fixture
def sites(tenant, other_tenant):
    with tenant_context(tenant):
        SiteFactory(slug="north", phases=3)
        SiteFactory(slug="south", phases=3)
    with tenant_context(other_tenant):
        SiteFactory(slug="east", phases=3)


def messages_of(response) -> str:
    return " ".join(str(m) for m in response.context["messages"]) if response.context else response.content.decode()


def register(operator: Client, tenant, cp_id: str = "OPS-CP-1"):
    return operator.post(
        "/admin/tenants/chargepointidentity/register/",
        {
            "tenant": tenant.pk,
            "site_slug": "north",
            "charge_point_id": cp_id,
            "max_current_a": "32",
            "phases": "3",
            "wiring": "",
            "circuit": "",
            "connectors": "2",
        },
        follow=True,
    )


def test_an_operator_registers_a_charger_and_sees_its_password_once(operator, sites, tenant) -> None:
    page = messages_of(register(operator, tenant))

    password = NEW_PASSWORD.search(page).group(1)
    identity = ChargePointIdentity.objects.get(charge_point_id="OPS-CP-1")
    assert identity.check_password(password)
    assert password not in identity.password_hash
    with tenant_context(tenant):
        assert ChargingStation.objects.get(charge_point_id="OPS-CP-1").connectors.count() == 2


def test_a_bad_registration_says_why_and_writes_nothing(operator, sites, tenant) -> None:
    response = operator.post(
        "/admin/tenants/chargepointidentity/register/",
        {
            "tenant": tenant.pk,
            "site_slug": "nowhere",
            "charge_point_id": "OPS-CP-2",
            "max_current_a": "32",
            "phases": "3",
            "wiring": "",
            "circuit": "",
            "connectors": "1",
        },
    )
    assert "no site with slug &#x27;nowhere&#x27;" in response.content.decode()
    assert not ChargePointIdentity.objects.filter(charge_point_id="OPS-CP-2").exists()


def test_reset_password_replaces_the_old_one(operator, sites, tenant) -> None:
    old = NEW_PASSWORD.search(messages_of(register(operator, tenant))).group(1)
    identity = ChargePointIdentity.objects.get(charge_point_id="OPS-CP-1")

    page = messages_of(
        operator.post(
            "/admin/tenants/chargepointidentity/",
            {"action": "reset_passwords", "_selected_action": [identity.pk]},
            follow=True,
        )
    )

    new = NEW_PASSWORD.search(page).group(1)
    identity.refresh_from_db()
    assert identity.check_password(new)
    assert not identity.check_password(old)


def test_moving_within_an_organisation_keeps_the_station(operator, sites, tenant) -> None:
    register(operator, tenant)
    identity = ChargePointIdentity.objects.get(charge_point_id="OPS-CP-1")

    operator.post(
        f"/admin/tenants/chargepointidentity/{identity.pk}/move/",
        {"tenant": tenant.pk, "site_slug": "south", "circuit": ""},
    )

    identity.refresh_from_db()
    assert identity.site_slug == "south"
    with tenant_context(tenant):
        assert ChargingStation.objects.get(charge_point_id="OPS-CP-1").site.slug == "south"
        move = AuditEvent.objects.get(action="move", object_type="charger")
        assert (move.field, move.old_value, move.new_value) == ("site", "north", "south")


def test_moving_to_another_organisation_leaves_history_and_frees_capacity(
    operator, sites, tenant, other_tenant
) -> None:
    register(operator, tenant)
    with tenant_context(tenant):
        station = ChargingStation.objects.get(charge_point_id="OPS-CP-1")
        ChargingSession.objects.create(
            station=station,
            connector=station.connectors.first(),
            transaction_id="9",
            started_at="2026-05-01T09:00:00Z",
            meter_start_wh=Decimal(0),
        )
    identity = ChargePointIdentity.objects.get(charge_point_id="OPS-CP-1")

    page = messages_of(
        operator.post(
            f"/admin/tenants/chargepointidentity/{identity.pk}/move/",
            {"tenant": other_tenant.pk, "site_slug": "east", "circuit": ""},
            follow=True,
        )
    )

    identity.refresh_from_db()
    assert (identity.tenant, identity.site_slug) == (other_tenant, "east")
    assert identity.check_password(NEW_PASSWORD.search(page).group(1))
    with tenant_context(other_tenant):
        assert ChargingStation.objects.get(charge_point_id="OPS-CP-1").site.slug == "east"
    with tenant_context(tenant):
        old = ChargingStation.objects.get(charge_point_id="OPS-CP-1")
        assert not old.is_online
        assert not old.sessions.filter(stopped_at__isnull=True).exists()


def test_an_organisation_admin_cannot_use_the_platform_console() -> None:
    client = Client(HTTP_HOST=PLATFORM_DOMAIN)
    client.post("/admin/login/", {"username": ALPHA.admin_email, "password": ALPHA.admin_password})
    assert client.get("/admin/tenants/chargepointidentity/").status_code == 302
