"""Cost-aware balancing, live: the policy hook in ``build_problem``, the run's record, the site page and API.

The garage (tests/balancing/conftest.py): 3-phase 230 V (0.69 kW per ampere of a 3-phase car),
63 A grid (43.47 kW), a 20 kW demand cap, time zone UTC. The tariff: $10/kW flat demand; energy
$0.10/kWh, or $0.30/kWh from 16:00 to 21:00 where the test says so. A 15-minute interval of
E kWh is a window demand of 4 x E kW.
"""

import ast
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from balancing.models import BalancingRun, Site
from balancing.runs import site_balance_run
from balancing.services import site_limits_update
from billing.models import IntervalEnergy, SiteMonthDemand, SiteMonthPeak
from billing.tariff_versions import tariff_import
from tenants.accounts.models import Role
from tests.balancing.conftest import NOW, SITE_SETTINGS_FORM
from tests.billing.conftest import simple_record

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def cost_aware(site: Site, margin: str = "0.5") -> Site:
    site_limits_update(
        site=site, limits={"balancing_policy": "cost_aware", "peak_margin_kw": Decimal(margin)}, actor="test"
    )
    site.refresh_from_db()
    return site


def window(site: Site, at: datetime, kwh: str) -> None:
    """One 15-minute site-total interval (the rollup's row with no station)."""
    IntervalEnergy.objects.create(site=site, station=None, start=at, energy_kwh=Decimal(kwh))


def run(site: Site, chargers, now: datetime = NOW) -> BalancingRun:
    return site_balance_run(site=site, reason="test", pusher=chargers, now=now)


def four_cars(site: Site, plug_in) -> None:
    for n in range(4):
        plug_in(site, f"cp-{n}")


def test_a_month_peak_above_the_cap_lifts_it_to_the_peak_less_the_margin(garage, plug_in, chargers) -> None:
    """26 kW set at 09:00 today (6.5 kWh in 15 min) - 0.5 kW margin = 25.5 kW > 20 kW cap: 25.5 kW binds."""
    tariff_import(site=garage, record=simple_record(flat_rate="10"), valid_from=date(2026, 1, 1))
    window(garage, datetime(2026, 5, 1, 9, 0, tzinfo=UTC), "6.5")
    four_cars(garage, plug_in)
    cost_aware(garage)

    done = run(garage, chargers)

    assert done.limit_kw == pytest.approx(25.5)
    assert done.limits["bound_kw"].startswith(
        "month_peak:flat (this month's facility demand peak 26 kW, set 2026-05-01 09:00 UTC, less a 0.5 kW margin, "
        "is above the 20 kW cap"
    )
    assert 20 < done.allocated_kw <= 25.5
    policy = done.limits["policy"]
    assert policy["effective_cap_kw"] == pytest.approx(25.5)
    assert policy["lifted"] is True
    assert policy["demands"]["flat"]["kw"] == pytest.approx(26)


def test_the_lifted_cap_shows_on_the_site_page_and_in_the_api(garage, plug_in, chargers, make_user) -> None:
    tariff_import(site=garage, record=simple_record(flat_rate="10"), valid_from=date(2026, 1, 1))
    window(garage, datetime(2026, 5, 1, 9, 0, tzinfo=UTC), "6.5")
    four_cars(garage, plug_in)
    cost_aware(garage)
    run(garage, chargers)
    _, client = make_user(Role.ADMIN)

    page = client.get(f"/sites/{garage.slug}/").content.decode()
    body = client.get(f"/api/v1/sites/{garage.slug}/").json()

    assert (
        "Cap in force: 25.5 kW — this month&#x27;s facility demand peak 26 kW, set 2026-05-01 09:00 UTC, "
        "less a 0.5 kW margin, is above the 20 kW cap" in page
    )
    assert "Cost-aware: use this month" in page
    assert body["policy"] == "cost_aware"
    assert body["effective_cap_kw"] == pytest.approx(25.5)
    assert body["effective_cap_reason"].startswith("this month's facility demand peak 26 kW")
    assert body["balancing_policy"] == "cost_aware"
    assert body["peak_margin_kw"] == "0.50"


def test_a_month_peak_below_the_cap_never_lifts_it(garage, plug_in, chargers) -> None:
    """16 kW (4 kWh in 15 min) is below the 20 kW cap: the cap stays 20 kW."""
    tariff_import(site=garage, record=simple_record(flat_rate="10"), valid_from=date(2026, 1, 1))
    window(garage, datetime(2026, 5, 1, 9, 0, tzinfo=UTC), "4")
    four_cars(garage, plug_in)
    cost_aware(garage)

    done = run(garage, chargers)

    assert done.limit_kw == pytest.approx(20)
    assert done.limits["bound_kw"] == "demand_cap"
    assert done.allocated_kw <= 20
    assert done.limits["policy"]["lifted"] is False
    assert done.limits["policy"]["reason"] == (
        "the site's demand cap 20 kW (this month's facility demand peak is 16 kW, not above it)"
    )


def test_the_ratchet_from_the_months_before_counts_as_billing_demand(garage, plug_in, chargers) -> None:
    """80 % ratchet of April's 40 kW = 32 kW billing demand already set; 32 - 0.5 = 31.5 kW cap."""
    record = simple_record(flat_rate="10", ratchet=[0.8] * 12)
    tariff_import(site=garage, record=record, valid_from=date(2026, 1, 1))
    SiteMonthDemand.objects.create(
        site=garage, month=date(2026, 4, 1), actual_kw=Decimal("40"), unmanaged_kw=Decimal("55")
    )
    window(garage, datetime(2026, 5, 1, 9, 0, tzinfo=UTC), "4")  # 16 kW this month
    four_cars(garage, plug_in)
    cost_aware(garage)

    done = run(garage, chargers)

    assert done.limit_kw == pytest.approx(31.5)
    assert done.limits["bound_kw"].startswith("month_peak:flat (this month's facility demand ratchet 32 kW")
    assert done.limits["policy"]["demands"]["flat"]["from_ratchet"] is True


def test_without_a_tariff_the_cost_aware_site_keeps_its_static_cap(garage, plug_in, chargers) -> None:
    window(garage, datetime(2026, 5, 1, 9, 0, tzinfo=UTC), "6.5")
    four_cars(garage, plug_in)
    cost_aware(garage)

    done = run(garage, chargers)

    assert done.limit_kw == pytest.approx(20)
    assert done.limits["bound_kw"] == "demand_cap"
    assert done.limits["policy"]["reason"] == "no tariff: static cap"


def test_a_static_site_is_balanced_as_before_whatever_its_month_peak(garage, plug_in, chargers) -> None:
    tariff_import(site=garage, record=simple_record(flat_rate="10"), valid_from=date(2026, 1, 1))
    window(garage, datetime(2026, 5, 1, 9, 0, tzinfo=UTC), "6.5")
    four_cars(garage, plug_in)

    done = run(garage, chargers)

    assert garage.balancing_policy == "static"
    assert done.limit_kw == pytest.approx(20)
    assert done.limits["bound_kw"] == "demand_cap"
    assert "policy" not in done.limits
    assert not SiteMonthPeak.objects.filter(site=garage).exists()


def car_leaving_tomorrow_morning(site: Site, plug_in) -> str:
    connector = plug_in(site, "cp-dep")
    session = connector.sessions.get()
    session.energy_needed_kwh = Decimal("10")
    session.departure_at = datetime(2026, 5, 2, 7, 0, tzinfo=UTC)
    session.save()
    return "cp-dep/1"


def test_a_car_leaving_tomorrow_waits_through_the_expensive_hours_and_charges_in_the_cheap_ones(
    garage, plug_in, chargers
) -> None:
    """By hand: energy $0.30 from 16:00 to 21:00, $0.10 otherwise. This month's peak is 10 kW
    (2.5 kWh at 09:00), so up to 10 - 0.5 = 9.5 kW adds no demand charge. The car needs 10 kWh
    by 07:00 tomorrow; 21:00-07:00 is 10 cheap hours x 9.5 kW = 95 kWh, so none goes in the
    expensive hours: at 16:30 it gets 0 A. At 21:30 the present slot is cheap (and the earliest
    of the cheapest): 9.5 kW / 0.69 kW per A = 13.8 A, rounded up to 14 A.
    """
    tariff_import(site=garage, record=simple_record(energy_rates=("0.10", "0.30")), valid_from=date(2026, 1, 1))
    window(garage, datetime(2026, 5, 1, 9, 0, tzinfo=UTC), "2.5")
    car = car_leaving_tomorrow_morning(garage, plug_in)
    cost_aware(garage)

    expensive = run(garage, chargers, now=NOW)  # 16:30
    cheap = run(garage, chargers, now=datetime(2026, 5, 1, 21, 30, tzinfo=UTC))

    assert expensive.limits["policy"]["cars"][car]["planned_kw"] == 0
    assert expensive.result["allocations_a"][car] == 0
    assert cheap.limits["policy"]["cars"][car]["planned_kw"] == pytest.approx(9.5)
    assert cheap.result["allocations_a"][car] == 14
    assert cheap.limit_kw == pytest.approx(20)  # the 10 kW peak does not lift the 20 kW cap


def test_a_car_without_a_departure_charges_as_before_under_the_cost_aware_policy(garage, plug_in, chargers) -> None:
    tariff_import(site=garage, record=simple_record(energy_rates=("0.10", "0.30")), valid_from=date(2026, 1, 1))
    plug_in(garage, "cp-free")
    cost_aware(garage)

    done = run(garage, chargers)

    assert done.limits["policy"]["cars"] == {}
    assert done.result["allocations_a"]["cp-free/1"] == 28  # 20 kW / 0.69 kW per A = 28.99, on the 1 A step


def test_the_month_peak_is_folded_forward_from_what_is_new(garage) -> None:
    """The first run of the month reads the month so far; a run in the same window reads only the
    stored row; after the next window ends, only the last hour's windows are read again."""
    from billing.policy import month_peaks
    from billing.selectors import tariff_in_force, tariff_spec

    tariff_import(site=garage, record=simple_record(flat_rate="10"), valid_from=date(2026, 1, 1))
    tariff = tariff_in_force(site=garage, on=date(2026, 5, 1))
    assert tariff is not None
    spec = tariff_spec(tariff)
    tz = UTC
    for hour in range(9):
        window(garage, datetime(2026, 5, 1, hour, 0, tzinfo=UTC), "1")  # 4 kW each
    window(garage, datetime(2026, 5, 1, 3, 15, tzinfo=UTC), "3")  # 12 kW at 03:15

    first = month_peaks(site=garage, tariff=tariff, spec=spec, tz=tz, now=NOW)
    again = month_peaks(site=garage, tariff=tariff, spec=spec, tz=tz, now=NOW + timedelta(minutes=5))
    window(garage, datetime(2026, 5, 1, 16, 30, tzinfo=UTC), "5")  # 20 kW in the window of NOW
    later = month_peaks(site=garage, tariff=tariff, spec=spec, tz=tz, now=NOW + timedelta(minutes=15))

    assert first.read_windows == 10
    assert first.peaks["peak"] == {"kw": 12.0, "at": "2026-05-01T03:15:00+00:00"}
    assert again.read_windows == 0
    assert later.read_windows == 1  # 15:45-16:45: only the new window holds an interval
    assert later.peaks["peak"]["kw"] == 20.0
    assert SiteMonthPeak.objects.get(site=garage).folded_until == datetime(2026, 5, 1, 16, 45, tzinfo=UTC)


def test_a_facility_meter_window_counts_instead_of_the_chargers_intervals(garage) -> None:
    """The grid meter's readings in a window (30 and 34 kW: mean 32 kW) outrank the chargers' 8 kW there."""
    from balancing.models import SiteMeterReading
    from billing.policy import month_peaks
    from billing.selectors import tariff_in_force, tariff_spec

    tariff_import(site=garage, record=simple_record(flat_rate="10"), valid_from=date(2026, 1, 1))
    tariff = tariff_in_force(site=garage, on=date(2026, 5, 1))
    assert tariff is not None
    at = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    window(garage, at, "2")
    for minute, kw in ((1, "30"), (8, "34")):
        SiteMeterReading.objects.create(
            site=garage, measured_at=at + timedelta(minutes=minute), source="api", power_kw=Decimal(kw)
        )

    peaks = month_peaks(site=garage, tariff=tariff, spec=tariff_spec(tariff), tz=UTC, now=NOW)

    assert peaks.peaks["peak"] == {"kw": 32.0, "at": "2026-05-01T12:00:00+00:00"}


def test_what_the_present_window_drew_is_read_from_the_meter_else_the_intervals(garage) -> None:
    """At 16:40 the window 16:30-16:45 has 10 minutes gone; the building draws 6 kW (1 kWh in
    them). No rows yet: (0, 0). The rollup's interval holds 3 kWh: the chargers drew 3 - 1 = 2
    kWh. The grid meter read 30 and 36 kW in the window (a 100 kW reading at 16:29 is the window
    before): 33 kW x 1/6 h = 5.5 kWh, less 1 kWh = 4.5 kWh; the meter outranks the interval."""
    from balancing.models import SiteMeterReading
    from billing.policy import window_drawn
    from billing.selectors import tariff_in_force, tariff_spec

    tariff_import(site=garage, record=simple_record(flat_rate="10"), valid_from=date(2026, 1, 1))
    tariff = tariff_in_force(site=garage, on=date(2026, 5, 1))
    assert tariff is not None
    spec = tariff_spec(tariff)
    now = datetime(2026, 5, 1, 16, 40, tzinfo=UTC)

    def drawn() -> tuple[float, float]:
        return window_drawn(site=garage, spec=spec, tz=UTC, now=now, other_kw=6.0)

    assert drawn() == (0.0, 0.0)
    window(garage, datetime(2026, 5, 1, 16, 30, tzinfo=UTC), "3")
    assert drawn() == (pytest.approx(1 / 6), pytest.approx(2.0))
    for minute, kw in ((29, "100"), (31, "30"), (36, "36")):
        SiteMeterReading.objects.create(
            site=garage, measured_at=datetime(2026, 5, 1, 16, minute, tzinfo=UTC), source="api", power_kw=Decimal(kw)
        )
    assert drawn() == (pytest.approx(1 / 6), pytest.approx(4.5))


def test_policy_settings_are_refused_with_the_field_named(garage, make_user) -> None:
    with pytest.raises(ValidationError) as bad_policy:
        site_limits_update(site=garage, limits={"balancing_policy": "cheapest"}, actor="test")
    with pytest.raises(ValidationError) as bad_margin:
        site_limits_update(site=garage, limits={"peak_margin_kw": Decimal("-1")}, actor="test")
    _, client = make_user(Role.ADMIN)
    response = client.patch(
        f"/api/v1/sites/{garage.slug}/",
        {"peak_margin_kw": "-1", "balancing_policy": "cheapest"},
        content_type="application/json",
    )

    assert "is not a balancing policy" in bad_policy.value.message_dict["balancing_policy"][0]
    assert "0 kW or more" in bad_margin.value.message_dict["peak_margin_kw"][0]
    assert response.status_code == 400
    assert "peak_margin_kw" in response.content.decode()
    assert "balancing_policy" in response.content.decode()


def test_balancing_never_imports_billing() -> None:
    """Billing imports balancing; the reverse would close a circle (the hook goes through ``balancing.policy``)."""
    offenders = []
    for path in sorted((ROOT / "balancing").rglob("*.py")):
        if "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {name}" for name in names if name.split(".")[0] == "billing"]

    assert offenders == []


def test_an_energy_manager_turns_on_the_cost_aware_policy_in_the_portal(garage, make_user) -> None:
    _, manager = make_user(Role.ENERGY_MANAGER)
    chosen = {**SITE_SETTINGS_FORM, "balancing_policy": "cost_aware", "peak_margin_kw": "1.5"}

    review = manager.post(f"/sites/{garage.slug}/settings/", chosen).content.decode()
    done = manager.post(f"/sites/{garage.slug}/settings/", {**chosen, "confirm": "on"})
    refused = manager.post(
        f"/sites/{garage.slug}/settings/", {**chosen, "peak_margin_kw": "-2", "confirm": "on"}
    ).content.decode()

    assert "Static: the demand cap as set → <strong>Cost-aware: use this month" in review
    assert done.status_code == 302
    garage.refresh_from_db()
    assert (garage.balancing_policy, garage.peak_margin_kw) == ("cost_aware", Decimal("1.5"))
    assert "The peak margin must be 0 kW or more." in refused


def test_a_quiet_cost_aware_site_repeats_its_last_run(garage, plug_in, chargers) -> None:
    tariff_import(site=garage, record=simple_record(flat_rate="10"), valid_from=date(2026, 1, 1))
    window(garage, datetime(2026, 5, 1, 9, 0, tzinfo=UTC), "6.5")
    four_cars(garage, plug_in)
    cost_aware(garage)
    first = run(garage, chargers)
    run(garage, chargers, now=NOW + timedelta(seconds=30))  # the pushes of the first run are booked now

    quiet = run(garage, chargers, now=NOW + timedelta(seconds=60))
    again = run(garage, chargers, now=NOW + timedelta(seconds=90))

    assert first.limits["policy"]["lifted"] is True
    assert again.pk == quiet.pk
    assert BalancingRun.objects.get(pk=quiet.pk).repeats >= 1
