"""The portal's chart data: bounded however much history there is, and the peaks kept.

Real PostgreSQL: a month of minute sweeps of one site is bulk-created, and the site chart must
come back as one point per quarter hour carrying each quarter's highest values; the charger
chart as one point per minute and connector.
"""

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone
from django_tenants.utils import tenant_context

from balancing.models import BalancingRun
from chargepoint.models import MeterReading
from chargepoint.partitions import partitions_ensure
from tenants.accounts.models import Role
from tests.factories import ChargingStationFactory, SiteFactory

pytestmark = pytest.mark.django_db
MONTH_MINUTES = 31 * 24 * 60


def floor(at: datetime, step: timedelta) -> datetime:
    seconds = int(step.total_seconds())
    return datetime.fromtimestamp(at.timestamp() // seconds * seconds, tz=UTC)


@pytest.fixture
def viewer(make_user):
    _, client = make_user(Role.SITE_VIEWER)
    return client


@pytest.fixture(scope="module")
def month_of_runs(tenant, django_db_blocker):
    """A three-phase site with a run every minute for 31 days up to now, and a neighbour's runs.

    Committed once for the module (44,640 runs take a while to write) and removed afterwards.
    """
    with django_db_blocker.unblock(), tenant_context(tenant):
        site = SiteFactory(slug="chart-month")
        neighbour = SiteFactory(slug="chart-neighbour")
        now = timezone.now()
        runs = [
            BalancingRun(
                site=site,
                reason="sweep",
                started_at=now - timedelta(minutes=n, seconds=30),
                inputs_digest="m" * 64,
                problem={},
                measured_kw=(n * 7919 % 1000) / 40,  # 0-25 kW, scattered
                allocated_kw=(n * 104729 % 1000) / 40,
                limit_kw=20.0 if n % 500 else 30.0,  # the limit moves now and then
                unmanaged_kw=None if n % 3 == 0 else n % 37 + 0.125,
                phase_measured_a=[n % 61, n % 53 + 0.5, n % 47],
                phase_limit_a=[63, 63, 63] if n % 700 else [40, 50, 63],
            )
            for n in range(MONTH_MINUTES)
        ]
        BalancingRun.objects.bulk_create(runs, batch_size=5000)
        BalancingRun.objects.create(
            site=neighbour,
            reason="sweep",
            started_at=now - timedelta(minutes=5),
            inputs_digest="n" * 64,
            problem={},
            measured_kw=999.0,
            phase_measured_a=[999, 999, 999],
        )
    yield site, runs
    with django_db_blocker.unblock(), tenant_context(tenant):
        BalancingRun.objects.filter(site__in=[site, neighbour]).delete()
        site.delete()
        neighbour.delete()


def expected_maxima(runs: list[BalancingRun], since: datetime, step: timedelta, fields: dict[str, Any]) -> dict:
    """Per bucket start (ISO), per series, the highest value of the runs in it, as the chart rounds it."""
    buckets: dict[str, dict[str, float]] = defaultdict(dict)
    for run in runs:
        if run.started_at < since:
            continue
        point = buckets[floor(run.started_at, step).isoformat()]
        for name, read in fields.items():
            value = read(run)
            if value is not None:
                point[name] = max(point.get(name, value), value)
    return {at: {k: round(v, 2) for k, v in point.items()} for at, point in buckets.items()}


KW = {
    "drawn": lambda r: r.measured_kw,
    "allowed": lambda r: r.allocated_kw,
    "limit": lambda r: r.limit_kw,
    "unmanaged": lambda r: r.unmanaged_kw,
}
PHASES = {
    f"L{n + 1} {kind}": (lambda r, n=n, field=field: getattr(r, field)[n])
    for kind, field in (("drawn", "phase_measured_a"), ("limit", "phase_limit_a"))
    for n in range(3)
}


def chart(client, params: dict[str, str]) -> tuple[dict[str, dict[str, Any]], int]:
    response = client.get("/sites/chart-month/chart.json", params)
    assert response.status_code == 200
    rows = response.json()["data"]["values"]
    return {row.pop("time"): row for row in rows}, len(response.content)


@pytest.mark.parametrize(("phases", "fields"), [("", KW), ("1", PHASES)], ids=["kW", "phases"])
def test_a_month_is_a_point_per_quarter_hour_with_each_quarters_highest_values(
    viewer, month_of_runs, phases, fields
) -> None:
    _, runs = month_of_runs
    before = timezone.now()

    points, size = chart(viewer, {"range": "month", "phases": phases})

    assert len(points) <= 31 * 96 + 1
    assert len(points) >= 31 * 96 - 1
    assert size < 1_000_000
    since = before - timedelta(days=31)
    expected = expected_maxima(runs, since, timedelta(minutes=15), fields)
    # The first quarter may begin in the moments between the fixture and the request.
    first = min(expected)
    assert {at: p for at, p in points.items() if at != first} == {at: p for at, p in expected.items() if at != first}
    peak = max(runs, key=lambda r: r.measured_kw or 0)
    if not phases:
        assert points[floor(peak.started_at, timedelta(minutes=15)).isoformat()]["drawn"] == round(peak.measured_kw, 2)


def test_a_day_is_a_point_per_minute_and_an_hour_too(viewer, month_of_runs) -> None:
    _, runs = month_of_runs

    day, _ = chart(viewer, {"range": "day"})
    hour, _ = chart(viewer, {"range": "hour"})

    assert 1439 <= len(day) <= 1441
    assert 59 <= len(hour) <= 61
    latest = max(runs, key=lambda r: r.started_at)
    assert hour[floor(latest.started_at, timedelta(minutes=1)).isoformat()]["drawn"] == round(latest.measured_kw, 2)
    assert all(point.get("drawn", 0) < 999 for point in day.values())  # the neighbour's runs are its own


def test_the_chart_spec_unfolds_the_rows_into_step_lines(viewer, month_of_runs) -> None:
    spec = viewer.get("/sites/chart-month/chart.json", {"range": "week", "phases": "1"}).json()

    assert spec["transform"][0] == {
        "fold": ["L1 drawn", "L2 drawn", "L3 drawn", "L1 limit", "L2 limit", "L3 limit"],
        "as": ["series", "value"],
    }
    assert spec["mark"]["interpolate"] == "step-after"
    assert 7 * 96 - 1 <= len(spec["data"]["values"]) <= 7 * 96 + 1
    json.dumps(spec)


def test_the_charger_chart_is_a_point_per_minute_and_connector_for_six_hours(viewer) -> None:
    station = ChargingStationFactory(charge_point_id="CP-CHART")
    now = timezone.now()
    partitions_ensure(now - timedelta(hours=7), now)
    readings = [
        MeterReading(
            station=station,
            sampled_at=now - timedelta(seconds=s),
            connector_no=c,
            current_l1_a=(s * 31 % 320) / 10 + c,
            current_l2_a=(s * 17 % 320) / 10,
            current_l3_a=None if c == 2 else 5.0,
        )
        for s in range(0, 7 * 3600, 5)  # every 5 s for 7 hours
        for c in (0, 1, 2)
    ]
    MeterReading.objects.bulk_create(readings)
    since = now - timedelta(hours=6)

    rows = viewer.get("/chargers/CP-CHART/chart.json").json()["data"]["values"]

    series = {row["phase"] for row in rows}
    assert series == {"1 L1", "1 L2", "1 L3", "2 L1", "2 L2"}  # no main meter, no empty series
    assert len(rows) <= 361 * len(series)
    peaks: dict[tuple[str, str], float] = {}
    for r in readings:
        if r.connector_no == 0 or r.sampled_at < since:
            continue
        at = floor(r.sampled_at, timedelta(minutes=1)).isoformat()
        for phase, value in (("L1", r.current_l1_a), ("L2", r.current_l2_a), ("L3", r.current_l3_a)):
            if value is not None:
                key = (at, f"{r.connector_no} {phase}")
                peaks[key] = round(max(peaks.get(key, value), value), 2)
    got = {(row["time"], row["phase"]): row["A"] for row in rows}
    first = min(at for at, _ in peaks)
    assert {k: v for k, v in got.items() if k[0] != first} == {k: v for k, v in peaks.items() if k[0] != first}
