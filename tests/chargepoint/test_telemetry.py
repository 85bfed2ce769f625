"""Workers apply gateway batches idempotently and in time order, in the charger's tenant schema."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from balancing.models import ConnectorLimit
from chargepoint.liveness import stations_offline_sweep
from chargepoint.models import ChargingSession, ChargingStation, Connector, MeterReading
from chargepoint.telemetry import telemetry_apply, transaction_id_next
from tests.factories import ChargingStationFactory, ConnectorFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def event(kind: str, cp: str, seconds: float, **fields) -> dict:
    return {"type": kind, "cp": cp, "ts": at(seconds), **fields}


def sample(seconds: float, measurand: str, value: str, unit: str, phase: str = "") -> dict:
    return {
        "at": at(seconds),
        "measurand": measurand,
        "phase": phase,
        "location": "",
        "context": "",
        "value": value,
        "unit": unit,
    }


@pytest.fixture
def station() -> ChargingStation:
    station = ChargingStationFactory(charge_point_id="TEL-1")
    ConnectorFactory(station=station, connector_id=1)
    return station


def session_batch(cp: str = "TEL-1") -> list[dict]:
    return [
        event("connected", cp, 0, connected_at=at(0), ocpp_version="1.6", gateway="gw-a"),
        event(
            "boot",
            cp,
            1,
            vendor="ACME",
            model="Wallbox",
            serial_number="S1",
            firmware_version="1.0",
            ocpp_version="1.6",
        ),
        event("status", cp, 2, connector=1, status="Preparing", error_code="", at=at(2)),
        event("start", cp, 3, connector=1, transaction_id="41", id_tag="TAG", meter_start_wh="1000", at=at(3)),
        event("status", cp, 3, connector=1, status="Charging", error_code="", at=at(3)),
        event(
            "meter",
            cp,
            13,
            connector=1,
            transaction_id="41",
            samples=[
                sample(13, "Current.Import", "10.4", "A", "L1"),
                sample(13, "Energy.Active.Import.Register", "1020", "Wh"),
            ],
        ),
    ]


def test_a_batch_records_boot_status_session_and_samples(station) -> None:
    outcome = telemetry_apply(events=session_batch())

    station.refresh_from_db()
    assert (station.vendor, station.model, station.ocpp_version, station.is_online) == ("ACME", "Wallbox", "1.6", True)
    assert station.last_seen_at == T0 + timedelta(seconds=13)
    assert Connector.objects.get(station=station).status == "Charging"
    session = ChargingSession.objects.get(station=station)
    assert (session.transaction_id, session.meter_start_wh, session.stopped_at) == ("41", Decimal("1000"), None)
    reading = MeterReading.objects.get(session=session)  # the two values of one instant: one row
    assert (reading.connector_no, reading.current_l1_a, reading.energy_wh) == (1, 10.4, 1020.0)
    assert outcome.applied == 6
    assert outcome.samples == 2
    assert station.site_id in outcome.rebalance


def test_the_same_batch_twice_changes_nothing(station) -> None:
    telemetry_apply(events=session_batch())
    again = telemetry_apply(events=session_batch())

    assert ChargingSession.objects.filter(station=station).count() == 1
    assert MeterReading.objects.filter(station=station).count() == 1
    assert again.skipped == 0


def test_a_stop_closes_the_session_with_its_energy_and_later_samples_need_no_session(station) -> None:
    telemetry_apply(events=session_batch())
    telemetry_apply(
        events=[
            event("stop", "TEL-1", 100, transaction_id="41", meter_stop_wh="8200", at=at(100), reason="EVDisconnected"),
            event("status", "TEL-1", 101, connector=1, status="Available", error_code="", at=at(101)),
            event(
                "meter", "TEL-1", 110, connector=1, transaction_id=None, samples=[sample(110, "Voltage", "230", "V")]
            ),
        ]
    )

    session = ChargingSession.objects.get(station=station)
    assert session.stopped_at == T0 + timedelta(seconds=100)
    assert session.energy_kwh == Decimal("7.200")
    assert session.stop_reason == "EVDisconnected"
    assert MeterReading.objects.get(voltage_v__isnull=False).session is None


def test_an_older_status_does_not_overwrite_a_newer_one(station) -> None:
    telemetry_apply(events=[event("status", "TEL-1", 50, connector=1, status="Charging", error_code="", at=at(50))])
    telemetry_apply(events=[event("status", "TEL-1", 51, connector=1, status="Preparing", error_code="", at=at(40))])

    assert Connector.objects.get(station=station).status == "Charging"


def test_the_old_connection_going_away_does_not_take_a_reconnected_charger_offline(station) -> None:
    telemetry_apply(
        events=[
            event("connected", "TEL-1", 0, connected_at=at(0), ocpp_version="1.6", gateway="gw-a"),
            event("connected", "TEL-1", 30, connected_at=at(30), ocpp_version="1.6", gateway="gw-b"),
            event("disconnected", "TEL-1", 31, connected_at=at(0), reason="replaced"),
        ]
    )
    station.refresh_from_db()
    assert station.is_online

    outcome = telemetry_apply(events=[event("disconnected", "TEL-1", 90, connected_at=at(30), reason="lost")])
    station.refresh_from_db()
    assert not station.is_online
    assert "offline" in outcome.rebalance[station.site_id]


def test_a_new_transaction_on_a_busy_connector_closes_the_forgotten_one(station) -> None:
    telemetry_apply(events=session_batch())
    telemetry_apply(
        events=[
            event(
                "start", "TEL-1", 500, connector=1, transaction_id="42", id_tag="T", meter_start_wh="9000", at=at(500)
            )
        ]
    )

    old, new = ChargingSession.objects.filter(station=station).order_by("started_at")
    assert old.stop_reason == "Superseded"
    assert new.stopped_at is None


def test_charging_needs_go_to_the_open_session_clamped(station) -> None:
    telemetry_apply(events=session_batch())
    telemetry_apply(
        events=[
            event(
                "needs",
                "TEL-1",
                20,
                connector=1,
                departure_at=at(3600),
                energy_needed_kwh="24.5",
                ev_max_current_a="5000",
            )
        ]
    )

    session = ChargingSession.objects.get(station=station)
    assert session.departure_at == T0 + timedelta(hours=1)
    assert session.energy_needed_kwh == Decimal("24.500")
    assert session.ev_max_current_a == Decimal("1000")


def test_unknown_chargers_and_broken_events_are_skipped_without_losing_the_rest(station) -> None:
    outcome = telemetry_apply(
        events=[
            event("seen", "SOMEONE-ELSE", 1),
            event("status", "TEL-1", 2, connector=1, status="Charging", error_code="", at="not a time"),
            event("teleport", "TEL-1", 3),
            event("status", "TEL-1", 4, connector=1, status="Faulted", error_code="GroundFailure", at=at(4)),
        ]
    )

    assert outcome.skipped == 3
    assert outcome.applied == 1
    connector = Connector.objects.get(station=station)
    assert (connector.status, connector.error_code) == ("Faulted", "GroundFailure")


def test_a_connector_the_charger_reports_but_was_not_registered_is_added(station) -> None:
    telemetry_apply(events=[event("status", "TEL-1", 2, connector=2, status="Available", error_code="", at=at(2))])

    assert Connector.objects.filter(station=station, connector_id=2, status="Available").exists()


def test_transaction_ids_come_from_a_durable_sequence_and_never_repeat() -> None:
    first, second = transaction_id_next(), transaction_id_next()

    assert second > first > 0


def test_silent_chargers_are_taken_offline_by_the_sweep(station) -> None:
    telemetry_apply(events=[event("connected", "TEL-1", 0, connected_at=at(0), ocpp_version="1.6", gateway="gw")])

    outcome = stations_offline_sweep(now=T0 + timedelta(hours=1), stale_after=timedelta(minutes=15))

    station.refresh_from_db()
    assert not station.is_online
    assert outcome.applied == 1


def test_readings_that_cannot_be_true_are_refused_by_name_and_never_stored(station, caplog) -> None:
    telemetry_apply(events=session_batch())
    ahead = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    bad = [
        sample(20, "Current.Import", "-500", "A", "L1"),
        sample(20, "Energy.Active.Import.Register", "-1000000000000", "Wh"),
        sample(20, "Current.Import", "900", "A", "L2"),  # the station is rated 32 A
        {**sample(20, "Current.Import", "12", "A", "L3"), "at": ahead},
    ]
    good = sample(20, "Current.Import", "10.0", "A", "L1")

    with caplog.at_level("WARNING", logger="chargepoint.telemetry"):
        telemetry_apply(events=[event("meter", "TEL-1", 20, connector=1, transaction_id="41", samples=[*bad, good])])

    stored = MeterReading.objects.get(sampled_at=T0 + timedelta(seconds=20))
    assert (stored.current_l1_a, stored.current_l2_a, stored.current_l3_a, stored.energy_wh) == (10.0, None, None, None)
    refusals = [r.getMessage() for r in caplog.records if "reading refused" in r.getMessage()]
    assert len(refusals) == 4
    assert "TEL-1: reading refused, never used: Current.Import -500 A on connector 1" in refusals[0]
    assert refusals[0].endswith(": negative")
    assert refusals[2].endswith("above 2x the station's rating of 32.0 A")
    assert "in the future" in refusals[3]


def test_readings_are_checked_against_the_books_with_one_query_per_batch(station) -> None:
    telemetry_apply(events=session_batch())
    second = ConnectorFactory(station=station, connector_id=2)
    telemetry_apply(
        events=[event("start", "TEL-1", 4, connector=2, transaction_id="77", id_tag="T", meter_start_wh="0", at=at(4))]
    )
    first = Connector.objects.get(station=station, connector_id=1)
    ConnectorLimit.objects.create(connector=first, limit_a=Decimal("9"), transaction_id="41")
    ConnectorLimit.objects.create(connector=second, limit_a=Decimal("9"), transaction_id="70")  # an older session's

    def meter(seconds: float, number: int, transaction_id: str, amps: str) -> dict:
        current = sample(seconds, "Current.Import", amps, "A", "L1")
        return event("meter", "TEL-1", seconds, connector=number, transaction_id=transaction_id, samples=[current])

    readings = [meter(20, 2, "77", "30"), meter(20, 1, "41", "9.5"), meter(30, 1, "41", "12"), meter(40, 1, "41", "11")]
    with CaptureQueriesContext(connection) as queries:
        outcome = telemetry_apply(events=readings)

    assert outcome.rebalance == {station.site_id: "TEL-1: connector 1 draws 12.0 A over 9 A"}
    assert outcome.samples == 4
    assert sum("balancing_connectorlimit" in q["sql"] for q in queries.captured_queries) == 1
