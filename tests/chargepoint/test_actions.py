"""Operator actions on a charger (portal and API), through the real command path."""

from decimal import Decimal

import pytest
from django.test import Client

from chargepoint.actions import _command
from chargepoint.models import ChargerCommand, ChargingSession
from tenants.accounts.models import AuditEvent, Role
from tenants.accounts.tokens import api_token_create
from tests.conftest import ALPHA
from tests.factories import ChargingStationFactory, ConnectorFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def station():
    station = ChargingStationFactory(charge_point_id="ACT-CP-1", ocpp_version="1.6", is_online=False)
    connector = ConnectorFactory(station=station, connector_id=1)
    ChargingSession.objects.create(
        station=station,
        connector=connector,
        transaction_id="77",
        started_at="2026-05-01T09:00:00Z",
        meter_start_wh=Decimal(0),
    )
    return station


@pytest.mark.parametrize(
    ("version", "action", "expected"),
    [
        ("1.6", "remote_stop", ("RemoteStopTransaction", {"transactionId": 77})),
        ("2.0.1", "remote_stop", ("RequestStopTransaction", {"transactionId": "77"})),
        ("1.6", "make_unavailable", ("ChangeAvailability", {"connectorId": 1, "type": "Inoperative"})),
        ("2.0.1", "make_available", ("ChangeAvailability", {"operationalStatus": "Operative", "evse": {"id": 1}})),
        ("1.6", "hard_reset", ("Reset", {"type": "Hard"})),
        ("2.0.1", "soft_reset", ("Reset", {"type": "OnIdle"})),
    ],
)
def test_each_action_is_the_right_call_for_the_chargers_protocol(station, version, action, expected) -> None:
    station.ocpp_version = version
    command = _command(station, action, 1)
    assert (command.action, command.payload) == expected


def test_the_charger_page_shows_status_sessions_and_actions_for_energy_managers(make_user, station) -> None:
    _, manager = make_user(Role.ENERGY_MANAGER)
    _, viewer = make_user(Role.SITE_VIEWER)
    page = manager.get("/chargers/ACT-CP-1/").content.decode()
    assert "ACT-CP-1" in page
    assert "77" in page
    assert 'name="action"' in page
    assert 'name="action"' not in viewer.get("/chargers/ACT-CP-1/").content.decode()
    assert viewer.post("/chargers/ACT-CP-1/act/", {"action": "hard_reset", "connector_id": "0"}).status_code == 403


def test_an_action_on_an_offline_charger_is_recorded_and_audited(make_user, station) -> None:
    _, manager = make_user(Role.ENERGY_MANAGER)

    response = manager.post("/chargers/ACT-CP-1/act/", {"action": "remote_stop", "connector_id": "1"}, follow=True)

    assert "the charger answered Offline" in response.content.decode()
    assert ChargerCommand.objects.get(charge_point_id="ACT-CP-1").action == "RemoteStopTransaction"
    assert AuditEvent.objects.filter(object_type="charger", action="remote_stop").exists()


def test_the_api_names_a_bad_action_and_reports_an_unreachable_charger(make_user, station) -> None:
    user, _ = make_user(Role.ENERGY_MANAGER)
    _, raw = api_token_create(user=user, name="ops")
    api = Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}")

    bad = api.post("/api/v1/chargers/ACT-CP-1/commands/", {"action": "explode"}, content_type="application/json")
    assert bad.status_code == 400
    assert "action" in bad.json()["error"]["fields"]
    no_connector = api.post(
        "/api/v1/chargers/ACT-CP-1/commands/",
        {"action": "remote_stop", "connector_id": 9},
        content_type="application/json",
    )
    assert "connector_id" in no_connector.json()["error"]["fields"]
    away = api.post("/api/v1/chargers/ACT-CP-1/commands/", {"action": "soft_reset"}, content_type="application/json")
    assert away.status_code == 409
    assert away.json()["error"]["code"] == "offline"
