"""Circuit tree and tariffs in the portal's site settings: energy managers only, audited."""

import json
from decimal import Decimal

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from balancing.models import Circuit
from billing.models import Tariff
from tenants.accounts.models import AuditEvent, Role
from tests.billing.conftest import simple_record
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def site():
    return SiteFactory(slug="mall")


def test_an_energy_manager_adds_and_changes_circuits_and_it_is_audited(make_user, site) -> None:
    _, client = make_user(Role.ENERGY_MANAGER)
    client.post("/sites/mall/circuits/", {"name": "Panel A", "kind": "panel", "parent": "", "limit_a": "63"})
    client.post(
        "/sites/mall/circuits/",
        {"name": "Row 1", "kind": "circuit", "parent": "Panel A", "limit_a": "32", "limit_kw": "11"},
    )
    page = client.post(
        "/sites/mall/circuits/", {"name": "Panel A", "kind": "panel", "parent": "", "limit_a": "50"}, follow=True
    ).content.decode()

    assert "limit_a: 63 -&gt; 50" in page
    assert Circuit.objects.get(site=site, name="Row 1").parent.name == "Panel A"
    assert Circuit.objects.get(site=site, name="Panel A").limit_a == Decimal("50")
    assert AuditEvent.objects.filter(object_type="circuit", field="limit_a", new_value="50").exists()


def test_a_circuit_below_an_unknown_parent_is_refused_with_the_reason(make_user, site) -> None:
    _, client = make_user(Role.ENERGY_MANAGER)
    page = client.post(
        "/sites/mall/circuits/", {"name": "Row 1", "kind": "circuit", "parent": "Nowhere", "limit_a": "32"}, follow=True
    ).content.decode()
    assert "no circuit named &#x27;Nowhere&#x27;" in page
    assert not Circuit.objects.filter(site=site).exists()


def test_an_energy_manager_imports_a_tariff_version(make_user, site) -> None:
    _, client = make_user(Role.ENERGY_MANAGER)
    upload = SimpleUploadedFile("rate.json", json.dumps(simple_record()).encode(), content_type="application/json")

    page = client.post(
        "/sites/mall/tariffs/", {"record": upload, "valid_from": "2026-01-01"}, follow=True
    ).content.decode()

    tariff = Tariff.objects.get(site=site)
    assert f"imported as version {tariff.version}" in page
    assert AuditEvent.objects.filter(object_type="tariff", action="import").exists()


def test_a_broken_tariff_names_what_is_wrong_and_stores_nothing(make_user, site) -> None:
    _, client = make_user(Role.ENERGY_MANAGER)
    record = simple_record()
    del record["energyratestructure"]
    page = client.post(
        "/sites/mall/tariffs/",
        {
            "record": SimpleUploadedFile("rate.json", json.dumps(record).encode()),
            "valid_from": "2026-01-01",
        },
        follow=True,
    ).content.decode()
    assert "Tariff not imported" in page
    assert "energyratestructure" in page
    not_json = client.post(
        "/sites/mall/tariffs/",
        {"record": SimpleUploadedFile("rate.json", b"{nope"), "valid_from": "2026-01-01"},
        follow=True,
    )
    assert "not JSON" in not_json.content.decode()
    assert not Tariff.objects.filter(site=site).exists()


@pytest.mark.parametrize("role", [Role.SITE_VIEWER, Role.FINANCE])
def test_viewers_and_finance_cannot_change_circuits_or_tariffs(make_user, site, role) -> None:
    _, client = make_user(role)
    assert client.post("/sites/mall/circuits/", {"name": "X", "kind": "panel", "limit_a": "1"}).status_code == 403
    assert client.post("/sites/mall/tariffs/", {}).status_code == 403
    assert not Circuit.objects.filter(site=site).exists()


def test_an_energy_manager_sets_stepped_raises_after_confirming_and_it_is_audited(make_user, site) -> None:
    _, client = make_user(Role.ENERGY_MANAGER)
    values = {
        "limit_a": site.limit_a,
        "demand_cap_kw": site.demand_cap_kw or "",
        "failsafe_a": site.failsafe_a,
        "failsafe_auto": "on",
        "building_allowance_kw": "0",
        "overdraw_escalation": "none",
        "overdraw_escalation_after_s": "300",
    }
    asked = client.post("/sites/mall/settings/", {**values, "max_raise_a": "4"}).content.decode()
    assert "Largest raise per run (A)" in asked  # the confirmation step lists the change
    site.refresh_from_db()
    assert site.max_raise_a is None

    client.post("/sites/mall/settings/", {**values, "max_raise_a": "4", "confirm": "on"})
    site.refresh_from_db()
    assert site.max_raise_a == Decimal("4")
    assert AuditEvent.objects.filter(object_type="site", field="max_raise_a", new_value="4").exists()


@pytest.mark.parametrize(
    ("content", "named"),
    [
        (json.dumps(simple_record(energy_rates=("1e308",))).encode(), "energyratestructure[0][0].rate"),
        (json.dumps(simple_record(flat_rate="1e9")).encode(), "flatdemandstructure[0][0].rate"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 32 levels"),
        (b'{"name": "x", "energyratestructure": [[{"rate": ' + b"9" * 100_000 + b"}]]}", "more than 30 digits"),
        (b'{"name": "x", "energyratestructure": [[{"rate": NaN}]]}', "NaN is not a number"),
        (json.dumps({**simple_record(), "name": "Peak\x00"}).encode(), "NUL character"),
    ],
)
def test_a_tariff_out_of_bounds_or_unparseable_is_refused_naming_why(make_user, site, content, named) -> None:
    _, client = make_user(Role.ENERGY_MANAGER)

    response = client.post(
        "/sites/mall/tariffs/",
        {"record": SimpleUploadedFile("rate.json", content), "valid_from": "2026-01-01"},
        follow=True,
    )

    assert response.status_code == 200
    page = response.content.decode()
    assert "Tariff not imported" in page
    assert named in page
    assert not Tariff.objects.filter(site=site).exists()
