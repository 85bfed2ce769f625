"""Chargers registered, changed and deactivated through the REST API, and the fleet import endpoint."""

from decimal import Decimal
from typing import Any

import pytest
from django_tenants.utils import schema_context

from balancing.models import Circuit, Site, SiteGroup
from chargepoint.models import ChargingStation, Connector
from tenants.accounts.models import AuditEvent, IdempotencyKey, Role
from tenants.models import ChargePointIdentity
from tests.api_clients import audit_rows, send, token_clients
from tests.chargepoint.test_onboarding import as_csv, campus_rows
from tests.factories import CircuitFactory, SiteFactory

pytestmark = pytest.mark.django_db
PASSWORD = "s3cret-charger-pass-0001"


@pytest.fixture
def api_as() -> Any:
    return token_clients()


def identity(charge_point_id: str) -> ChargePointIdentity:
    with schema_context("public"):
        return ChargePointIdentity.objects.get(charge_point_id=charge_point_id)


# --- Chargers ---------------------------------------------------------------------------------


def test_put_registers_a_charger_with_a_generated_password_shown_once(api_as) -> None:
    site = SiteFactory(slug="mall", limit_a=Decimal("63"))
    CircuitFactory(site=site, name="Bay", limit_a=Decimal("40"))
    client = api_as(Role.ENERGY_MANAGER)
    body = {"site": "mall", "circuit": "Bay", "max_current_a": "32", "connectors": 2}

    created = send(client, "PUT", "/api/v1/chargers/CP-NEW-1/", body)
    again = send(client, "PUT", "/api/v1/chargers/CP-NEW-1/", body)

    assert created.status_code == 201, created.json()
    password = created.json()["password"]
    assert identity("CP-NEW-1").check_password(password)
    assert password not in identity("CP-NEW-1").password_hash
    assert created.json()["circuit"] == "Bay"
    assert [c["connector_id"] for c in created.json()["connectors"]] == [1, 2]
    assert created.json()["active"] is True
    assert again.status_code == 200
    assert again.json()["password"] is None
    assert password not in again.content.decode()
    assert ChargingStation.objects.filter(charge_point_id="CP-NEW-1").count() == 1
    audited = audit_rows("charger", ChargingStation.objects.get(charge_point_id="CP-NEW-1").pk)
    assert {row.action for row in audited} == {"create"}  # the repeated PUT audited nothing


def test_put_with_a_password_keeps_that_one_and_a_patch_moves_and_rerates_the_charger(api_as) -> None:
    SiteFactory(slug="mall")
    SiteFactory(slug="depot")
    client = api_as(Role.ENERGY_MANAGER)
    send(client, "PUT", "/api/v1/chargers/CP-2/", {"site": "mall", "max_current_a": "16", "password": PASSWORD})
    station = ChargingStation.objects.get(charge_point_id="CP-2")

    moved = send(client, "PATCH", "/api/v1/chargers/CP-2/", {"site": "depot", "max_current_a": "32.5"})

    assert moved.status_code == 200, moved.json()
    assert identity("CP-2").check_password(PASSWORD)
    assert identity("CP-2").site_slug == "depot"
    station.refresh_from_db()
    assert (station.site.slug, station.max_current_a, station.phases) == ("depot", Decimal("32.5"), 3)
    changes = {(row.field, row.old_value, row.new_value) for row in audit_rows("charger", station.pk)}
    assert {("site", "mall", "depot"), ("max_current_a", "16.0", "32.5")} <= changes


def test_delete_deactivates_the_charger_and_put_activates_it_again(api_as) -> None:
    SiteFactory(slug="mall")
    client = api_as(Role.ENERGY_MANAGER)
    body = {"site": "mall", "max_current_a": "16", "password": PASSWORD}
    send(client, "PUT", "/api/v1/chargers/CP-3/", body)

    assert send(client, "DELETE", "/api/v1/chargers/CP-3/").status_code == 204
    assert send(client, "DELETE", "/api/v1/chargers/CP-3/").status_code == 204
    assert identity("CP-3").is_active is False
    assert ChargingStation.objects.filter(charge_point_id="CP-3").exists()  # its history stays
    station_pk = ChargingStation.objects.get(charge_point_id="CP-3").pk
    assert [r.action for r in audit_rows("charger", station_pk)].count("deactivate") == 1

    back = send(client, "PUT", "/api/v1/chargers/CP-3/", body)
    assert back.status_code == 200
    assert back.json()["active"] is True
    assert identity("CP-3").is_active is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"site": "mall", "max_current_a": "5"}, "max_current_a"),  # under 6 A
        ({"site": "mall", "max_current_a": 16}, "max_current_a"),  # decimals are strings
        ({"site": "mall", "max_current_a": "16", "phases": 2}, "phases"),
        ({"site": "mall", "max_current_a": "16", "password": "short"}, "password"),
        ({"site": "mall", "max_current_a": "16", "circuit": "Nowhere"}, "circuit"),
        ({"site": "mall", "max_current_a": "16", "phases": 1, "wiring": "L1L2L3"}, "wiring"),
        ({"site": "mall", "max_current_a": "16", "connectors": 0}, "connectors"),
        ({"max_current_a": "16"}, "site"),
    ],
)
def test_bad_charger_input_is_400_naming_the_field_and_registers_nothing(api_as, body, field) -> None:
    SiteFactory(slug="mall")

    response = send(api_as(Role.ENERGY_MANAGER), "PUT", "/api/v1/chargers/CP-BAD/", body)

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert not ChargingStation.objects.filter(charge_point_id="CP-BAD").exists()
    with schema_context("public"):
        assert not ChargePointIdentity.objects.filter(charge_point_id="CP-BAD").exists()


def test_a_charger_id_of_another_organisation_is_refused(api_as, other_tenant) -> None:
    from django_tenants.utils import tenant_context

    from chargepoint.services import charger_register

    with tenant_context(other_tenant):
        Site.objects.create(slug="beta-site", name="Beta", limit_a=63)
        charger_register(
            tenant=other_tenant, site_slug="beta-site", charge_point_id="BETA-CP", password=PASSWORD, max_current_a=16
        )
    SiteFactory(slug="mall")

    response = send(api_as(Role.ADMIN), "PUT", "/api/v1/chargers/BETA-CP/", {"site": "mall", "max_current_a": "16"})

    assert response.status_code == 400
    assert "charge_point_id" in response.json()["error"]["fields"]
    assert identity("BETA-CP").tenant_id == other_tenant.pk


def test_a_group_manager_registers_chargers_on_its_sites_only(api_as) -> None:
    north, library = SiteFactory(slug="north"), SiteFactory(slug="library")
    group = SiteGroup.objects.create(slug="engineering", name="Engineering")
    group.sites.add(north)
    client = api_as(grants=((Role.ENERGY_MANAGER, group),))
    admin = api_as(Role.ADMIN)
    send(admin, "PUT", "/api/v1/chargers/LIB-1/", {"site": "library", "max_current_a": "16"})

    ok = send(client, "PUT", "/api/v1/chargers/N-1/", {"site": "north", "max_current_a": "16"})
    elsewhere = send(client, "PUT", "/api/v1/chargers/N-2/", {"site": "library", "max_current_a": "16"})
    steal = send(client, "PUT", "/api/v1/chargers/LIB-1/", {"site": "north", "max_current_a": "16"})
    patch_outside = send(client, "PATCH", "/api/v1/chargers/LIB-1/", {"max_current_a": "20"})
    delete_outside = send(client, "DELETE", "/api/v1/chargers/LIB-1/")
    command_outside = send(client, "POST", "/api/v1/chargers/LIB-1/commands/", {"action": "reset_soft"})
    read_only = api_as(Role.ADMIN, scope="read")

    assert ok.status_code == 201
    assert [r.status_code for r in (steal, patch_outside, delete_outside, command_outside)] == [404] * 4
    assert elsewhere.status_code == 400  # a site out of reach in the body does not exist, as an unknown one
    assert elsewhere.json()["error"]["fields"] == {"site": ["Object with slug=library does not exist."]}
    assert send(read_only, "PUT", "/api/v1/chargers/N-3/", {"site": "north", "max_current_a": "16"}).status_code == 403
    assert ChargingStation.objects.get(charge_point_id="LIB-1").site == library
    assert not ChargingStation.objects.filter(charge_point_id__in=["N-2", "N-3"]).exists()
    assert identity("LIB-1").is_active


# --- Fleet import -----------------------------------------------------------------------------


def test_the_fleet_import_reports_every_bad_row_writes_nothing_then_all_and_is_idempotent(api_as) -> None:
    client = api_as(Role.ADMIN)
    rows = campus_rows()  # a site, four circuits and 300 chargers
    rows[40]["max_current_a"] = "thirty-two"
    rows[200]["circuit"] = "Feeder 9"

    refused = client.post("/api/v1/imports/fleet/", as_csv(rows), content_type="text/csv")

    assert refused.status_code == 400
    error = refused.json()["error"]
    assert "2 rows not valid" in error["message"]
    assert [(e["row"], e["column"]) for e in error["fields"]["rows"]] == [(42, "max_current_a"), (202, "circuit")]
    assert not Site.objects.filter(slug="campus").exists()
    with schema_context("public"):
        assert not ChargePointIdentity.objects.filter(charge_point_id__startswith="CAMPUS-").exists()

    rows[40]["max_current_a"] = "32"
    rows[200]["circuit"] = "Feeder 3"
    dry = client.post("/api/v1/imports/fleet/?dry_run=true", as_csv(rows), content_type="text/csv")
    assert dry.status_code == 200
    assert dry.json()["created"] == {"site": 1, "circuit": 4, "charger": 300}
    assert dry.json()["written"] is False
    assert not Site.objects.filter(slug="campus").exists()

    done = client.post("/api/v1/imports/fleet/", as_csv(rows), content_type="text/csv")

    assert done.status_code == 201
    assert done.json()["written"] is True
    assert ChargingStation.objects.filter(site__slug="campus").count() == 300
    assert Circuit.objects.filter(site__slug="campus").count() == 4
    passwords = done.json()["passwords"]
    assert len(passwords) == 300
    assert identity("CAMPUS-123").check_password(passwords["CAMPUS-123"])

    audited = AuditEvent.objects.count()
    again = client.post("/api/v1/imports/fleet/", as_csv(rows), content_type="text/csv")
    assert again.status_code == 200
    assert again.json()["created"] == again.json()["updated"] == {"site": 0, "circuit": 0, "charger": 0}
    assert again.json()["passwords"] == {}
    assert identity("CAMPUS-123").check_password(passwords["CAMPUS-123"])
    assert AuditEvent.objects.count() == audited + 1  # the import's own record ("no change")


def test_the_fleet_import_takes_json_rows_and_a_replay_never_shows_a_password_again(api_as) -> None:
    client = api_as(Role.ADMIN)
    rows: list[dict[str, Any]] = [
        {"kind": "site", "site": "depot", "name": "Depot", "limit_a": 250},
        {"kind": "charger", "site": "depot", "charge_point_id": "DEPOT-1", "max_current_a": 32, "connectors": 2},
    ]

    first = send(client, "POST", "/api/v1/imports/fleet/", {"rows": rows}, HTTP_IDEMPOTENCY_KEY="fleet-1")
    replay = send(client, "POST", "/api/v1/imports/fleet/", {"rows": rows}, HTTP_IDEMPOTENCY_KEY="fleet-1")

    assert first.status_code == 201, first.json()
    assert list(first.json()["passwords"]) == ["DEPOT-1"]
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == {**first.json(), "passwords": {}}
    stored = IdempotencyKey.objects.get(key="fleet-1")
    assert first.json()["passwords"]["DEPOT-1"] not in str(stored.response_body)
    assert Connector.objects.filter(station__charge_point_id="DEPOT-1").count() == 2


def test_json_rows_name_their_position_and_unknown_columns_are_refused(api_as) -> None:
    client = api_as(Role.ADMIN)
    rows = [
        {"kind": "site", "site": "depot", "name": "Depot", "limit_a": "250"},
        {"kind": "circuit", "site": "depot", "name": "Main", "limit_a": "lots"},
    ]

    bad_value = send(client, "POST", "/api/v1/imports/fleet/", {"rows": rows})
    unknown = send(client, "POST", "/api/v1/imports/fleet/", {"rows": [{"kind": "site", "colour": "red"}]})

    assert bad_value.status_code == 400
    assert bad_value.json()["error"]["fields"]["rows"] == [
        {"row": 2, "column": "limit_a", "message": "'lots' is not a number"}
    ]
    assert unknown.status_code == 400
    assert "colour" in str(unknown.json()["error"]["fields"]["rows"])
    assert not Site.objects.filter(slug="depot").exists()


def test_the_fleet_import_needs_the_admin_role_on_the_whole_organisation(api_as) -> None:
    north = SiteFactory(slug="north")
    group = SiteGroup.objects.create(slug="engineering", name="Engineering")
    group.sites.add(north)
    body = {"rows": [{"kind": "site", "site": "new", "name": "New", "limit_a": "100"}]}

    for client in (
        api_as(Role.ENERGY_MANAGER),
        api_as(grants=((Role.ADMIN, group),)),
        api_as(Role.ADMIN, scope="read"),
    ):
        assert send(client, "POST", "/api/v1/imports/fleet/", body).status_code == 403
    assert not Site.objects.filter(slug="new").exists()


def test_a_form_body_is_415_and_an_unreadable_csv_is_400(api_as) -> None:
    client = api_as(Role.ADMIN)

    form = client.post("/api/v1/imports/fleet/", {"rows": "x"})
    no_kind = client.post("/api/v1/imports/fleet/", b"site,name\nx,y\n", content_type="text/csv")

    assert form.status_code == 415
    assert no_kind.status_code == 400
    assert "'kind'" in no_kind.json()["error"]["message"]
