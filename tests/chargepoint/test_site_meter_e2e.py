"""An OCPP site meter end to end: a real gateway, RabbitMQ, the telemetry worker, PostgreSQL.

A meter identity (``is_site_meter``) sends MeterValues on connector 0 (1.6) / EVSE 0 (2.0.1);
the readings land as ``SiteMeterReading`` of its site, a bad one is dropped and the meter's
connection and the next reading are unharmed.
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context
from ocpp.messages import CallResult

from balancing.models import SiteMeterReading
from chargepoint.models import ChargingStation
from chargepoint.services import charger_register
from tenants.models import ChargePointIdentity
from tests.chargepoint.conftest import PASSWORD, SITE_SLUG, RunningGateway, roundtrip, wait_until, ws_connect

pytestmark = pytest.mark.django_db

METER_16 = "GWMETER16-1"
METER_201 = "GWMETER201-1"
E2E_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def meters(tenant, gw_fleet, django_db_blocker) -> Iterator[int]:
    """Two committed meter identities at the fleet's site; the site's id."""
    with django_db_blocker.unblock():
        for cp in (METER_16, METER_201):
            charger_register(
                tenant=tenant,
                site_slug=SITE_SLUG,
                charge_point_id=cp,
                password=PASSWORD,
                max_current_a=Decimal("63"),
                is_site_meter=True,
            )
        connection.set_schema_to_public()
    yield gw_fleet.site_id
    with django_db_blocker.unblock():
        with tenant_context(tenant):
            SiteMeterReading.objects.filter(site_id=gw_fleet.site_id).delete()
            ChargingStation.objects.filter(charge_point_id__in=[METER_16, METER_201]).delete()
        with schema_context(get_public_schema_name()):
            ChargePointIdentity.objects.filter(charge_point_id__in=[METER_16, METER_201]).delete()
        connection.set_schema_to_public()


def stamp(seconds_ago: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat(timespec="milliseconds")


def call(action: str, payload: dict[str, Any], uid: str) -> str:
    return json.dumps([2, uid, action, payload])


def send_frames(gateway: RunningGateway, cp: str, frames: list[str], subprotocol: str = "ocpp1.6") -> list[Any]:
    """Send the frames one after the other on one connection of ``cp``; the answers, in order."""

    async def send() -> list[Any]:
        ws = await ws_connect(gateway.url, cp, subprotocol=subprotocol)
        try:
            return [await roundtrip(ws, frame) for frame in frames]
        finally:
            await ws.close()

    return gateway.bg.run(send())


def readings(site_id: int, source: str = "ocpp") -> list[SiteMeterReading]:
    return list(SiteMeterReading.objects.filter(site_id=site_id, source=source).order_by("measured_at"))


def test_a_16_meter_on_connector_0_becomes_site_meter_readings(gateway, celery_worker, meters: int) -> None:
    bad_at, good_at = stamp(3), stamp(1)
    phases = [
        {"measurand": "Current.Import", "phase": f"L{n}", "unit": "A", "value": value}
        for n, value in ((1, "30.5"), (2, "28"), (3, "31.25"))
    ]
    frames = [
        call("BootNotification", {"chargePointVendor": "Meters Inc", "chargePointModel": "GridEye"}, "b1"),
        call(
            "MeterValues",
            {
                "connectorId": 0,
                "meterValue": [
                    {
                        "timestamp": bad_at,
                        "sampledValue": [{"measurand": "Power.Active.Import", "unit": "kW", "value": "9999"}],
                    }
                ],
            },
            "m1",
        ),
        call(
            "MeterValues",
            {
                "connectorId": 0,
                "meterValue": [
                    {
                        "timestamp": good_at,
                        "sampledValue": [
                            *phases,
                            {"measurand": "Power.Active.Import", "unit": "kW", "value": "20.9"},
                        ],
                    }
                ],
            },
            "m2",
        ),
    ]

    answers = send_frames(gateway, METER_16, frames)
    assert all(isinstance(a, CallResult) for a in answers), answers
    rows = wait_until(lambda: readings(meters), timeout=E2E_TIMEOUT_S, what="the site meter reading")
    assert len(rows) == 1
    assert rows[0].measured_at == datetime.fromisoformat(good_at)
    assert rows[0].current_a == [30.5, 28.0, 31.25]
    assert rows[0].power_kw == Decimal("20.90")
    assert ChargingStation.objects.get(charge_point_id=METER_16).vendor == "Meters Inc"


def test_a_201_meter_on_evse_0_becomes_a_site_meter_reading(gateway, celery_worker, meters: int) -> None:
    at = stamp(1)
    before = {r.pk for r in readings(meters)}
    frames = [
        call(
            "BootNotification", {"reason": "PowerUp", "chargingStation": {"model": "GridEye", "vendorName": "M"}}, "b"
        ),
        call(
            "MeterValues",
            {
                "evseId": 0,
                "meterValue": [
                    {
                        "timestamp": at,
                        "sampledValue": [
                            *[{"measurand": "Current.Import", "phase": f"L{n}-N", "value": 20 + n} for n in (1, 2, 3)],
                            {"measurand": "Power.Active.Import", "value": 15300.0},
                        ],
                    }
                ],
            },
            "m",
        ),
    ]

    answers = send_frames(gateway, METER_201, frames, subprotocol="ocpp2.0.1")
    assert all(isinstance(a, CallResult) for a in answers), answers
    row = wait_until(
        lambda: next((r for r in readings(meters) if r.pk not in before), None),
        timeout=E2E_TIMEOUT_S,
        what="the 2.0.1 site meter reading",
    )
    assert row.measured_at == datetime.fromisoformat(at)
    assert (row.current_a, row.power_kw) == ([21.0, 22.0, 23.0], Decimal("15.30"))
