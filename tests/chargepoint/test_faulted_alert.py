"""A connector or station reporting Faulted opens one FAULTED alert naming the error code; leaving Faulted clears it."""

from datetime import UTC, datetime, timedelta

import pytest

from balancing.models import SiteAlert
from balancing.notifications.models import EmailDelivery
from chargepoint.models import ChargingStation
from chargepoint.ocpp16 import ChargePoint16
from chargepoint.ocpp201 import ChargePoint201
from chargepoint.telemetry import telemetry_apply
from tenants.accounts.models import Role, User
from tests.chargepoint.test_handlers import Harness
from tests.factories import ChargingStationFactory, ConnectorFactory

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def status(seconds: float, value: str, *, connector: int = 1, error_code: str = "", cp: str = "FLT-1") -> dict:
    return {
        "type": "status",
        "cp": cp,
        "ts": at(seconds),
        "connector": connector,
        "status": value,
        "error_code": error_code,
        "at": at(seconds),
    }


@pytest.fixture
def station(db) -> ChargingStation:
    station = ChargingStationFactory(charge_point_id="FLT-1")
    ConnectorFactory(station=station, connector_id=1)
    return station


def faulted(station: ChargingStation) -> list[SiteAlert]:
    return list(SiteAlert.objects.filter(station=station, kind=SiteAlert.Kind.FAULTED).order_by("opened_at"))


def test_a_faulted_connector_opens_one_alert_naming_the_error_code_and_a_repeat_only_refreshes_it(station) -> None:
    telemetry_apply(events=[status(0, "Faulted", error_code="GroundFailure")])
    telemetry_apply(events=[status(10, "Faulted", error_code="OverCurrentFailure")])

    [alert] = faulted(station)
    assert alert.cleared_at is None
    assert alert.connector is not None
    assert alert.connector.connector_id == 1
    assert "OverCurrentFailure" in alert.detail
    assert "FLT-1 connector 1" in alert.detail


def test_leaving_faulted_clears_the_alert_and_a_new_fault_opens_another(station) -> None:
    telemetry_apply(events=[status(0, "Faulted", error_code="GroundFailure")])
    telemetry_apply(events=[status(10, "Available", error_code="NoError")])
    telemetry_apply(events=[status(20, "Faulted", error_code="GroundFailure")])

    first, second = faulted(station)
    assert first.cleared_at is not None
    assert second.cleared_at is None


def test_a_status_other_than_faulted_opens_nothing(station) -> None:
    telemetry_apply(events=[status(0, "Charging"), status(5, "SuspendedEV"), status(9, "Available")])

    assert faulted(station) == []


def test_a_faulted_station_on_connector_0_is_a_station_alert_cleared_when_it_is_available_again(station) -> None:
    event = {"type": "station_status", "cp": "FLT-1", "ts": at(0), "status": "Faulted", "at": at(0)}
    telemetry_apply(events=[{**event, "error_code": "PowerSwitchFailure", "vendor_error_code": "E-42"}])

    [alert] = faulted(station)
    assert alert.connector is None
    assert "station reports Faulted: PowerSwitchFailure (vendor code E-42)" in alert.detail

    telemetry_apply(events=[{**event, "ts": at(5), "at": at(5), "status": "Available"}])
    alert.refresh_from_db()
    assert alert.cleared_at is not None


def test_the_fault_is_emailed_once_to_the_sites_energy_manager(station) -> None:
    User.objects.create_user(email="em.fault@alpha.example", password="x-pass-2026-long", role=Role.ENERGY_MANAGER)

    telemetry_apply(events=[status(0, "Faulted", error_code="GroundFailure")])
    telemetry_apply(events=[status(10, "Faulted", error_code="GroundFailure")])

    [mail] = EmailDelivery.objects.filter(email="em.fault@alpha.example")
    assert "Charger faulted" in mail.event.subject
    assert station.site.name in mail.event.subject


def test_16_status_faulted_hands_over_its_error_and_vendor_codes_and_connector_0_as_station_status() -> None:
    h = Harness(ChargePoint16, "1.6")

    h.feed(
        '[2,"1","StatusNotification",{"connectorId":1,"errorCode":"GroundFailure","status":"Faulted",'
        '"vendorErrorCode":"GF-7"}]',
        '[2,"2","StatusNotification",{"connectorId":0,"errorCode":"PowerSwitchFailure","status":"Faulted"}]',
    )

    connector, whole = h.events
    assert (connector["type"], connector["status"], connector["error_code"]) == ("status", "Faulted", "GroundFailure")
    assert connector["vendor_error_code"] == "GF-7"
    assert (whole["type"], whole["status"], whole["error_code"]) == ("station_status", "Faulted", "PowerSwitchFailure")


def test_201_status_faulted_is_handed_over_for_its_evse() -> None:
    h = Harness(ChargePoint201, "2.0.1")

    h.feed(
        '[2,"1","StatusNotification",{"timestamp":"2026-05-01T09:00:00Z","connectorStatus":"Faulted",'
        '"evseId":2,"connectorId":1}]'
    )

    [event] = h.events
    assert (event["type"], event["connector"], event["status"]) == ("status", 2, "Faulted")
