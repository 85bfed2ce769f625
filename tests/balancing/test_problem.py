"""From rows to the engine's input: tree, phases, measurements, needs, offline reservations."""

from datetime import timedelta
from decimal import Decimal

import pytest

from balancing.engine import solve
from balancing.models import Circuit, ConnectorLimit, StationFailsafe
from balancing.problem import build_problem
from chargepoint.models import ChargingSession
from tests.balancing.conftest import NOW, meter_draw
from tests.factories import MeterReadingFactory

pytestmark = pytest.mark.django_db


def evse(problem: dict, evse_id: str) -> dict:
    return next(e for e in problem["evses"] if e["id"] == evse_id)


def node(problem: dict, node_id: str) -> dict:
    return next(n for n in problem["nodes"] if n["id"] == node_id)


def test_the_tree_and_the_site_limits_become_nodes(garage) -> None:
    panel = garage.circuits.get()
    Circuit.objects.create(site=garage, name="Row 1", parent=panel, limit_a=Decimal("32"), limit_kw=Decimal("11"))

    problem = build_problem(garage, NOW).problem

    assert node(problem, "site") == {"id": "site", "parent": None, "limit_a": [63.0] * 3, "limit_kw": 20.0}
    row = next(n for n in problem["nodes"] if n["parent"] == f"circuit-{panel.pk}")
    assert row["limit_a"] == [32.0] * 3
    assert row["limit_kw"] == 11.0
    assert problem["voltage_v"] == 230.0


def book(connector, limit_a: str = "16", confirmed_ago: timedelta = timedelta(minutes=5)) -> None:
    ConnectorLimit.objects.create(
        connector=connector,
        limit_a=Decimal(limit_a),
        transaction_id=connector.sessions.get().transaction_id,
        confirmed_at=NOW - confirmed_ago,
        valid_until=NOW + timedelta(minutes=10),
    )


def test_each_connector_is_an_evse_on_its_site_phases(garage, plug_in) -> None:
    book(plug_in(garage, "CP-3PH", draw_a=15.5))
    plug_in(garage, "CP-L2", phases=1, wiring="L2", max_a="16")
    plug_in(garage, "CP-IDLE", session=False, status="Available")

    problem = build_problem(garage, NOW).problem

    three = evse(problem, "CP-3PH/1")
    assert (three["phases"], three["max_a"], three["min_a"], three["active"]) == (["L1", "L2", "L3"], 32.0, 6.0, True)
    assert three["measured_a"] == 15.5
    assert evse(problem, "CP-L2/1")["phases"] == ["L2"]
    assert evse(problem, "CP-IDLE/1")["active"] is False


def test_stale_readings_are_not_taken_as_the_present_draw(garage, plug_in) -> None:
    connector = plug_in(garage, "CP-1")
    meter_draw(connector, NOW - timedelta(minutes=10), 3.0)
    assert "measured_a" not in evse(build_problem(garage, NOW).problem, "CP-1/1")


def test_the_cars_needs_become_remaining_energy_and_departure(garage, plug_in) -> None:
    connector = plug_in(garage, "CP-1")
    session = ChargingSession.objects.get(connector=connector)
    session.energy_needed_kwh = Decimal("20")
    session.departure_at = NOW + timedelta(hours=4)
    session.ev_max_current_a = Decimal("16")
    session.save()
    MeterReadingFactory(
        station=connector.station, connector_no=1, sampled_at=NOW - timedelta(seconds=10), energy_wh=5000.0
    )

    item = evse(build_problem(garage, NOW).problem, "CP-1/1")

    assert item["ev_max_a"] == 16.0
    assert item["session_kwh"] == 5.0
    assert item["energy_needed_kwh"] == 15.0
    assert item["departure"] == (NOW + timedelta(hours=4)).isoformat()


def test_an_offline_charger_keeps_its_last_profile_reserved_as_a_fixed_current(garage, plug_in) -> None:
    connector = plug_in(garage, "CP-OFF", online=False)
    ConnectorLimit.objects.create(connector=connector, limit_a=Decimal("10"), valid_until=NOW + timedelta(minutes=5))

    built = build_problem(garage, NOW)

    assert "CP-OFF/1" not in built.evses  # nothing is pushed to it
    offline = evse(built.problem, "CP-OFF/1")
    assert (offline["fixed_a"], offline["active"], offline["phases"]) == (10.0, False, ["L1", "L2", "L3"])
    assert node(built.problem, "site")["limit_a"] == [63.0] * 3  # the engine books it, the limit stays
    assert built.reservations[0].why.startswith("offline: last profile")
    result = solve(built.problem)
    assert result["allocations_a"]["CP-OFF/1"] == 10.0
    assert result["node_load_kw"]["site"] == pytest.approx(3 * 10 * 230 / 1000)


def test_after_its_profile_expires_an_offline_charger_is_held_at_its_failsafe(garage, plug_in) -> None:
    connector = plug_in(garage, "CP-OFF", online=False, phases=1, wiring="L3")
    ConnectorLimit.objects.create(connector=connector, limit_a=Decimal("16"), valid_until=NOW - timedelta(minutes=1))
    StationFailsafe.objects.create(station=connector.station, limit_a=Decimal("6"), confirmed_at=NOW)

    built = build_problem(garage, NOW)

    offline = evse(built.problem, "CP-OFF/1")
    assert (offline["fixed_a"], offline["phases"]) == (6.0, ["L3"])
    assert "fail-safe" in built.reservations[0].why


def test_offline_reservations_that_alone_overload_a_limit_are_warned_about(garage, plug_in) -> None:
    for k in range(3):
        connector = plug_in(garage, f"CP-OFF{k}", online=False, max_a="32")
        ConnectorLimit.objects.create(
            connector=connector, limit_a=Decimal("32"), valid_until=NOW + timedelta(minutes=5)
        )
    plug_in(garage, "CP-ON", max_a="32")

    built = build_problem(garage, NOW)
    result = solve(built.problem)

    assert result["allocations_a"]["CP-ON/1"] == 0  # 96 A already booked on a 63 A connection
    assert any("overloaded by fixed currents alone" in w for w in result["warnings"])


def test_a_car_that_has_just_started_is_not_judged_by_its_zero_draw(garage, plug_in) -> None:
    fresh = plug_in(garage, "CP-NEW", draw_a=0.0)
    book(fresh, confirmed_ago=timedelta(seconds=20))
    plug_in(garage, "CP-UNBOOKED", draw_a=0.0)

    problem = build_problem(garage, NOW).problem

    assert "measured_a" not in evse(problem, "CP-NEW/1")
    assert "measured_a" not in evse(problem, "CP-UNBOOKED/1")


def test_a_new_session_does_not_inherit_the_last_ones_pause(garage, plug_in) -> None:
    connector = plug_in(garage, "CP-1")
    ConnectorLimit.objects.create(
        connector=connector,
        limit_a=Decimal("0"),
        transaction_id="an-old-session",
        paused_since=NOW,
        confirmed_at=NOW,
    )
    item = evse(build_problem(garage, NOW).problem, "CP-1/1")
    assert "paused_since" not in item


def test_a_site_that_raises_in_steps_says_how_far_per_run(garage) -> None:
    assert "max_raise_a" not in build_problem(garage, NOW).problem
    garage.max_raise_a = Decimal("4")
    garage.save()
    assert build_problem(garage, NOW).problem["max_raise_a"] == 4.0


def test_idle_connectors_are_booked_at_the_default_a_newcomer_starts_at(garage, plug_in) -> None:
    confirmed = plug_in(garage, "CP-SIX", session=False, status="Available")
    StationFailsafe.objects.create(station=confirmed.station, limit_a=Decimal("6"), confirmed_at=NOW)
    plug_in(garage, "CP-NEVER", max_a="16", session=False, status="Available")
    plug_in(garage, "CP-BROKEN", session=False, status="Faulted")

    problem = build_problem(garage, NOW).problem

    assert (evse(problem, "CP-SIX/1")["fixed_a"], evse(problem, "CP-SIX/1")["active"]) == (6.0, False)
    assert evse(problem, "CP-NEVER/1")["fixed_a"] == 16.0  # never confirmed a default: its rating
    assert "CP-BROKEN/1" not in [e["id"] for e in problem["evses"]]  # no car can start on it


def test_a_site_meter_identity_is_not_balanced(garage, plug_in) -> None:
    meter = plug_in(garage, "METER-1", session=False, status="Available")
    meter.station.is_site_meter = True
    meter.station.save()

    problem = build_problem(garage, NOW).problem

    assert [e["id"] for e in problem["evses"]] == []


def test_readings_from_the_future_or_beyond_the_rating_are_not_the_draw(garage, plug_in) -> None:
    connector = plug_in(garage, "CP-1", max_a="16")
    for seconds, amps in ((-20, 30.0), (60, 12.0)):  # 30 A > 1.5 x 16 A; 60 s ahead of the clock
        meter_draw(connector, NOW + timedelta(seconds=seconds), amps)

    built = build_problem(garage, NOW)

    assert built.evses["CP-1/1"].measured_a is None
    assert built.chargers_a == [0.0, 0.0, 0.0]

    # An older plausible reading is the draw then: only the bad ones are dropped.
    meter_draw(connector, NOW - timedelta(seconds=30), 11.0)
    built = build_problem(garage, NOW)
    assert built.evses["CP-1/1"].measured_a == 11.0
    assert built.chargers_a == [11.0, 11.0, 11.0]
