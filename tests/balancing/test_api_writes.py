"""Writing circuits, schedules, limit overrides and site meter readings through the REST API."""

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from balancing.limits import site_limits
from balancing.models import Circuit, LimitOverride, SiteGroup, SiteLimitSchedule, SiteMeterReading
from tenants.accounts.models import Role
from tests.api_clients import audit_rows, send, token_clients
from tests.factories import ChargingStationFactory, CircuitFactory, SiteFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def api_as() -> Any:
    return token_clients()


@pytest.fixture
def campus():
    """Two sites in the 'engineering' group and a library outside it."""
    north, south, library = SiteFactory(slug="north"), SiteFactory(slug="south"), SiteFactory(slug="library")
    group = SiteGroup.objects.create(slug="engineering", name="Engineering")
    group.sites.add(north, south)
    return group, north, south, library


# --- Circuits ---------------------------------------------------------------------------------


def test_an_energy_manager_adds_changes_renames_and_removes_a_circuit(api_as) -> None:
    site = SiteFactory(slug="mall")
    client = api_as(Role.ENERGY_MANAGER)

    main = send(client, "POST", "/api/v1/circuits/", {"site": "mall", "name": "Main", "limit_a": "63"})
    feeder = send(
        client, "POST", "/api/v1/circuits/", {"site": "mall", "name": "Feeder", "limit_a": "32", "parent_name": "Main"}
    )
    assert main.status_code == feeder.status_code == 201
    assert feeder.json()["parent_name"] == "Main"

    url = f"/api/v1/circuits/{feeder.json()['id']}/"
    put = send(client, "PUT", url, {"name": "Bay feeder", "limit_a": "25", "limit_kw": "15.5", "parent_name": "Main"})
    assert put.status_code == 200, put.json()
    assert put.json()["name"] == "Bay feeder"
    assert put.json()["limit_kw"] == "15.50"
    patched = send(client, "PATCH", url, {"limit_a": "20"})
    assert patched.json()["limit_a"] == "20.0"
    assert patched.json()["name"] == "Bay feeder"

    feeder_row = Circuit.objects.get(pk=feeder.json()["id"])
    assert (feeder_row.name, feeder_row.limit_a, feeder_row.parent.name) == ("Bay feeder", Decimal("20"), "Main")
    fields = [(row.action, row.field) for row in audit_rows("circuit", feeder_row.pk)]
    assert ("update", "name") in fields
    assert fields.count(("update", "limit_a")) == 2

    assert send(client, "DELETE", url).status_code == 204
    assert not Circuit.objects.filter(pk=feeder_row.pk).exists()
    assert audit_rows("circuit", feeder_row.pk)[-1].action == "delete"
    assert Circuit.objects.filter(site=site).count() == 1


def test_a_repeated_put_changes_nothing_and_audits_nothing_more(api_as) -> None:
    circuit = CircuitFactory(site=SiteFactory(slug="mall"), name="Main", limit_a=Decimal("63"))
    client = api_as(Role.ENERGY_MANAGER)
    body = {"name": "Main", "limit_a": "50"}

    send(client, "PUT", f"/api/v1/circuits/{circuit.pk}/", body)
    audited = len(audit_rows("circuit", circuit.pk))
    again = send(client, "PUT", f"/api/v1/circuits/{circuit.pk}/", body)

    assert again.status_code == 200
    assert len(audit_rows("circuit", circuit.pk)) == audited == 1


def test_a_circuit_with_chargers_or_circuits_below_it_is_not_removed(api_as) -> None:
    site = SiteFactory(slug="mall")
    main = CircuitFactory(site=site, name="Main")
    bay = CircuitFactory(site=site, name="Bay", parent=main)
    ChargingStationFactory(site=site, circuit=bay, charge_point_id="CP-ON-BAY")
    client = api_as(Role.ENERGY_MANAGER)

    for circuit, named in ((main, "Bay"), (bay, "CP-ON-BAY")):
        refused = send(client, "DELETE", f"/api/v1/circuits/{circuit.pk}/")
        assert refused.status_code == 409
        assert named in refused.json()["error"]["message"]
    assert Circuit.objects.filter(site=site).count() == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"site": "mall", "name": "X", "limit_a": "abc"}, "limit_a"),
        ({"site": "mall", "name": "X", "limit_a": 32}, "limit_a"),  # decimals are strings
        ({"site": "mall", "name": "", "limit_a": "32"}, "name"),
        ({"site": "mall", "name": "X", "limit_a": "32", "parent_name": "Nowhere"}, "parent_name"),
        ({"site": "mall", "name": "X", "limit_a": "32", "kind": "breaker"}, "kind"),
        ({"site": "mall", "name": "Main", "limit_a": "32"}, "name"),  # taken
    ],
)
def test_bad_circuit_input_is_400_naming_the_field_and_writes_nothing(api_as, body, field) -> None:
    CircuitFactory(site=SiteFactory(slug="mall"), name="Main")

    response = send(api_as(Role.ENERGY_MANAGER), "POST", "/api/v1/circuits/", body)

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert list(Circuit.objects.values_list("name", flat=True)) == ["Main"]
    assert audit_rows("circuit") == []


# --- Who may write ----------------------------------------------------------------------------


def test_a_manager_granted_a_site_group_writes_there_and_finds_no_other_site(api_as, campus) -> None:
    """A row of a site out of reach is a 404; such a site named in a body does not exist (400), as
    an unknown one does."""
    group, north, _, library = campus
    client = api_as(grants=((Role.ENERGY_MANAGER, group),))
    library_circuit = CircuitFactory(site=library, name="Library main")

    ok = send(client, "POST", "/api/v1/circuits/", {"site": "north", "name": "Main", "limit_a": "63"})
    outside = send(client, "POST", "/api/v1/circuits/", {"site": "library", "name": "Main", "limit_a": "63"})
    change_outside = send(client, "PATCH", f"/api/v1/circuits/{library_circuit.pk}/", {"limit_a": "1"})
    remove_outside = send(client, "DELETE", f"/api/v1/circuits/{library_circuit.pk}/")
    override_outside = send(
        client,
        "POST",
        "/api/v1/overrides/",
        {
            "site": "library",
            "reason": "x",
            "limit_kw": "5",
            "ends_at": (timezone.now() + timedelta(hours=1)).isoformat(),
        },
    )

    assert ok.status_code == 201
    assert Circuit.objects.filter(site=north, name="Main").exists()
    assert [r.status_code for r in (change_outside, remove_outside)] == [404] * 2
    for named_outside in (outside, override_outside):
        assert named_outside.status_code == 400
        assert named_outside.json()["error"]["fields"] == {"site": ["Object with slug=library does not exist."]}
    assert Circuit.objects.get(pk=library_circuit.pk).limit_a == Decimal("32")
    assert not Circuit.objects.filter(site=library, name="Main").exists()
    assert not LimitOverride.objects.exists()


def test_a_viewer_grant_is_403_and_a_read_only_token_never_writes(api_as, campus) -> None:
    group, north, _, _ = campus
    circuit = CircuitFactory(site=north, name="Main")
    viewer = api_as(grants=((Role.SITE_VIEWER, group),))
    manager_with_a_read_token = api_as(Role.ENERGY_MANAGER, scope="read")

    assert send(viewer, "PATCH", f"/api/v1/circuits/{circuit.pk}/", {"limit_a": "1"}).status_code == 403
    for method, url, body in (
        ("PATCH", f"/api/v1/circuits/{circuit.pk}/", {"limit_a": "1"}),
        ("POST", "/api/v1/circuits/", {"site": "north", "name": "B", "limit_a": "1"}),
        ("DELETE", f"/api/v1/circuits/{circuit.pk}/", None),
    ):
        assert send(manager_with_a_read_token, method, url, body).status_code == 403
    assert Circuit.objects.get(pk=circuit.pk).limit_a == Decimal("32")
    assert Circuit.objects.count() == 1


# --- Schedules --------------------------------------------------------------------------------


def test_a_schedule_is_changed_with_put_and_patch_audited_once_per_change(api_as) -> None:
    SiteFactory(slug="mall", limit_a=Decimal("63"), demand_cap_kw=Decimal("40"))
    client = api_as(Role.ENERGY_MANAGER)
    body = {"site": "mall", "name": "Peak", "weekdays": "01234", "start_time": "16:00", "end_time": "21:00"}
    created = send(client, "POST", "/api/v1/schedules/", {**body, "limit_kw": "20"}, HTTP_IDEMPOTENCY_KEY="peak")
    url = f"/api/v1/schedules/{created.json()['id']}/"

    put = send(client, "PUT", url, {**body, "limit_kw": "15"})
    again = send(client, "PUT", url, {**body, "limit_kw": "15"})
    patched = send(client, "PATCH", url, {"end_time": "22:00"})
    replay = send(client, "POST", "/api/v1/schedules/", {**body, "limit_kw": "20"}, HTTP_IDEMPOTENCY_KEY="peak")

    assert (put.status_code, again.status_code, patched.status_code) == (200, 200, 200)
    assert replay["Idempotent-Replayed"] == "true"
    schedule = SiteLimitSchedule.objects.get()
    assert (schedule.limit_kw, str(schedule.end_time)) == (Decimal("15"), "22:00:00")
    updates = [row.field for row in audit_rows("schedule", schedule.pk) if row.action == "update"]
    assert updates == ["limit_kw", "end_time"]


def test_a_schedule_patch_without_any_limit_keeps_the_stored_one_and_a_site_move_is_refused(api_as) -> None:
    SiteFactory(slug="mall", demand_cap_kw=Decimal("40"))
    SiteFactory(slug="other")
    client = api_as(Role.ENERGY_MANAGER)
    body = {"site": "mall", "name": "Peak", "weekdays": "01234", "start_time": "16:00", "end_time": "21:00"}
    url = f"/api/v1/schedules/{send(client, 'POST', '/api/v1/schedules/', {**body, 'limit_kw': '20'}).json()['id']}/"

    assert send(client, "PATCH", url, {"name": "Evening peak"}).status_code == 200
    moved = send(client, "PATCH", url, {"site": "other"})
    assert moved.status_code == 400
    assert "site" in moved.json()["error"]["fields"]
    assert SiteLimitSchedule.objects.get().site.slug == "mall"


# --- Limit overrides --------------------------------------------------------------------------


def test_an_override_is_set_listed_binds_and_is_ended_now(api_as) -> None:
    site = SiteFactory(slug="mall", limit_a=Decimal("63"), demand_cap_kw=Decimal("40"))
    client = api_as(Role.ENERGY_MANAGER)
    ends_at = (timezone.now() + timedelta(hours=2)).isoformat()
    body = {"site": "mall", "reason": "transformer maintenance", "limit_kw": "11", "ends_at": ends_at}

    created = send(client, "POST", "/api/v1/overrides/", body, HTTP_IDEMPOTENCY_KEY="maint-1")
    replay = send(client, "POST", "/api/v1/overrides/", body, HTTP_IDEMPOTENCY_KEY="maint-1")

    assert created.status_code == 201
    assert created.json()["active"] is True
    assert created.json()["created_by"].startswith("api")
    assert replay["Idempotent-Replayed"] == "true"
    assert LimitOverride.objects.count() == 1
    assert site_limits(site, timezone.now()).limit_kw == pytest.approx(11)
    listed = client.get("/api/v1/overrides/", {"site": "mall", "active": "true"}).json()["results"]
    assert [o["reason"] for o in listed] == ["transformer maintenance"]

    override_id = created.json()["id"]
    assert send(client, "DELETE", f"/api/v1/overrides/{override_id}/").status_code == 204
    assert send(client, "DELETE", f"/api/v1/overrides/{override_id}/").status_code == 204  # ended already

    override = LimitOverride.objects.get()
    assert override.ends_at <= timezone.now()
    assert site_limits(site, timezone.now()).limit_kw == pytest.approx(40)
    assert [(r.action, r.field) for r in audit_rows("override", override.pk)][-1] == ("update", "ends_at")
    assert len([r for r in audit_rows("override", override.pk) if r.action == "update"]) == 1
    assert client.get("/api/v1/overrides/", {"active": "true"}).json()["results"] == []


def test_an_override_not_started_yet_is_removed_when_ended(api_as) -> None:
    SiteFactory(slug="mall")
    client = api_as(Role.ENERGY_MANAGER)
    later = timezone.now() + timedelta(days=1)
    body = {
        "site": "mall",
        "reason": "planned works",
        "limit_a": "16",
        "starts_at": later.isoformat(),
        "ends_at": (later + timedelta(hours=4)).isoformat(),
    }
    created = send(client, "POST", "/api/v1/overrides/", body)
    assert created.json()["active"] is False

    assert send(client, "DELETE", f"/api/v1/overrides/{created.json()['id']}/").status_code == 204
    assert not LimitOverride.objects.exists()


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"limit_kw": None}, "limit_kw"),  # no limit at all
        ({"ends_at": "2020-01-01T00:00:00Z"}, "ends_at"),  # in the past
        ({"ends_at": "2030-01-01T00:00:00"}, "ends_at"),  # no zone
        ({"limit_kw": "-1"}, "limit_kw"),
        ({"site": "nowhere"}, "site"),
        ({"reason": ""}, "reason"),
    ],
)
def test_bad_override_input_is_400_naming_the_field(api_as, changes, field) -> None:
    SiteFactory(slug="mall")
    body = {
        "site": "mall",
        "reason": "x",
        "limit_kw": "5",
        "ends_at": (timezone.now() + timedelta(hours=1)).isoformat(),
        **changes,
    }

    response = send(api_as(Role.ENERGY_MANAGER), "POST", "/api/v1/overrides/", body)

    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert not LimitOverride.objects.exists()


def test_a_scoped_reader_lists_only_the_overrides_of_its_sites(api_as, campus) -> None:
    group, north, _, library = campus
    now = timezone.now()
    for site in (north, library):
        LimitOverride.objects.create(
            site=site, reason=site.slug, limit_kw=5, starts_at=now, ends_at=now + timedelta(hours=1), created_by="x"
        )
    viewer = api_as(grants=((Role.SITE_VIEWER, group),))

    listed = viewer.get("/api/v1/overrides/").json()["results"]

    assert [o["site"] for o in listed] == ["north"]
    library_override = LimitOverride.objects.get(site=library)
    assert viewer.get(f"/api/v1/overrides/{library_override.pk}/").status_code == 404


# --- Site meter readings ----------------------------------------------------------------------


def test_a_meter_reading_posted_twice_is_one_row_and_a_key_replays_it(api_as) -> None:
    SiteFactory(slug="mall", limit_a=Decimal("63"), phases=3)
    client = api_as(Role.ENERGY_MANAGER)
    body = {"measured_at": timezone.now().isoformat(), "current_a": [10, 11, 12]}

    first = send(client, "POST", "/api/v1/sites/mall/meter-readings/", body, HTTP_IDEMPOTENCY_KEY="m-1")
    replay = send(client, "POST", "/api/v1/sites/mall/meter-readings/", body, HTTP_IDEMPOTENCY_KEY="m-1")
    retry_without_key = send(client, "POST", "/api/v1/sites/mall/meter-readings/", body)

    assert first.status_code == 201
    assert (replay.status_code, replay["Idempotent-Replayed"]) == (201, "true")
    assert retry_without_key.status_code == 200
    assert retry_without_key.json()["id"] == first.json()["id"]
    assert SiteMeterReading.objects.count() == 1


def test_a_scoped_meter_writer_posts_to_its_sites_only(api_as, campus) -> None:
    group, _, _, _ = campus
    client = api_as(grants=((Role.ENERGY_MANAGER, group),))
    body = {"measured_at": timezone.now().isoformat(), "current_a": [1, 2, 3]}

    assert send(client, "POST", "/api/v1/sites/north/meter-readings/", body).status_code == 201
    assert send(client, "POST", "/api/v1/sites/library/meter-readings/", body).status_code == 404
    assert list(SiteMeterReading.objects.values_list("site__slug", flat=True)) == ["north"]
