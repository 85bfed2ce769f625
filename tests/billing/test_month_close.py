"""Closing a month: the report task takes the rollup's pending marks (late readings included)
instead of re-reading the month, and ``rebuild_intervals`` is the operator's full rebuild."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from balancing.models import Site
from billing.interval_rollup import intervals_roll_up
from billing.models import IntervalEnergy, SavingsReport
from billing.tariff_versions import tariff_import
from billing.tasks import generate_savings_report
from chargepoint.models import ChargingStation, RollupPending
from tests.billing.conftest import LA, simple_record
from tests.billing.readings import readings_write
from tests.billing.test_reports import rows
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db
OCT_5 = datetime(2026, 10, 5, 10, tzinfo=LA).astimezone(UTC)  # 10:00 local
SEP_30 = datetime(2026, 9, 30, 10, tzinfo=LA).astimezone(UTC)


def at(minutes: float, day: datetime = OCT_5) -> datetime:
    return day + timedelta(minutes=minutes)


def site_with_charger(slug: str) -> tuple[Site, ChargingStation]:
    """A 7.68 kW charger (32 A, 240 V) on a site billed $10 per kW of peak demand."""
    site = SiteFactory(slug=slug, timezone="America/Los_Angeles", voltage_v=Decimal(240), phases=1)
    tariff_import(site=site, record=simple_record(flat_rate="10"), valid_from=date(2026, 1, 1))
    station = ChargingStation.objects.create(
        charge_point_id=f"{slug.upper()}-1", site=site, max_current_a=Decimal(32), phases=1, wiring="L1"
    )
    return site, station


def four_hours_at_4_kw(station: ChargingStation, day: datetime = OCT_5, *, missing: int | None = None) -> None:
    """Register readings every 15 minutes (but the ``missing`` one), 1 kWh apart: 4 kW for four hours."""
    readings_write(station, [(at(15 * i, day), {"energy_wh": 1000 * i}) for i in range(17) if i != missing])


def station_rows(site: Site) -> dict[datetime, tuple[int, Decimal]]:
    return {r.start: (r.pk, r.energy_kwh) for r in IntervalEnergy.objects.filter(site=site, station__isnull=False)}


def test_the_month_report_takes_the_pending_marks_and_rewrites_only_their_intervals() -> None:
    site, station = site_with_charger("close")
    four_hours_at_4_kw(station, missing=2)  # 10:15 -> 10:45 local: 2 kWh spread evenly
    intervals_roll_up()
    before = station_rows(site)
    assert len(before) == 16
    # The 10:30 reading comes in late, after the last rollup: 1.5 kWh. Its pending mark is the
    # only sign of it; 10:30-10:45 is now 6 kW (1.5 kWh), and the month's peak with it.
    readings_write(station, [(at(30), {"energy_wh": 1500})])
    assert RollupPending.objects.filter(station=station).count() == 1

    report = SavingsReport.objects.get(pk=generate_savings_report(month="2026-10", reason="schedule"))

    assert not RollupPending.objects.exists()
    after = station_rows(site)
    assert (after[at(15)][1], after[at(30)][1]) == (Decimal("0.5"), Decimal("1.5"))
    assert sum(kwh for _, kwh in after.values()) == Decimal(16)  # the same energy, drawn later
    assert rows(report)["close"]["actual_peak_kw"] == "6.000"
    assert rows(report)["close"]["actual_demand_charge"] == "60.00"
    # Only the intervals the late reading can touch were rewritten; a month's rebuild would have
    # replaced every row (a new id each).
    kept = [start for start in before if after[start][0] == before[start][0]]
    assert sorted(set(before) - set(kept)) == [at(15), at(30), at(45), at(60)]  # its mark's, one reading around


def rebuild(*args: str) -> None:
    call_command("rebuild_intervals", "--tenant", "alpha", *args)


def test_rebuild_intervals_recomputes_a_month_of_one_site_from_the_raw_readings(capsys) -> None:
    site, station = site_with_charger("repair")
    other, other_station = site_with_charger("untouched")
    for day in (OCT_5, SEP_30):
        four_hours_at_4_kw(station, day)
        four_hours_at_4_kw(other_station, day)
    intervals_roll_up()
    rolled_up = {s.pk: station_rows(s) for s in (site, other)}
    # Rows gone wrong, as a fix of the rollup or an edit by hand would leave them.
    IntervalEnergy.objects.filter(site__in=[site, other], start=at(30)).delete()
    IntervalEnergy.objects.filter(site__in=[site, other], start__in=[at(45), at(45, SEP_30)]).update(
        energy_kwh=Decimal(9)
    )

    rebuild("--site", "repair", "--month", "2026-10")

    repaired = station_rows(site)
    assert {start: kwh for start, (_, kwh) in repaired.items()} == {
        start: kwh for start, (_, kwh) in rolled_up[site.pk].items() if start != at(45, SEP_30)
    } | {at(45, SEP_30): Decimal(9)}  # September is another month
    site_totals = IntervalEnergy.objects.filter(site=site, station__isnull=True, start__gte=at(-60))
    assert {r.start: r.energy_kwh for r in site_totals} == {
        start: kwh for start, (_, kwh) in repaired.items() if start >= at(-60)
    }
    untouched = station_rows(other)
    assert at(30) not in untouched  # another site
    assert untouched[at(45)][1] == Decimal(9)
    assert "alpha repair 2026-10: 16 station interval rows" in capsys.readouterr().out

    rebuild("--month", "2026-10")  # every site

    assert {start: kwh for start, (_, kwh) in station_rows(other).items() if start >= at(-60)} == {
        start: kwh for start, (_, kwh) in rolled_up[other.pk].items() if start >= at(-60)
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--month", "2026-13"], r"--month: '2026-13' is not a month"),
        (["--month", "2099-01"], r"--month: 2099-01 has not begun yet"),
        (["--site", "nowhere", "--month", "2026-10"], r"--site: no site with slug 'nowhere'"),
    ],
)
def test_rebuild_intervals_names_the_bad_option(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        rebuild(*args)


def test_rebuild_intervals_names_an_unknown_organisation() -> None:
    with pytest.raises(CommandError, match=r"--tenant: "):
        call_command("rebuild_intervals", "--tenant", "nobody", "--month", "2026-10")
