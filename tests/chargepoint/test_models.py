"""Database constraints: what cannot be true is refused by PostgreSQL itself."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from chargepoint.models import MeterSample
from tests.factories import (
    ChargingSessionFactory,
    ChargingStationFactory,
    CircuitFactory,
    ConnectorFactory,
    MeterSampleFactory,
    SiteFactory,
)

pytestmark = pytest.mark.django_db


def refused(factory, **kwargs) -> bool:
    try:
        with transaction.atomic():
            factory(**kwargs)
    except IntegrityError:
        return True
    return False


def test_limits_cannot_be_negative() -> None:
    assert refused(SiteFactory, limit_a=Decimal("-1"))
    assert refused(SiteFactory, demand_cap_kw=Decimal("-0.01"))
    assert refused(CircuitFactory, limit_a=Decimal("-1"))
    assert refused(ChargingStationFactory, max_current_a=Decimal("0"))
    assert not refused(SiteFactory, limit_a=Decimal("0"), demand_cap_kw=None)


def test_charger_identity_is_unique() -> None:
    ChargingStationFactory(charge_point_id="CP-1")
    assert refused(ChargingStationFactory, charge_point_id="CP-1")


def test_wiring_must_match_the_phase_count() -> None:
    assert refused(ChargingStationFactory, phases=1, wiring="L1L2L3")
    assert refused(ChargingStationFactory, phases=3, wiring="L2")
    assert not refused(ChargingStationFactory, phases=1, wiring="L3")


def test_one_open_session_per_connector() -> None:
    first = ChargingSessionFactory()
    connector = first.connector

    assert refused(ChargingSessionFactory, connector=connector, transaction_id="second")
    first.stopped_at = first.started_at + timedelta(hours=1)
    first.save()
    assert not refused(ChargingSessionFactory, connector=connector, transaction_id="second")


def test_a_session_cannot_stop_before_it_started() -> None:
    session = ChargingSessionFactory()
    assert refused(
        ChargingSessionFactory,
        connector=ConnectorFactory(station=session.station, connector_id=2),
        transaction_id="x",
        stopped_at=session.started_at - timedelta(seconds=1),
    )


def test_the_same_reading_is_stored_once_also_for_the_main_meter() -> None:
    station = ChargingStationFactory()
    connector = ConnectorFactory(station=station)
    MeterSampleFactory(station=station, connector=connector)
    MeterSampleFactory(station=station, connector=None)

    assert refused(MeterSampleFactory, station=station, connector=connector)
    assert refused(MeterSampleFactory, station=station, connector=None)
    assert not refused(MeterSampleFactory, station=station, connector=None, phase="L1")
    assert MeterSample.objects.filter(station=station).count() == 3
