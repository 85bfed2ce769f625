"""The charger app's events reach the callbacks connected to them; without one, nothing happens."""

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from balancing import receivers
from balancing.dispatch import site_rebalance_request
from balancing.failsafe import site_failsafe_refresh
from balancing.meter import site_meter_record_samples
from chargepoint import listeners
from chargepoint.listeners import Event, event
from chargepoint.models import ChargingStation
from chargepoint.telemetry import telemetry_apply
from tests.factories import ChargingStationFactory, ConnectorFactory

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


@event
def charger_renamed(*, station_id: int, name: str) -> None:
    """A test event: its name and docstring come from this declaration."""


@pytest.fixture
def renamed() -> Iterator[Event]:
    """``charger_renamed`` without callbacks before and after the test."""
    for callback in charger_renamed.callbacks:
        charger_renamed.disconnect(callback)
    yield charger_renamed
    for callback in charger_renamed.callbacks:
        charger_renamed.disconnect(callback)


def test_an_event_is_named_and_documented_by_its_declaration() -> None:
    assert charger_renamed.name == "charger_renamed"
    assert charger_renamed.__doc__ == "A test event: its name and docstring come from this declaration."
    assert repr(listeners.site_inputs_changed).startswith("<Event site_inputs_changed: ")


def test_an_event_without_callbacks_does_nothing(renamed) -> None:
    assert renamed.callbacks == ()

    renamed.send(station_id=1, name="A")  # no error

    assert renamed.callbacks == ()


def test_every_connected_callback_gets_the_arguments_in_the_order_connected(renamed) -> None:
    calls: list[tuple[str, int, str]] = []

    def first(*, station_id: int, name: str) -> None:
        calls.append(("first", station_id, name))

    def second(*, station_id: int, name: str) -> str:  # a result is ignored
        calls.append(("second", station_id, name))
        return "ignored"

    renamed.connect(first)
    renamed.connect(second)
    renamed.send(station_id=7, name="Garage 1")
    renamed.send(station_id=8, name="Garage 2")

    assert calls == [
        ("first", 7, "Garage 1"),
        ("second", 7, "Garage 1"),
        ("first", 8, "Garage 2"),
        ("second", 8, "Garage 2"),
    ]


def test_a_callback_connected_twice_is_called_once_and_a_disconnected_one_no_more(renamed) -> None:
    calls: list[int] = []

    def note(*, station_id: int, name: str) -> None:
        calls.append(station_id)

    renamed.connect(note)
    renamed.connect(note)
    renamed.send(station_id=1, name="A")
    renamed.disconnect(note)
    renamed.disconnect(note)  # not connected any more: ignored
    renamed.send(station_id=2, name="B")

    assert calls == [1]
    assert renamed.callbacks == ()


def test_a_callbacks_error_reaches_the_sender_and_stops_the_later_callbacks(renamed) -> None:
    later: list[int] = []

    def refuse(*, station_id: int, name: str) -> None:
        raise ValueError(f"{name} refused")

    renamed.connect(refuse)
    renamed.connect(lambda *, station_id, name: later.append(station_id))

    with pytest.raises(ValueError, match="B refused"):
        renamed.send(station_id=2, name="B")
    assert later == []


def test_balancing_listens_to_every_event_of_the_charger_app() -> None:
    expected = {
        listeners.site_inputs_changed: site_rebalance_request,
        listeners.site_chargers_changed: site_failsafe_refresh,
        listeners.station_fault_raised: receivers.station_fault_raise,
        listeners.station_fault_cleared: receivers.station_fault_clear,
        listeners.meter_samples_arrived: site_meter_record_samples,
        listeners.station_reconnected: receivers.station_reconnected_resync,
    }
    declared = {value for value in vars(listeners).values() if isinstance(value, Event)}

    assert declared == set(expected)
    for each, callback in expected.items():
        assert callback in each.callbacks, each

    receivers.receivers_connect()  # again, as a second ready() would: nothing doubles
    assert all(len(each.callbacks) == 1 for each in expected)


@pytest.mark.django_db
def test_a_batch_sends_its_reconnect_and_its_rebalances_after_the_commit(
    monkeypatch, django_capture_on_commit_callbacks
) -> None:
    station: ChargingStation = ChargingStationFactory(charge_point_id="LST-1")
    ConnectorFactory(station=station, connector_id=1)
    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(listeners.station_reconnected, "_callbacks", [lambda **kw: sent.append(("reconnected", kw))])
    monkeypatch.setattr(listeners.site_inputs_changed, "_callbacks", [lambda **kw: sent.append(("inputs", kw))])

    def connected(seconds: int) -> dict:
        at = T0.replace(second=seconds).isoformat()
        return {"type": "connected", "cp": "LST-1", "ts": at, "connected_at": at, "gateway": "gw-a"}

    telemetry_apply(events=[connected(0)])  # the first connection: nothing to resync
    with django_capture_on_commit_callbacks(execute=True):
        telemetry_apply(events=[{**connected(5), "type": "disconnected", "connected_at": T0.isoformat()}])
        telemetry_apply(events=[connected(10)])
        assert [name for name, _ in sent] == ["reconnected"]  # the rebalances wait for the commit

    assert sent == [
        ("reconnected", {"station_id": station.pk}),
        ("inputs", {"site_id": station.site_id, "reason": "LST-1: offline"}),
        ("inputs", {"site_id": station.site_id, "reason": "LST-1: online"}),
    ]
