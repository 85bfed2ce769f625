"""Limits a charger reports that someone else set (OCPP 2.0.1 NotifyChargingLimit) bind the balancer."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from balancing.problem import build_problem
from chargepoint.models import ChargingSession, Connector
from chargepoint.ocpp201 import ChargePoint201
from chargepoint.telemetry import telemetry_apply
from tests.chargepoint.test_handlers import Harness
from tests.factories import ChargingStationFactory, ConnectorFactory, SiteFactory

NOW = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def test_notify_and_cleared_charging_limit_are_answered_and_handed_over() -> None:
    h = Harness(ChargePoint201, "2.0.1")

    sent = h.feed(
        '[2,"1","NotifyChargingLimit",{"evseId":1,"chargingLimit":{"chargingLimitSource":"EMS"},'
        '"chargingSchedule":[{"id":1,"chargingRateUnit":"A","chargingSchedulePeriod":[{"startPeriod":0,"limit":10.5}]}]}]',
        '[2,"2","NotifyChargingLimit",{"chargingLimit":{"chargingLimitSource":"SO"},'
        '"chargingSchedule":[{"id":2,"chargingRateUnit":"W","chargingSchedulePeriod":'
        '[{"startPeriod":0,"limit":6900,"numberPhases":3}]}]}]',
        '[2,"3","ClearedChargingLimit",{"chargingLimitSource":"EMS","evseId":1}]',
    )

    assert [f[0] for f in sent] == [3, 3, 3]
    limits = [e for e in h.events if e["type"] == "limit"]
    assert [(e["connector"], e["limit_a"], e["source"]) for e in limits] == [
        (1, "10.5", "EMS"),
        (0, "10.0", "SO"),
        (1, None, "EMS"),
    ]


def test_a_bad_limit_gets_a_call_error_and_nothing_is_handed_over() -> None:
    h = Harness(ChargePoint201, "2.0.1")
    sent = h.feed(
        '[2,"1","NotifyChargingLimit",{"evseId":1,"chargingLimit":{"chargingLimitSource":"EMS"},'
        '"chargingSchedule":[{"id":1,"chargingRateUnit":"A","chargingSchedulePeriod":[{"startPeriod":0,"limit":-4}]}]}]'
    )
    assert sent[0][0] == 4
    assert not [e for e in h.events if e["type"] == "limit"]


@pytest.mark.django_db
def test_a_reported_limit_caps_the_evse_and_a_cleared_one_frees_it() -> None:
    site = SiteFactory(slug="lim", limit_a=Decimal("63"))
    station = ChargingStationFactory(charge_point_id="LIM-1", site=site, max_current_a=Decimal("32"), is_online=True)
    connector = ConnectorFactory(station=station, connector_id=1, status="Charging")
    ChargingSession.objects.create(
        station=station, connector=connector, transaction_id="1", started_at=NOW, meter_start_wh=Decimal(0)
    )

    def evse_max() -> tuple[float, bool]:
        evse = build_problem(site, NOW).problem["evses"][0]
        return evse["max_a"], evse["active"]

    telemetry_apply(
        events=[
            {"type": "limit", "cp": "LIM-1", "ts": NOW.isoformat(), "connector": 1, "limit_a": "10.5", "source": "EMS"}
        ]
    )
    assert Connector.objects.get(pk=connector.pk).external_limit_source == "EMS"
    assert evse_max() == (10.5, True)

    telemetry_apply(
        events=[{"type": "limit", "cp": "LIM-1", "ts": NOW.isoformat(), "connector": 0, "limit_a": "3", "source": "SO"}]
    )
    assert evse_max() == (6.0, False)  # below the lowest pilot current: it can only pause

    telemetry_apply(
        events=[
            {"type": "limit", "cp": "LIM-1", "ts": NOW.isoformat(), "connector": 1, "limit_a": None, "source": "SO"}
        ]
    )
    assert evse_max() == (32.0, True)
