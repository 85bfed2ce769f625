"""A run that finds the site as the last run left it is counted on that run, not stored again."""

from datetime import datetime, time, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from balancing.models import BalancingRun, ConnectorLimit, ProfilePush, SiteLimitSchedule, StationFailsafe
from balancing.problem import build_problem
from balancing.runs import _digest, site_balance_run
from balancing.selectors import site_load_series, site_overview
from tenants.accounts.models import Role
from tests.balancing.conftest import NOW, meter_draw
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db

MINUTE = timedelta(minutes=1)


def run(site, chargers, now=NOW, reason="sweep") -> BalancingRun:
    return site_balance_run(site=site, reason=reason, pusher=chargers, now=now)


def quiet_garage(garage, plug_in) -> None:
    """Four idle chargers online whose fail-safe defaults are confirmed: nothing to push."""
    for n in range(1, 5):
        plug_in(garage, f"CP-{n}", max_a="16", status="Available", session=False)
    for station in garage.stations.all():
        StationFailsafe.objects.create(
            station=station, limit_a=garage.failsafe_a, confirmed_at=NOW - timedelta(hours=1)
        )


def test_an_unchanged_site_keeps_one_run_that_counts_its_repeats(garage, plug_in, chargers) -> None:
    quiet_garage(garage, plug_in)

    first = run(garage, chargers, reason="plug-in")
    later = [run(garage, chargers, now=NOW + n * MINUTE) for n in range(1, 60)]

    assert chargers.sent == []
    row = BalancingRun.objects.get()  # an hour of sweeps: one row, not sixty
    assert row.pk == first.pk == later[-1].pk
    assert (row.repeats, row.started_at, row.last_repeated_at) == (59, NOW, NOW + 59 * MINUTE)
    assert row.reason == "plug-in"  # the run that was stored, with what it found
    assert later[-1].repeats == 59
    assert later[-1].last_seen_at == NOW + 59 * MINUTE


def test_the_digest_leaves_the_time_out_but_not_a_change_in_what_a_car_draws(garage, plug_in) -> None:
    connector = plug_in(garage, "CP-1", max_a="32", draw_a=10.0)
    StationFailsafe.objects.create(station=connector.station, limit_a=Decimal(6), confirmed_at=NOW - timedelta(hours=1))
    session = connector.sessions.get()
    ConnectorLimit.objects.create(
        connector=connector,
        limit_a=16,
        transaction_id=session.transaction_id,
        confirmed_at=NOW - timedelta(minutes=10),  # ramped up: its draw is part of the input
        valid_until=NOW + timedelta(minutes=10),
    )
    now_problem = build_problem(garage, NOW).problem
    a_second_later = build_problem(garage, NOW + timedelta(seconds=1)).problem
    assert now_problem["now"] != a_second_later["now"]
    assert _digest(now_problem) == _digest(a_second_later)

    meter_draw(connector, NOW - timedelta(seconds=5), 12.0)
    drawing_more = build_problem(garage, NOW).problem
    assert _digest(drawing_more) != _digest(now_problem)


def test_a_change_at_the_site_is_a_new_run(garage, plug_in, chargers) -> None:
    quiet_garage(garage, plug_in)
    run(garage, chargers)
    run(garage, chargers, now=NOW + MINUTE)

    garage.demand_cap_kw = Decimal("15")
    garage.save()
    changed = run(garage, chargers, now=NOW + 2 * MINUTE)
    again = run(garage, chargers, now=NOW + 3 * MINUTE)

    rows = list(BalancingRun.objects.order_by("started_at"))
    assert [(r.started_at, r.repeats) for r in rows] == [(NOW, 1), (NOW + 2 * MINUTE, 1)]
    assert changed.pk == again.pk == rows[1].pk
    assert rows[0].inputs_digest != rows[1].inputs_digest


def test_a_limit_that_does_not_bind_still_makes_a_new_run_when_it_appears(garage, plug_in, chargers) -> None:
    """Same engine input (the cap binds either way) but another record of the limits: not a repeat."""
    quiet_garage(garage, plug_in)
    run(garage, chargers)
    SiteLimitSchedule.objects.create(
        site=garage, name="evening", start_time=time(16, 31), end_time=time(23, 0), limit_kw=Decimal("50")
    )

    later = run(garage, chargers, now=NOW + MINUTE)

    assert BalancingRun.objects.count() == 2
    assert later.repeats == 0
    assert BalancingRun.objects.order_by("started_at")[0].inputs_digest == later.inputs_digest


def test_a_run_that_pushed_is_never_folded_and_is_never_folded_into(garage, plug_in, chargers) -> None:
    for n in range(1, 3):
        plug_in(garage, f"CP-{n}", max_a="16", status="Available", session=False)

    pushed = run(garage, chargers)  # the fail-safe defaults go out
    quiet = [run(garage, chargers, now=NOW + n * MINUTE) for n in (1, 2, 3)]

    assert len(chargers.sent) == 2
    rows = list(BalancingRun.objects.order_by("started_at"))
    assert [r.pk for r in rows] == [pushed.pk, quiet[0].pk]
    assert ProfilePush.objects.filter(run=pushed).count() == 2
    assert (rows[0].repeats, rows[1].repeats) == (0, 2)
    assert rows[1].last_repeated_at == NOW + 3 * MINUTE


def test_a_charger_going_offline_is_a_new_run_and_its_alert_is_refreshed_by_repeats(garage, plug_in, chargers) -> None:
    quiet_garage(garage, plug_in)
    run(garage, chargers)
    station = garage.stations.get(charge_point_id="CP-1")
    station.is_online = False
    station.save()

    offline = run(garage, chargers, now=NOW + MINUTE)
    still_offline = run(garage, chargers, now=NOW + 2 * MINUTE)

    assert offline.limits["alerts"][0].startswith("offline: CP-1 is offline")
    assert BalancingRun.objects.count() == 2
    assert still_offline.pk == offline.pk
    assert offline.pk != BalancingRun.objects.order_by("started_at")[0].pk
    assert BalancingRun.objects.get(pk=offline.pk).repeats == 1  # the alert was only refreshed then


def repeated_run(
    site, *, started: timedelta, last: timedelta, repeats: int, measured_kw: float = 12.0, now=None
) -> BalancingRun:
    """A run stored ``started`` before ``now`` and repeated ``repeats`` times until ``last`` before it."""
    now = now or timezone.now()
    return BalancingRun.objects.create(
        site=site,
        reason="sweep",
        started_at=now - started,
        finished_at=now - started,
        inputs_digest="r" * 64,
        problem={"evses": []},
        result={"allocations_a": {}},
        limits={"bound_kw": "demand_cap"},
        measured_kw=measured_kw,
        allocated_kw=19.8,
        limit_kw=20.0,
        phase_measured_a=[17, 17, 17],
        phase_limit_a=[63, 63, 63],
        repeats=repeats,
        last_repeated_at=now - last,
    )


def test_the_site_page_and_the_api_say_how_often_a_run_was_repeated_and_until_when(make_user) -> None:
    site = SiteFactory(slug="mall")
    row = repeated_run(site, started=timedelta(minutes=42), last=timedelta(minutes=1), repeats=41)
    _, client = make_user(Role.SITE_VIEWER)

    live = client.get("/sites/mall/", headers={"HX-Request": "true"}).content.decode()
    until = timezone.localtime(row.last_repeated_at).strftime("%H:%M:%S")
    assert f"repeated 41 times until {until}" in live

    runs = client.get("/api/v1/runs/", {"site": "mall"}).json()["results"]
    assert (runs[0]["repeats"], runs[0]["last_repeated_at"]) == (
        41,
        row.last_repeated_at.isoformat().replace("+00:00", "Z"),
    )
    # It ran within the last ten minutes, though it was first stored 42 minutes ago.
    since = (timezone.now() - timedelta(minutes=10)).isoformat()
    assert [r["id"] for r in client.get("/api/v1/runs/", {"site": "mall", "since": since}).json()["results"]] == [
        row.pk
    ]
    status = client.get("/api/v1/sites/mall/status/").json()
    assert status["last_run_at"] == runs[0]["last_repeated_at"]


def test_the_chart_holds_a_repeated_runs_figures_until_its_last_repeat(make_user) -> None:
    site = SiteFactory(slug="mall")
    row = repeated_run(site, started=timedelta(hours=3), last=timedelta(minutes=2), repeats=178, measured_kw=14.0)
    _, client = make_user(Role.SITE_VIEWER)

    started = timezone.now()
    spec = client.get("/sites/mall/chart.json?range=hour").json()

    drawn = [(r["time"], r["drawn"]) for r in spec["data"]["values"] if "drawn" in r]
    assert [kw for _, kw in drawn] == [14.0, 14.0]  # from the start of the hour to its last repeat
    hour_ago = (started - timedelta(hours=1)).replace(second=0, microsecond=0)
    assert hour_ago <= datetime.fromisoformat(drawn[0][0]) <= started - timedelta(minutes=59)
    assert drawn[-1][0] == row.last_repeated_at.replace(second=0, microsecond=0).isoformat()  # its minute


def test_a_run_repeated_into_the_window_and_one_started_in_its_first_minute_share_the_first_point() -> None:
    site = SiteFactory(slug="mall")
    since = datetime(2026, 10, 5, 9, 0, 0, tzinfo=timezone.get_current_timezone())
    # Stored two hours before and repeated into the window (14 kW), then a new run 20 s in (9 kW,
    # a tighter limit) and one 3 minutes in.
    repeated_run(site, started=timedelta(hours=2), last=timedelta(minutes=-1), repeats=120, measured_kw=14.0, now=since)
    for offset, kw, limit in ((timedelta(seconds=20), 9.0, 18.0), (timedelta(minutes=3), 7.0, 20.0)):
        BalancingRun.objects.create(
            site=site,
            reason="sweep",
            started_at=since + offset,
            finished_at=since + offset,
            inputs_digest="n" * 64,
            problem={"evses": []},
            result={"allocations_a": {}},
            measured_kw=kw,
            allocated_kw=kw,
            limit_kw=limit,
        )

    points = site_load_series(site=site, since=since, step=timedelta(minutes=1))

    assert [(p["at"] - since, p["drawn"], p["limit"]) for p in points] == [
        (timedelta(0), 14.0, 20.0),  # the highest of both runs, each figure on its own
        (timedelta(minutes=3), 7.0, 20.0),
    ]
    assert points[0]["allowed"] == 19.8


def test_the_overview_counts_a_run_repeated_into_today_and_at_the_cap_for_half_an_hour(make_user) -> None:
    site = SiteFactory(name="Mall garage", slug="mall", timezone="UTC")
    noon = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    # Stored at 10 pm yesterday, repeated until a minute ago: today's peak, and 40 minutes at the cap.
    repeated_run(site, started=timedelta(hours=14), last=timedelta(minutes=1), repeats=839, measured_kw=18.7, now=noon)
    _, client = make_user(Role.SITE_VIEWER)

    rows = {row.site.slug: row for row in site_overview(now=noon)}

    assert rows["mall"].peak_today_kw == 18.7
    assert "at its limit for 30 minutes" in rows["mall"].alerts
    assert rows["mall"].last_run_at == noon - timedelta(minutes=1)
    assert "18.7" in client.get("/").content.decode()
