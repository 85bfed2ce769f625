"""The arbiter: grid, building load, demand cap, schedules and overrides; which one binds."""

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest

from balancing.limits import site_limits
from balancing.models import BuildingLoadReading, LimitOverride, SiteLimitSchedule
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db

# 2026-05-01 is a Friday; 16:30 UTC is 09:30 in Los Angeles (PDT, UTC-7).
NOW = datetime(2026, 5, 1, 16, 30, tzinfo=UTC)


@pytest.fixture
def site():
    return SiteFactory(limit_a=Decimal("100"), demand_cap_kw=Decimal("40"), timezone="America/Los_Angeles")


def test_without_extras_the_grid_and_the_demand_cap_bind(site) -> None:
    limits = site_limits(site, NOW)
    assert limits.limit_a == [100.0, 100.0, 100.0]
    assert limits.limit_kw == 40.0
    assert (limits.bound_a, limits.bound_kw) == ("grid", "demand_cap")


def test_a_schedule_in_its_local_window_lowers_the_cap(site) -> None:
    SiteLimitSchedule.objects.create(
        site=site,
        name="utility peak",
        weekdays="01234",
        start_time=time(9),
        end_time=time(12),
        limit_kw=Decimal("15"),
    )
    SiteLimitSchedule.objects.create(
        site=site,
        name="weekend",
        weekdays="56",
        start_time=time(0),
        end_time=time(23, 59),
        limit_kw=Decimal("5"),
    )

    assert site_limits(site, NOW).limit_kw == 15.0
    assert site_limits(site, NOW).bound_kw == "schedule:utility peak"
    assert site_limits(site, NOW + timedelta(hours=3)).limit_kw == 40.0  # 12:30 local: window closed


def test_a_window_past_midnight_belongs_to_the_day_it_opened(site) -> None:
    SiteLimitSchedule.objects.create(
        site=site,
        name="night",
        weekdays="4",
        start_time=time(22),
        end_time=time(6),
        limit_a=Decimal("50"),
    )
    friday_23h = datetime(2026, 5, 2, 6, 0, tzinfo=UTC)  # Fri 23:00 local
    saturday_5h = datetime(2026, 5, 2, 12, 0, tzinfo=UTC)  # Sat 05:00 local
    saturday_23h = datetime(2026, 5, 3, 6, 0, tzinfo=UTC)  # Sat 23:00 local: not a Friday window

    assert site_limits(site, friday_23h).limit_a == [50.0] * 3
    assert site_limits(site, saturday_5h).limit_a == [50.0] * 3
    assert site_limits(site, saturday_23h).limit_a == [100.0] * 3


def test_an_override_applies_only_while_it_lasts(site) -> None:
    LimitOverride.objects.create(
        site=site,
        limit_kw=Decimal("10"),
        reason="transformer maintenance",
        starts_at=NOW - timedelta(hours=1),
        ends_at=NOW + timedelta(hours=1),
        created_by="ops@example.com",
    )
    assert site_limits(site, NOW).bound_kw == "override:transformer maintenance"
    assert site_limits(site, NOW + timedelta(hours=2)).limit_kw == 40.0


def test_building_load_is_taken_out_of_the_grid_limit_and_the_cap(site) -> None:
    BuildingLoadReading.objects.create(
        site=site, measured_at=NOW - timedelta(seconds=30), current_a=[30, 10, 20], power_kw=Decimal("13.8")
    )
    limits = site_limits(site, NOW)
    assert limits.limit_a == [70.0, 90.0, 80.0]
    assert limits.limit_kw == pytest.approx(26.2)
    assert limits.bound_a == "grid minus building load"


def test_a_stale_building_meter_keeps_its_last_value_not_zero(site) -> None:
    BuildingLoadReading.objects.create(
        site=site, measured_at=NOW - timedelta(hours=1), current_a=[30, 30, 30], power_kw=Decimal("20")
    )
    limits = site_limits(site, NOW)
    assert limits.limit_a == [70.0] * 3
    assert "stale" in limits.bound_a


def test_limits_never_go_below_zero(site) -> None:
    BuildingLoadReading.objects.create(site=site, measured_at=NOW, current_a=[150, 0, 0], power_kw=Decimal("60"))
    limits = site_limits(site, NOW)
    assert limits.limit_a[0] == 0.0
    assert limits.limit_kw == 0.0
