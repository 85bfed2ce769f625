"""Register readings -> 15-minute interval energy: gaps, late and out-of-order readings,
duplicates, register resets and meter swaps; pure and through the rollup service (readings
stored as the ingest stores them, with the pending marks the rollup consumes)."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.interval_rollup import intervals_rebuild, intervals_roll_up
from billing.models import IntervalEnergy, SessionDraw
from billing.rollups import register_to_intervals
from chargepoint.models import ChargingSession, ChargingStation, Connector, MeterReading, RollupPending
from tests.billing.readings import readings_write
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


def register(
    station: ChargingStation,
    minutes: float,
    wh: float,
    *,
    connector_no: int = 1,
    session: ChargingSession | None = None,
) -> None:
    readings_write(station, [(at(minutes), {"energy_wh": wh})], connector_no=connector_no, session=session)


def intervals(station: ChargingStation, *, site_total: bool = False) -> dict[datetime, Decimal]:
    rows = IntervalEnergy.objects.filter(site=station.site)
    rows = rows.filter(station__isnull=True) if site_total else rows.filter(station=station)
    return {r.start: r.energy_kwh for r in rows}


def test_the_rollup_builds_station_and_site_intervals(station) -> None:
    for minutes, wh in [(0, 0), (15, 1000), (30, 2000), (45, 2500)]:
        register(station, minutes, wh)
    assert RollupPending.objects.filter(station=station).count() == 4  # one per interval with readings

    outcome = intervals_roll_up()

    assert outcome.marks == 4
    assert intervals(station) == {at(0): Decimal(1), at(15): Decimal(1), at(30): Decimal("0.5")}
    assert intervals(station, site_total=True) == intervals(station)
    assert not RollupPending.objects.exists()  # taken, so the next run reads nothing again


def test_a_late_reading_recomputes_the_intervals_it_touches_and_no_others(station) -> None:
    for minutes, wh in [(0, 0), (30, 2000), (60, 2000)]:
        register(station, minutes, wh)
    intervals_roll_up()
    assert intervals(station) == {at(0): Decimal(1), at(15): Decimal(1)}

    register(station, 15, 1500)  # arrives late: most of the energy was in the first interval
    second = intervals_roll_up()

    assert second.marks == 1
    assert intervals(station) == {at(0): Decimal("1.5"), at(15): Decimal("0.5")}
    assert intervals(station, site_total=True) == {at(0): Decimal("1.5"), at(15): Decimal("0.5")}


def test_running_the_rollup_again_changes_nothing(station) -> None:
    for minutes, wh in [(0, 0), (15, 1000)]:
        register(station, minutes, wh)
    intervals_roll_up()
    before = intervals(station, site_total=True)

    assert intervals_roll_up().marks == 0
    intervals_rebuild(site=station.site, start=at(-60), end=at(60))

    assert intervals(station, site_total=True) == before == {at(0): Decimal(1)}


def test_the_main_meter_and_the_outlet_register_count_once(station) -> None:
    for minutes, wh in [(0, 0), (15, 1000)]:
        register(station, minutes, wh)
        register(station, minutes, 80_000 + wh, connector_no=0)  # the station's own meter (connectorId 0)

    intervals_roll_up()

    assert intervals(station, site_total=True) == {at(0): Decimal(1)}


def test_a_register_reset_is_recorded_on_the_interval(station) -> None:
    for minutes, wh in [(0, 40_000), (15, 41_000), (20, 200)]:
        register(station, minutes, wh)

    intervals_roll_up()

    row = IntervalEnergy.objects.get(site=station.site, station__isnull=True, start=at(15))
    assert row.resets == 1
    assert row.energy_kwh == Decimal("0.2")


def test_a_register_counts_the_decimal_the_charger_sent_not_the_floats_binary_value(station) -> None:
    # 1000.0005 is stored as a float a hair below it; the energy is the decimal difference,
    # 0.0005 Wh = 0.0000005 kWh, which the six-place column rounds half up.
    for minutes, wh in [(0, 1000), (15, 1000.0005)]:
        register(station, minutes, wh)

    intervals_roll_up()

    assert intervals(station) == {at(0): Decimal("0.000001")}


def test_a_rebuild_keeps_the_intervals_whose_readings_are_gone(station) -> None:
    for step in range(12):  # every 5 minutes, off the interval grid: 17:02, 17:07, ... 17:57
        register(station, 2 + 5 * step, 100 * step)
    intervals_roll_up()
    rolled_up = {r.start: (r.pk, r.energy_kwh) for r in IntervalEnergy.objects.filter(station=station)}
    assert len(rolled_up) == 4
    # The first readings are dropped (as a month past the retention period is); the interval the
    # first reading kept falls in also drew on a reading that is gone.
    MeterReading.objects.filter(station=station, sampled_at__lt=at(20)).delete()

    intervals_rebuild(site=station.site, start=at(0), end=at(60))

    rebuilt = {r.start: (r.pk, r.energy_kwh) for r in IntervalEnergy.objects.filter(station=station)}
    assert {start: kwh for start, (_, kwh) in rebuilt.items()} == {start: kwh for start, (_, kwh) in rolled_up.items()}
    assert rebuilt[at(0)] == rolled_up[at(0)]  # the same rows, not rewritten
    assert rebuilt[at(15)] == rolled_up[at(15)]
    assert intervals(station, site_total=True) == intervals(station)


def test_a_station_deleted_while_its_marks_wait_leaves_the_rest_of_its_site_rolled_up(station) -> None:
    other = ChargingStation.objects.create(
        charge_point_id="ROLL-2", site=station.site, max_current_a=Decimal(32), phases=1, wiring="L1"
    )
    for minutes, wh in [(0, 0), (15, 1000)]:
        register(station, minutes, wh)
        register(other, minutes, 3 * wh)
    other_id = other.pk
    other.delete()

    outcome = intervals_roll_up()

    assert outcome.marks == 2
    assert intervals(station, site_total=True) == {at(0): Decimal(1)}
    assert not RollupPending.objects.exists()
    assert not MeterReading.objects.filter(station_id=other_id).exists()


def test_every_read_of_raw_history_is_a_bounded_time_range(station) -> None:
    from balancing.models import BalancingRun, ProfilePush

    connector = Connector.objects.create(station=station, connector_id=1)
    session = ChargingSession.objects.create(
        station=station, connector=connector, transaction_id="9", started_at=at(0), meter_start_wh=Decimal(0)
    )
    run = BalancingRun.objects.create(site=station.site, reason="t", started_at=at(0), inputs_digest="x", problem={})
    ProfilePush.objects.create(
        run=run,
        station=station,
        connector=connector,
        kind="lower",
        new_limit_a=Decimal(10),
        payload={},
        status="Accepted",
        sent_at=at(5),
        answered_at=at(5),
    )
    for minutes, wh in [(0, 0), (15, 1000)]:
        readings_write(station, [(at(minutes), {"energy_wh": wh, "power_w": 2400})], session=session)

    with CaptureQueriesContext(connection) as queries:
        intervals_roll_up()
        intervals_rebuild(site=station.site, start=at(-60), end=at(60))

    reads = {
        table: [q["sql"] for q in queries if f'FROM "{table}"' in q["sql"]]
        for table in ("chargepoint_meterreading", "balancing_profilepush")
    }
    assert reads["chargepoint_meterreading"]
    assert reads["balancing_profilepush"]
    for table, column in (("chargepoint_meterreading", "sampled_at"), ("balancing_profilepush", "answered_at")):
        for sql in reads[table]:
            assert re.search(rf'"{column}" >=? ', sql), sql  # from ...
            assert re.search(rf'"{column}" <=? ', sql), sql  # ... until: never a whole history
    assert SessionDraw.objects.get(session=session).was_capped is True  # the push was read


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
    readings_write(
        station,
        [(at(minutes), {"power_w": watts}) for minutes, watts in [(5, 6600), (10, 6650), (25, 2400)]],
        session=session,
    )
    readings_write(station, [(at(30), {"power_w": 2390, "energy_wh": 4000})], session=session)

    intervals_roll_up()

    draw = SessionDraw.objects.get(session=session)
    assert draw.observed_max_kw == Decimal("6.650")  # not the 2.4 kW it was held at
    assert draw.was_capped is True
    assert draw.register_energy_kwh == Decimal("3.000")


def test_session_draw_counts_readings_dated_just_outside_the_session_and_rounds_half_up(station) -> None:
    connector = Connector.objects.create(station=station, connector_id=1)
    session = ChargingSession.objects.create(
        station=station,
        connector=connector,
        transaction_id="8",
        started_at=at(0),
        stopped_at=at(30),
        meter_start_wh=Decimal(1000),
    )
    readings_write(station, [(at(-0.5), {"energy_wh": 1000})], session=session)  # begin, stamped a moment early
    readings_write(station, [(at(10), {"energy_wh": 1250, "power_w": 6650.5})], session=session)
    readings_write(station, [(at(30.5), {"energy_wh": 1500.5})], session=session)  # end, stamped after the stop

    intervals_roll_up()

    draw = SessionDraw.objects.get(session=session)
    assert draw.register_energy_kwh == Decimal("0.501")  # 500.5 Wh, to the Wh half up, the last register in
    assert draw.observed_max_kw == Decimal("6.651")  # 6.6505 kW half up


def test_the_fast_path_gives_what_spreading_every_pair_gives() -> None:
    """``register_to_intervals`` adds a pair within one interval directly; a reference that
    spreads every pair (as it did) agrees on random series: gaps, jitter, resets, swaps."""
    import itertools
    import random

    from billing.intervals import ZERO, interval_floor, spread_energy
    from billing.rollups import RegisterRollup, plausible_wh

    def spread_every_pair(readings, *, max_power_kw, minutes):
        ordered = sorted(dict(readings).items())
        rollup = RegisterRollup()
        for (t0, v0), (t1, v1) in itertools.pairwise(ordered):
            delta = v1 - v0
            limit = plausible_wh(max_power_kw, (t1 - t0).total_seconds())
            if delta < 0 or delta > limit:
                slot = interval_floor(t1, minutes)
                rollup.resets[slot] = rollup.resets.get(slot, 0) + 1
                delta = v1 if delta < 0 and ZERO <= v1 <= limit else ZERO
            spread_energy(rollup.intervals_kwh, t0, t1, delta / 1000, minutes)
        return rollup

    rng = random.Random(7)
    for _ in range(500):
        moment = at(rng.uniform(-40, 40))
        wh = Decimal(rng.randint(0, 10**6)) / 10
        readings = []
        for _ in range(rng.randint(0, 50)):
            moment += rng.choice(
                [timedelta(seconds=10), timedelta(minutes=15), timedelta(0), timedelta(seconds=rng.uniform(0, 5000))]
            )
            draw = rng.random()
            wh = Decimal(rng.randint(0, 400)) if draw < 0.05 else wh + (10**7 if draw < 0.08 else rng.randint(0, 2500))
            readings.append((moment, wh))
        rng.shuffle(readings)
        minutes = rng.choice([5, 15, 60])
        assert register_to_intervals(readings, max_power_kw=RATING_KW, minutes=minutes) == spread_every_pair(
            readings, max_power_kw=RATING_KW, minutes=minutes
        )


def test_two_ranges_of_one_station_that_meet_are_rewritten_once(station) -> None:
    # Marks at 17:00 and 19:30 are two ranges (over an hour apart); each reaches the readings
    # around it, 17:05 and 19:35, so both rewrite 17:00-19:45: the batch writes each row once.
    for minutes, wh in [(0, 0), (5, 500), (155, 8000), (160, 8500)]:
        register(station, minutes, wh)

    assert intervals_roll_up().marks == 2

    rolled_up = intervals(station)
    assert sum(rolled_up.values()) == Decimal("8.5")
    # 0.5 kWh, then 7.5 kWh over 150 minutes (0.75 kWh an interval), then 0.5 kWh
    assert rolled_up == {at(0): Decimal(1)} | {at(m): Decimal("0.75") for m in range(15, 151, 15)}
    intervals_rebuild(site=station.site, start=at(-60), end=at(240))
    assert intervals(station) == rolled_up
    assert intervals(station, site_total=True) == rolled_up


def test_a_rollup_sends_as_many_statements_for_six_stations_as_for_two(station) -> None:
    from balancing.models import BalancingRun, ProfilePush

    def charging(count: int, first_minute: float) -> None:
        for n in range(count):
            charger = ChargingStation.objects.create(
                charge_point_id=f"COUNT-{first_minute}-{n}",
                site=station.site,
                max_current_a=Decimal(32),
                phases=1,
                wiring="L1",
            )
            connector = Connector.objects.create(station=charger, connector_id=1)
            session = ChargingSession.objects.create(
                station=charger, connector=connector, transaction_id="1", started_at=at(0), meter_start_wh=Decimal(0)
            )
            run = BalancingRun.objects.create(
                site=station.site, reason="t", started_at=at(0), inputs_digest="x", problem={}
            )
            ProfilePush.objects.create(
                run=run,
                station=charger,
                connector=connector,
                kind="lower",
                new_limit_a=Decimal(10),
                payload={},
                status="Accepted",
                sent_at=at(1),
                answered_at=at(1),
            )
            readings_write(
                charger,
                [(at(first_minute + m), {"energy_wh": 100 * m, "power_w": 2400}) for m in range(0, 30, 5)],
                session=session,
            )

    counts = []
    for count, first_minute in ((2, 0), (6, 60)):
        charging(count, first_minute)
        with CaptureQueriesContext(connection) as queries:
            outcome = intervals_roll_up()
        assert (outcome.stations, outcome.sessions) == (count, count)
        counts.append(len([q for q in queries if "SAVEPOINT" not in q["sql"]]))  # the test's transaction's

    # Three lookups of the register readings around the ranges here (new stations); two later on.
    assert counts[0] == counts[1] <= 20


def session_on(station: ChargingStation, *, started: float = 0) -> ChargingSession:
    connector = Connector.objects.get_or_create(station=station, connector_id=1)[0]
    return ChargingSession.objects.create(
        station=station, connector=connector, transaction_id="20", started_at=at(started), meter_start_wh=Decimal(0)
    )


def push(session: ChargingSession, minutes: float, limit_a: int) -> None:
    from balancing.models import BalancingRun, ProfilePush

    run = BalancingRun.objects.create(
        site=session.station.site, reason="t", started_at=at(minutes), inputs_digest="x", problem={}
    )
    ProfilePush.objects.create(
        run=run,
        station=session.station,
        connector=session.connector,
        kind="lower",
        new_limit_a=Decimal(limit_a),
        payload={},
        status="Accepted",
        sent_at=at(minutes),
        answered_at=at(minutes),
    )


def test_a_session_draw_folds_in_what_is_new_and_keeps_what_it_folded(station) -> None:
    session = session_on(station)
    readings_write(
        station, [(at(m), {"power_w": 6000, "energy_wh": 100 * m}) for m in range(0, 30, 5)], session=session
    )
    intervals_roll_up()
    first = SessionDraw.objects.get(session=session)
    assert (first.observed_max_kw, first.register_energy_kwh, first.folded_until) == (
        Decimal("6.000"),
        Decimal("2.500"),
        at(25),
    )
    # The first readings go (as a month past the retention period does): the draw keeps them,
    # because the next rollup folds the new readings into it instead of re-reading the session.
    MeterReading.objects.filter(station=station, sampled_at__lt=at(15)).delete()
    readings_write(
        station, [(at(m), {"power_w": 5000, "energy_wh": 100 * m}) for m in range(30, 60, 5)], session=session
    )

    intervals_roll_up()

    draw = SessionDraw.objects.get(session=session)
    assert (draw.observed_max_kw, draw.register_energy_kwh, draw.folded_until) == (
        Decimal("6.000"),
        Decimal("5.500"),
        at(55),
    )
    assert draw.draw_source == SessionDraw.Source.POWER


def test_a_late_reading_dated_before_what_was_folded_is_folded_in(station) -> None:
    session = session_on(station)
    push(session, 1, 20)  # 4.8 kW from 17:01
    readings_write(station, [(at(m), {"power_w": 4000}) for m in range(0, 30, 5)], session=session)
    intervals_roll_up()
    assert SessionDraw.objects.get(session=session).folded_until == at(25)

    readings_write(station, [(at(12), {"power_w": 4750})], session=session)  # held at our 20 A, sent late
    readings_write(station, [(at(16), {"power_w": 4500})], session=session)
    intervals_roll_up()

    draw = SessionDraw.objects.get(session=session)
    assert draw.observed_max_kw == Decimal("4.500")  # 4.75 kW is within 1 A of the limit: held
    assert draw.was_capped is True
    assert draw.folded_until == at(25)


def test_a_draw_taken_from_currents_is_recomputed_from_power_once_power_readings_come(station) -> None:
    session = session_on(station)
    readings_write(station, [(at(m), {"current_a": 30}) for m in range(0, 15, 5)], session=session)
    intervals_roll_up()
    first = SessionDraw.objects.get(session=session)
    assert (first.observed_max_kw, first.draw_source) == (Decimal("7.200"), SessionDraw.Source.CURRENT)

    readings_write(station, [(at(m), {"current_a": 30, "power_w": 6900}) for m in range(15, 30, 5)], session=session)
    intervals_roll_up()

    draw = SessionDraw.objects.get(session=session)
    # As if read in one go: the session has power readings, so its draw is the power's alone.
    assert (draw.observed_max_kw, draw.draw_source, draw.folded_until) == (
        Decimal("6.900"),
        SessionDraw.Source.POWER,
        at(25),
    )


def test_a_draw_folded_by_an_earlier_version_is_recomputed_from_the_sessions_start(station) -> None:
    session = session_on(station)
    readings_write(station, [(at(m), {"power_w": 3000, "energy_wh": 50 * m}) for m in range(0, 30, 5)], session=session)
    with connection.cursor() as cursor:  # as the code before folding wrote a draw: no fold columns
        cursor.execute(
            "INSERT INTO billing_sessiondraw (session_id, observed_max_kw, was_capped, updated_at) "
            "VALUES (%s, 9.999, true, now())",
            [session.pk],
        )

    intervals_roll_up()

    draw = SessionDraw.objects.get(session=session)
    assert (draw.observed_max_kw, draw.was_capped, draw.register_energy_kwh) == (
        Decimal("3.000"),
        False,
        Decimal("1.250"),
    )
    assert (draw.draw_source, draw.folded_until) == (SessionDraw.Source.POWER, at(25))
