"""The arbiter: grid, building load, demand cap, schedules and overrides; which one binds."""

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest

from balancing.limits import site_limits
from balancing.models import BuildingLoadReading, LimitOverride, SiteLimitSchedule, SiteMeterReading
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


# --- The site meter: the closed loop's eye --------------------------------------------------


def meter(site, *, age_s: float = 10, current_a=(), power_kw: str | None = None, includes_chargers: bool = True):
    return SiteMeterReading.objects.create(
        site=site,
        measured_at=NOW - timedelta(seconds=age_s),
        source=SiteMeterReading.Source.API,
        current_a=list(current_a),
        power_kw=None if power_kw is None else Decimal(power_kw),
        includes_chargers=includes_chargers,
    )


def test_a_grid_meter_over_the_cap_lowers_the_chargers_by_the_overshoot() -> None:
    site = SiteFactory(limit_a=Decimal("63"), demand_cap_kw=Decimal("20"))
    meter(site, current_a=[31, 31, 31], power_kw="21.3")

    limits = site_limits(site, NOW, chargers_a=[25, 25, 25], chargers_kw=17.0)

    # Building = 21.3 - 17.0 = 4.3 kW; the site is 1.3 kW over: 20 - 4.3 - 1.3 = 14.4 kW.
    assert limits.building_kw == pytest.approx(4.3)
    assert limits.limit_kw == pytest.approx(14.4)
    assert limits.bound_kw == "demand_cap minus building load (site meter 21.3 kW over 20 kW: lowered 1.3 kW)"
    # Per phase: building 31 - 25 = 6 A under a 63 A grid; no phase is over.
    assert limits.limit_a == [57.0, 57.0, 57.0]
    assert limits.site_over_limit is True
    assert limits.site_over_limit_detail == "site meter 21.3 kW over 20 kW (demand_cap)"
    assert limits.as_record()["meter"]["power_kw"] == 21.3


def test_a_grid_meter_over_a_phase_lowers_that_phase_by_the_overshoot() -> None:
    site = SiteFactory(limit_a=Decimal("100"), demand_cap_kw=None)
    meter(site, current_a=[108, 90, 95])

    limits = site_limits(site, NOW, chargers_a=[80, 70, 75])

    # Building [28, 20, 20] A; L1 is 8 A over the grid: 100 - 28 - 8 = 64.
    assert limits.limit_a == [64.0, 80.0, 80.0]
    assert limits.bound_a == "grid minus building load (site meter L1 108 A over 100 A: lowered up to 8 A)"
    assert limits.site_over_limit_detail == "site meter L1 108 A over 100 A (grid)"


def test_a_grid_meter_under_the_limits_gives_the_building_load_only(site) -> None:
    meter(site, current_a=[40, 35, 30], power_kw="24")

    limits = site_limits(site, NOW, chargers_a=[30, 30, 30], chargers_kw=20.7)

    assert limits.limit_a == [90.0, 95.0, 100.0]  # building [10, 5, 0]: never below 0
    assert limits.limit_kw == pytest.approx(40 - 3.3)
    assert limits.site_over_limit is False
    assert limits.bound_kw == "demand_cap minus building load"


def test_a_grid_meter_without_the_chargers_draw_still_detects_the_overshoot(site) -> None:
    BuildingLoadReading.objects.create(
        site=site, measured_at=NOW - timedelta(seconds=30), current_a=[10, 10, 10], power_kw=Decimal("6.9")
    )
    meter(site, current_a=[60, 60, 60], power_kw="43")

    limits = site_limits(site, NOW)

    # The building load comes from its own reading (6.9 kW); the overshoot of 3 kW comes off too.
    assert limits.limit_kw == pytest.approx(40 - 6.9 - 3)
    assert limits.limit_a == [90.0] * 3
    assert limits.site_over_limit is True


def test_a_building_only_meter_is_used_like_a_building_reading(site) -> None:
    BuildingLoadReading.objects.create(site=site, measured_at=NOW, current_a=[50, 50, 50], power_kw=Decimal("34.5"))
    meter(site, current_a=[30, 10, 20], power_kw="13.8", includes_chargers=False)

    limits = site_limits(site, NOW, chargers_a=[20, 20, 20])

    assert limits.limit_a == [70.0, 90.0, 80.0]
    assert limits.limit_kw == pytest.approx(26.2)
    assert limits.site_over_limit is False


def test_a_stale_site_meter_is_ignored_for_the_building_reading(site) -> None:
    BuildingLoadReading.objects.create(
        site=site, measured_at=NOW - timedelta(seconds=30), current_a=[30, 10, 20], power_kw=Decimal("13.8")
    )
    meter(site, age_s=61, current_a=[200, 200, 200], power_kw="90")  # the default maximum age is 60 s

    limits = site_limits(site, NOW, chargers_a=[0, 0, 0], chargers_kw=0.0)

    assert limits.limit_a == [70.0, 90.0, 80.0]
    assert limits.limit_kw == pytest.approx(26.2)
    assert limits.site_over_limit is False
    assert "site meter silent since 16:28:59" in limits.bound_a


def test_the_site_meter_maximum_age_is_a_setting(site, settings) -> None:
    settings.BALANCING_SITE_METER_MAX_AGE_S = 300
    meter(site, age_s=120, current_a=[30, 10, 20], power_kw="13.8", includes_chargers=False)

    assert site_limits(site, NOW).limit_a == [70.0, 90.0, 80.0]


def test_a_meter_reading_without_usable_phase_currents_uses_its_power_only(site) -> None:
    meter(site, current_a=[True, "x", 5], power_kw="45", includes_chargers=True)

    limits = site_limits(site, NOW, chargers_a=[30, 30, 30], chargers_kw=20.7)

    assert limits.limit_a == [100.0] * 3  # no per-phase figure: no building current, no phase over
    assert limits.limit_kw == pytest.approx(40 - 24.3 - 5)  # building 45 - 20.7; 5 kW over the cap
