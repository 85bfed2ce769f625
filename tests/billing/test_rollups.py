"""Register readings -> 15-minute interval energy: gaps, late and out-of-order readings,
duplicates, register resets and meter swaps; pure and through the rollup service."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing.models import IntervalEnergy, RollupCursor, SessionDraw
from billing.rollups import register_to_intervals
from billing.services import intervals_rebuild, intervals_roll_up
from chargepoint.models import ChargingSession, ChargingStation, Connector, MeterSample
from tests.factories import SiteFactory

T0 = datetime(2026, 10, 5, 17, 0, tzinfo=UTC)
RATING_KW = Decimal("7.68")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_energy_between_readings_is_spread_evenly_over_the_intervals_it_spans() -> None:
    # 0 Wh at 17:10, 3000 Wh at 17:40: 3 kWh over 30 minutes = 0.5 kWh per 5 minutes.
    rollup = register_to_intervals([(at(10), Decimal(0)), (at(40), Decimal(3000))], max_power_kw=RATING_KW)
    assert rollup.intervals_kwh == {at(0): Decimal("0.5"), at(15): Decimal("1.5"), at(30): Decimal("1.0")}
    assert rollup.resets == {}


def test_a_gap_keeps_its_energy() -> None:
    # No reading for two hours at 3 kW: 6 kWh spread over the eight intervals of the gap.
    rollup = register_to_intervals([(at(0), Decimal(1000)), (at(120), Decimal(7000))], max_power_kw=RATING_KW)
    assert sum(rollup.intervals_kwh.values()) == Decimal(6)
    assert set(rollup.intervals_kwh.values()) == {Decimal("0.75")}


def test_out_of_order_and_duplicate_readings_give_the_same_intervals() -> None:
    ordered = [(at(m), Decimal(m * 100)) for m in range(0, 46, 5)]
    shuffled = [ordered[3], ordered[0], ordered[9], ordered[3], ordered[5], *ordered]

    assert register_to_intervals(shuffled, max_power_kw=RATING_KW) == register_to_intervals(
        ordered, max_power_kw=RATING_KW
    )


def test_a_register_reset_counts_the_new_value_from_zero() -> None:
    readings = [(at(0), Decimal(50_000)), (at(5), Decimal(50_500)), (at(10), Decimal(51_000)), (at(20), Decimal(300))]

    rollup = register_to_intervals(readings, max_power_kw=RATING_KW)

    # 1 kWh in 17:00-17:10, then the reset pair: 0.3 kWh over 17:10-17:20, half in each interval.
    assert rollup.intervals_kwh == {at(0): Decimal("1.15"), at(15): Decimal("0.15")}
    assert rollup.resets == {at(15): 1}


def test_a_meter_swap_to_a_foreign_start_value_adds_nothing_for_that_gap() -> None:
    readings = [
        (at(0), Decimal(1000)),
        (at(5), Decimal(1500)),
        (at(10), Decimal(9_000_000)),
        (at(15), Decimal(9_000_400)),
    ]

    rollup = register_to_intervals(readings, max_power_kw=RATING_KW)

    assert rollup.intervals_kwh == {at(0): Decimal("0.5"), at(15): Decimal("0.4")} or rollup.intervals_kwh == {
        at(0): Decimal("0.9")
    }
    assert sum(rollup.intervals_kwh.values()) == Decimal("0.9")
    assert rollup.resets == {at(0): 1}


# --- through the database --------------------------------------------------------------------


@pytest.fixture
def station(db) -> ChargingStation:
    site = SiteFactory(slug="rollup-site", timezone="America/Los_Angeles", voltage_v=Decimal(240), phases=1)
    return ChargingStation.objects.create(
        charge_point_id="ROLL-1", site=site, max_current_a=Decimal(32), phases=1, wiring="L1"
    )


def register(station: ChargingStation, connector: Connector | None, minutes: float, wh: int, **kw) -> MeterSample:
    return MeterSample.objects.create(
        station=station,
        connector=connector,
        sampled_at=at(minutes),
        measurand="Energy.Active.Import.Register",
        value=Decimal(wh),
        unit="Wh",
        **kw,
    )


def intervals(station: ChargingStation, *, site_total: bool = False) -> dict[datetime, Decimal]:
    rows = IntervalEnergy.objects.filter(site=station.site)
    rows = rows.filter(station__isnull=True) if site_total else rows.filter(station=station)
    return {r.start: r.energy_kwh for r in rows}


def test_the_rollup_builds_station_and_site_intervals(station) -> None:
    connector = Connector.objects.create(station=station, connector_id=1)
    for minutes, wh in [(0, 0), (15, 1000), (30, 2000), (45, 2500)]:
        register(station, connector, minutes, wh)

    outcome = intervals_roll_up()

    assert outcome.samples == 4
    assert intervals(station) == {at(0): Decimal(1), at(15): Decimal(1), at(30): Decimal("0.5")}
    assert intervals(station, site_total=True) == intervals(station)
    assert RollupCursor.objects.get().last_sample_id == MeterSample.objects.latest("id").pk


def test_a_late_reading_recomputes_the_intervals_it_touches_and_no_others(station) -> None:
    connector = Connector.objects.create(station=station, connector_id=1)
    for minutes, wh in [(0, 0), (30, 2000), (60, 2000)]:
        register(station, connector, minutes, wh)
    intervals_roll_up()
    assert intervals(station) == {at(0): Decimal(1), at(15): Decimal(1)}

    register(station, connector, 15, 1500)  # arrives late: most of the energy was in the first interval
    second = intervals_roll_up()

    assert second.samples == 1
    assert intervals(station) == {at(0): Decimal("1.5"), at(15): Decimal("0.5")}
    assert intervals(station, site_total=True) == {at(0): Decimal("1.5"), at(15): Decimal("0.5")}


def test_a_batch_that_commits_after_a_later_one_is_not_lost(station) -> None:
    connector = Connector.objects.create(station=station, connector_id=1)
    register(station, connector, 0, 0)
    in_flight = register(station, connector, 15, 1200)  # its id is taken, its commit comes late
    register(station, connector, 30, 2000)
    late_id = in_flight.pk
    in_flight.delete()
    intervals_roll_up()
    assert intervals(station) == {at(0): Decimal(1), at(15): Decimal(1)}

    MeterSample.objects.create(  # now it commits, below the cursor
        id=late_id,
        station=station,
        connector=connector,
        sampled_at=at(15),
        measurand="Energy.Active.Import.Register",
        value=Decimal(1200),
        unit="Wh",
    )
    intervals_roll_up()

    assert intervals(station) == {at(0): Decimal("1.2"), at(15): Decimal("0.8")}


def test_running_the_rollup_again_changes_nothing(station) -> None:
    connector = Connector.objects.create(station=station, connector_id=1)
    for minutes, wh in [(0, 0), (15, 1000)]:
        register(station, connector, minutes, wh)
    intervals_roll_up()
    before = intervals(station, site_total=True)

    assert intervals_roll_up().samples == 0
    intervals_rebuild(site=station.site, start=at(-60), end=at(60))

    assert intervals(station, site_total=True) == before == {at(0): Decimal(1)}


def test_the_main_meter_and_the_outlet_register_count_once(station) -> None:
    connector = Connector.objects.create(station=station, connector_id=1)
    for minutes, wh in [(0, 0), (15, 1000)]:
        register(station, connector, minutes, wh)
        register(station, None, minutes, 80_000 + wh)  # the station's own meter (connectorId 0)

    intervals_roll_up()

    assert intervals(station, site_total=True) == {at(0): Decimal(1)}


def test_a_register_reset_is_recorded_on_the_interval(station) -> None:
    connector = Connector.objects.create(station=station, connector_id=1)
    for minutes, wh in [(0, 40_000), (15, 41_000), (20, 200)]:
        register(station, connector, minutes, wh)

    intervals_roll_up()

    row = IntervalEnergy.objects.get(site=station.site, station__isnull=True, start=at(15))
    assert row.resets == 1
    assert row.energy_kwh == Decimal("0.2")


def test_session_draw_takes_the_highest_draw_below_the_limit_in_force(station) -> None:
    from balancing.models import BalancingRun, ProfilePush

    connector = Connector.objects.create(station=station, connector_id=1)
    session = ChargingSession.objects.create(
        station=station, connector=connector, transaction_id="7", started_at=at(0), meter_start_wh=Decimal(1000)
    )
    run = BalancingRun.objects.create(site=station.site, reason="t", started_at=at(0), inputs_digest="x", problem={})
    # At 17:20 a 10 A limit (2.4 kW) is accepted: the car is held from then on.
    ProfilePush.objects.create(
        run=run,
        station=station,
        connector=connector,
        kind="lower",
        new_limit_a=Decimal(10),
        payload={},
        status="Accepted",
        sent_at=at(20),
        answered_at=at(20),
    )
    for minutes, watts in [(5, 6600), (10, 6650), (25, 2400), (30, 2390)]:
        MeterSample.objects.create(
            station=station,
            connector=connector,
            session=session,
            sampled_at=at(minutes),
            measurand="Power.Active.Import",
            value=Decimal(watts),
            unit="W",
        )
    register(station, connector, 30, 4000, session=session)

    intervals_roll_up()

    draw = SessionDraw.objects.get(session=session)
    assert draw.observed_max_kw == Decimal("6.650")  # not the 2.4 kW it was held at
    assert draw.was_capped is True
    assert draw.register_energy_kwh == Decimal("3.000")
