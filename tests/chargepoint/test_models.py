"""Database constraints: what cannot be true is refused by PostgreSQL itself."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction

from chargepoint.models import MeterReading
from chargepoint.partitions import partitions_ensure
from tests.factories import (
    ChargingSessionFactory,
    ChargingStationFactory,
    CircuitFactory,
    ConnectorFactory,
    MeterReadingFactory,
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
    ConnectorFactory(station=station)
    first = MeterReadingFactory(station=station, connector_no=1)
    MeterReadingFactory(station=station, connector_no=0)

    assert refused(MeterReadingFactory, station=station, connector_no=1)
    assert refused(MeterReadingFactory, station=station, connector_no=0, current_l1_a=16.0)
    assert not refused(
        MeterReadingFactory, station=station, connector_no=0, sampled_at=first.sampled_at + timedelta(seconds=1)
    )
    assert MeterReading.objects.filter(station=station).count() == 3


def test_a_connector_number_cannot_be_negative() -> None:
    assert refused(MeterReadingFactory, connector_no=-1)


def test_deleting_a_station_deletes_its_readings_in_the_database() -> None:
    """The reference is the database's (ON DELETE CASCADE): Django's collector never loads them."""
    station = ChargingStationFactory()
    kept = ChargingStationFactory()
    MeterReadingFactory(station=station)
    MeterReadingFactory(station=kept)

    station.delete()

    left = MeterReading.objects.filter(station_id__in=[station.pk, kept.pk])
    assert list(left.values_list("station_id", flat=True)) == [kept.pk]


def test_a_reading_of_a_station_that_does_not_exist_is_refused() -> None:
    """The station reference is checked at commit (deferred); made immediate here to see it."""
    at = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
    partitions_ensure(at, at)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    with pytest.raises(IntegrityError), transaction.atomic():
        MeterReading.objects.create(station_id=987_654_321, sampled_at=at, connector_no=1, energy_wh=1.0)
