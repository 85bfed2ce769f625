"""Tariff versions imported and listed through the REST API."""

from typing import Any

import pytest

from balancing.models import SiteGroup
from billing.models import Tariff
from tenants.accounts.models import Role
from tests.api_clients import audit_rows, send, token_clients
from tests.billing.conftest import b19_record, simple_record
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def api_as() -> Any:
    return token_clients()


def test_a_record_is_imported_as_the_next_version_and_the_same_record_again_is_that_version(api_as) -> None:
    SiteFactory(slug="mall")
    client = api_as(Role.ENERGY_MANAGER)
    first = {"site": "mall", "valid_from": "2026-01-01", "record": simple_record()}

    created = send(client, "POST", "/api/v1/tariffs/", first, HTTP_IDEMPOTENCY_KEY="t-1")
    replay = send(client, "POST", "/api/v1/tariffs/", first, HTTP_IDEMPOTENCY_KEY="t-1")
    same_record = send(client, "POST", "/api/v1/tariffs/", first)
    second = send(
        client, "POST", "/api/v1/tariffs/", {"site": "mall", "valid_from": "2026-06-01", "record": b19_record()}
    )

    assert created.status_code == 201, created.json()
    assert created.json()["version"] == 1
    assert replay["Idempotent-Replayed"] == "true"
    assert same_record.status_code == 200
    assert same_record.json()["id"] == created.json()["id"]
    assert second.status_code == 201
    assert second.json()["version"] == 2
    assert Tariff.objects.filter(site__slug="mall").count() == 2
    assert Tariff.objects.get(version=1).valid_until.isoformat() == "2026-06-01"
    assert len({row.object_id for row in audit_rows("tariff") if row.action == "import"}) == 2

    listed = client.get("/api/v1/tariffs/", {"site": "mall"}).json()["results"]
    assert [t["version"] for t in listed] == [2, 1]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"valid_from": "2025-12-01"}, "valid_from"),  # not after the latest version's
        ({"valid_from": "01/06/2026"}, "valid_from"),
        ({"record": {"name": "no rates"}}, "energyratestructure"),
        ({"record": "not an object"}, "record"),
    ],
)
def test_bad_tariff_input_is_400_naming_the_field_and_adds_no_version(api_as, changes, field) -> None:
    SiteFactory(slug="mall")
    client = api_as(Role.ENERGY_MANAGER)
    send(client, "POST", "/api/v1/tariffs/", {"site": "mall", "valid_from": "2026-01-01", "record": simple_record()})

    body = {"site": "mall", "valid_from": "2026-06-01", "record": b19_record(), **changes}
    response = send(client, "POST", "/api/v1/tariffs/", body)

    assert response.status_code == 400
    assert any(name.startswith(field) for name in response.json()["error"]["fields"]), response.json()
    assert Tariff.objects.count() == 1


def test_a_site_out_of_reach_takes_no_tariff_and_its_tariffs_are_not_listed(api_as) -> None:
    north, library = SiteFactory(slug="north"), SiteFactory(slug="library")
    group = SiteGroup.objects.create(slug="engineering", name="Engineering")
    group.sites.add(north)
    admin = api_as(Role.ADMIN)
    send(admin, "POST", "/api/v1/tariffs/", {"site": "library", "valid_from": "2026-01-01", "record": simple_record()})
    manager = api_as(grants=((Role.ENERGY_MANAGER, group),))

    mine = send(
        manager, "POST", "/api/v1/tariffs/", {"site": "north", "valid_from": "2026-01-01", "record": simple_record()}
    )
    theirs = send(
        manager, "POST", "/api/v1/tariffs/", {"site": "library", "valid_from": "2027-01-01", "record": b19_record()}
    )

    assert mine.status_code == 201
    assert theirs.status_code == 400  # a site out of reach in the body does not exist, as an unknown one
    assert theirs.json()["error"]["fields"] == {"site": ["Object with slug=library does not exist."]}
    assert [t["site"] for t in manager.get("/api/v1/tariffs/").json()["results"]] == ["north"]
    library_tariff = Tariff.objects.get(site=library)
    assert manager.get(f"/api/v1/tariffs/{library_tariff.pk}/").status_code == 404
    assert Tariff.objects.filter(site=library).count() == 1
    viewer = api_as(Role.SITE_VIEWER)
    assert send(viewer, "POST", "/api/v1/tariffs/", {"site": "north", "valid_from": "2028-01-01"}).status_code == 403
