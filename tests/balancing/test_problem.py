"""From rows to the engine's input: tree, phases, measurements, needs, offline reservations."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection

from balancing.engine import solve
from balancing.models import Circuit, ConnectorLimit, StationFailsafe
from balancing.problem import _recent_meter, build_problem, recent_readings_query
from chargepoint.models import ChargingSession
from chargepoint.partitions import partitions_ensure
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


def test_a_reading_is_its_highest_phase_and_one_implausible_phase_drops_the_whole_reading(garage, plug_in) -> None:
    connector = plug_in(garage, "CP-1", max_a="16")
    meter_draw(connector, NOW - timedelta(seconds=20), 8.0, current_l2_a=15.5)  # L1 and L3 8 A, L2 15.5 A
    # 10 s later L2 reads 30 A (over 1.5 x 16 A): the reading is dropped, its 10 A phases with it.
    meter_draw(connector, NOW - timedelta(seconds=10), 10.0, current_l2_a=30.0)

    built = build_problem(garage, NOW)

    assert built.evses["CP-1/1"].measured_a == 15.5
    assert built.chargers_a == [15.5, 15.5, 15.5]


def test_recent_meter_reads_the_last_readings_draws_and_register_of_each_connector(garage, plug_in, settings) -> None:
    settings.BALANCING_OVERDRAW_READINGS = 3
    reader, dozer, broken = (plug_in(garage, cp, max_a="16") for cp in ("CP-R", "CP-D", "CP-B"))
    for seconds, amps, register in (
        (-150, 5.0, 900.0),  # older than the two minutes: nothing
        (-100, 10.0, 1000.0),
        (-60, 12.0, None),
        (-40, 30.0, None),  # implausible: not a reading (but a draw)
        (-30, 0.5, None),
        (5, 11.0, None),  # 5 s ahead of the clock: within the skew
        (30, 9.0, None),  # 30 s ahead: not trusted
    ):
        meter_draw(reader, NOW + timedelta(seconds=seconds), amps, energy_wh=register)
    MeterReadingFactory(
        station=reader.station, connector_no=1, sampled_at=NOW - timedelta(seconds=20), energy_wh=2000.0
    )
    for seconds, amps in ((-150, 9.0), (-90, 3.0), (-30, 0.5), (-10, 0.2)):
        meter_draw(dozer, NOW + timedelta(seconds=seconds), amps, energy_wh=500.0 if seconds == -150 else None)
    meter_draw(broken, NOW - timedelta(seconds=50), 30.0)
    meter_draw(broken, NOW - timedelta(seconds=10), 0.0)
    connectors = [reader, dozer, broken]

    recent = _recent_meter(connectors, {c.pk: 16.0 for c in connectors}, NOW, keep=3)

    def readings(connector):
        return [((r.at - NOW).total_seconds(), r.current_a) for r in recent.readings[connector.pk]]

    assert readings(reader) == [(5.0, 11.0), (-30.0, 0.5), (-60.0, 12.0)]  # newest first, the implausible skipped
    assert readings(dozer) == [(-10.0, 0.2), (-30.0, 0.5), (-90.0, 3.0)]
    assert readings(broken) == [(-10.0, 0.0)]
    assert recent.last_draws == {
        reader.pk: NOW + timedelta(seconds=5),
        dozer.pk: NOW - timedelta(seconds=90),  # at least 1 A
        broken.pk: NOW - timedelta(seconds=50),  # an implausible current is still a current
    }
    assert recent.registers_wh == {reader.pk: 2000.0}  # dozer's only register is too old


def test_an_implausible_reading_between_two_over_the_limit_does_not_hide_an_overdraw(garage, plug_in) -> None:
    connector = plug_in(garage, "CP-1", max_a="32")
    book(connector, "9", confirmed_ago=timedelta(minutes=10))
    meter_draw(connector, NOW - timedelta(seconds=30), 16.0)
    meter_draw(connector, NOW - timedelta(seconds=20), 60.0)  # a broken reading (over 1.5 x 32 A)
    meter_draw(connector, NOW - timedelta(seconds=10), 16.0)

    ctx = build_problem(garage, NOW).evses["CP-1/1"]

    # The last two plausible readings are over 9 A + 1 A: the broken one in between is skipped.
    assert ctx.overdraw
    assert [(r.at, r.current_a) for r in ctx.overdraw_readings] == [
        (NOW - timedelta(seconds=10), 16.0),
        (NOW - timedelta(seconds=30), 16.0),
    ]
    assert ctx.fixed_a == 16.0


def test_currents_and_registers_a_charger_reports_at_its_inlet_are_its_draw(garage, plug_in) -> None:
    from chargepoint.telemetry import telemetry_apply

    connector = plug_in(garage, "CP-IN", max_a="32")
    session = connector.sessions.get()
    at = (NOW - timedelta(seconds=10)).isoformat()
    samples = [
        {"at": at, "measurand": "Current.Import", "phase": phase, "location": "Inlet", "value": amps, "unit": "A"}
        for phase, amps in (("L1", "14.2"), ("L2", "15.1"), ("L3", "14.8"))
    ]
    samples.append(
        {"at": at, "measurand": "Energy.Active.Import.Register", "location": "Inlet", "value": "7250", "unit": "Wh"}
    )
    event = {"type": "meter", "cp": "CP-IN", "ts": at, "connector": 1, "transaction_id": session.transaction_id}
    assert telemetry_apply(events=[{**event, "samples": samples}]).applied == 1

    built = build_problem(garage, NOW)

    assert built.evses["CP-IN/1"].measured_a == 15.1
    assert built.chargers_a == [15.1, 15.1, 15.1]
    assert evse(built.problem, "CP-IN/1")["session_kwh"] == 7.25


@pytest.mark.parametrize(
    ("now", "months"),
    [(NOW, ["2026_05"]), (datetime(2026, 6, 1, 0, 0, 30, tzinfo=UTC), ["2026_05", "2026_06"])],
)
def test_the_recent_readings_are_an_index_range_of_the_current_months_partition(garage, plug_in, now, months) -> None:
    stations = [plug_in(garage, f"CP-{n}").station_id for n in range(3)]
    partitions_ensure(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC))
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # tiny test tables: show the plan an index gives

    plan = recent_readings_query(stations, now).explain()

    scanned = sorted(set(re.findall(r"chargepoint_meterreading_p(\d{4}_\d{2})", plan)))
    assert scanned == months, plan  # the months before and after are pruned when the plan is made
    assert "Seq Scan" not in plan, plan
    assert "Index" in plan, plan
