"""The simulated cost-aware month kept up to the last midnight, and the report resuming it."""

import json
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from balancing.models import Site
from billing import whatif
from billing.models import SimulationCheckpoint
from billing.reports.checkpoints import simulation_checkpoints_advance
from billing.savings_reports import savings_report_generate
from billing.simulation_checkpoints import replay_settings
from billing.tariffs import tariff_from_urdb, tariff_json_load
from billing.whatif import cost_aware_profile, replay_inputs_key, sessions_from_csv
from tests.billing.conftest import LA
from tests.billing.test_reports import mall_site, rows

BENCH_DATA = Path(__file__).resolve().parents[2] / "bench" / "data"
CALTECH = ZoneInfo("America/Los_Angeles")
COST_AWARE = ("cost_aware_peak_kw", "cost_aware_energy_kwh", "cost_aware_energy_cost", "cost_aware_bill")


def caltech_days() -> tuple[list, dict]:
    """Three days of the real ACN sessions (Caltech, July 2019) and their TOU tariff, as the bench."""
    spec = tariff_from_urdb(tariff_json_load((BENCH_DATA / "sce_tou_ev_4_2019.json").read_bytes()))
    sessions = [
        s
        for s in sessions_from_csv((BENCH_DATA / "acn_caltech_2019-07.csv").read_text(), default_max_kw=6.656)
        if s.arrival < datetime(2019, 7, 4, tzinfo=CALTECH)
    ]
    settings = {"spec": spec, "tz": CALTECH, "cap_kw": 30.0, "grid_kw": 150.0, "voltage_v": 208.0, "phases": 1}
    return sessions, settings | {"step_minutes": 15}


def test_a_replay_stopped_with_cars_plugged_in_and_resumed_books_what_one_run_books() -> None:
    sessions, settings = caltech_days()
    whole = cost_aware_profile(sessions, **settings)

    stopped = cost_aware_profile(sessions, stop_at=datetime(2019, 7, 2, 18, tzinfo=CALTECH), **settings)
    state = json.loads(json.dumps(stopped.state))  # as stored: JSON
    resumed = cost_aware_profile(sessions, resume=state, **settings)

    assert state["at"] == "2019-07-03T01:00:00+00:00"  # 18:00 local, the step it stopped before
    assert len(state["cars"]) >= 5  # the evening's cars, partly charged
    assert max(at for at in stopped.intervals) < datetime(2019, 7, 3, 1, tzinfo=ZoneInfo("UTC"))
    assert resumed.intervals == whole.intervals
    assert resumed.delivered_by_row == whole.delivered_by_row
    assert resumed.delivered_kwh == whole.delivered_kwh


def test_the_inputs_key_changes_with_a_session_before_the_cut_and_not_after_it() -> None:
    sessions, _ = caltech_days()
    cut = datetime(2019, 7, 2, tzinfo=CALTECH)
    key = replay_inputs_key(sessions, before=cut, settings={"cap_kw": 30.0})
    before = next(i for i, s in enumerate(sessions) if s.arrival < cut)
    after = next(i for i, s in enumerate(sessions) if s.arrival >= cut)

    def with_energy(index: int) -> list:
        changed = list(sessions)
        s = changed[index]
        changed[index] = type(s)(s.row, s.station_id, s.arrival, s.departure, s.energy_kwh + 1, s.max_kw)
        return changed

    assert replay_inputs_key(with_energy(after), before=cut, settings={"cap_kw": 30.0}) == key
    assert replay_inputs_key(with_energy(before), before=cut, settings={"cap_kw": 30.0}) != key
    assert replay_inputs_key(sessions, before=cut, settings={"cap_kw": 31.0}) != key


def test_a_state_stored_by_another_version_of_the_replay_is_not_resumed(monkeypatch) -> None:
    sessions, settings = caltech_days()
    cut = datetime(2019, 7, 3, tzinfo=CALTECH)
    now = replay_inputs_key(sessions, before=cut, settings=replay_settings(settings["spec"], cap_kw=30.0))
    monkeypatch.setattr(whatif, "REPLAY_VERSION", whatif.REPLAY_VERSION + 1)
    newer = replay_inputs_key(sessions, before=cut, settings=replay_settings(settings["spec"], cap_kw=30.0))
    assert newer != now


@pytest.mark.django_db
def test_the_report_resumes_the_stored_month_and_ignores_it_once_its_inputs_changed() -> None:
    site = mall_site()  # runs the static cap: its cost-aware column is simulated
    fresh = rows(savings_report_generate(year=2026, month=10, reason="request"))["mall"]

    assert simulation_checkpoints_advance(now=datetime(2026, 10, 6, 3, tzinfo=LA)) == 1
    assert simulation_checkpoints_advance(now=datetime(2026, 10, 6, 4, tzinfo=LA)) == 0  # already there
    checkpoint = SimulationCheckpoint.objects.get(site=site, month=date(2026, 10, 1), policy="cost_aware")
    assert checkpoint.cut == datetime(2026, 10, 6, tzinfo=LA)
    assert sum(Decimal(kwh) for kwh in checkpoint.state["intervals"].values()) == Decimal(16)  # Oct 5's cars

    resumed = rows(savings_report_generate(year=2026, month=10, reason="request"))["mall"]
    assert [resumed[name] for name in COST_AWARE] == [fresh[name] for name in COST_AWARE]

    # The report reads the stored state: a state saying the cars drew twice as much shows.
    state = checkpoint.state
    state["intervals"] = {at: str(Decimal(kwh) * 2) for at, kwh in state["intervals"].items()}
    SimulationCheckpoint.objects.filter(pk=checkpoint.pk).update(state=state)
    doubled = rows(savings_report_generate(year=2026, month=10, reason="request"))["mall"]
    assert Decimal(doubled["cost_aware_energy_cost"]) == 2 * Decimal(fresh["cost_aware_energy_cost"])

    # Another demand cap: the stored replay's inputs changed, so the month is replayed whole.
    Site.objects.filter(pk=site.pk).update(demand_cap_kw=Decimal(12))
    recomputed = rows(savings_report_generate(year=2026, month=10, reason="request"))["mall"]
    SimulationCheckpoint.objects.all().delete()
    without = rows(savings_report_generate(year=2026, month=10, reason="request"))["mall"]
    assert [recomputed[name] for name in COST_AWARE] == [without[name] for name in COST_AWARE]
    assert recomputed["cost_aware_energy_cost"] != doubled["cost_aware_energy_cost"]  # the stale state unused


@pytest.mark.django_db
def test_a_session_still_open_holds_the_checkpoint_before_its_arrival() -> None:
    site = mall_site()
    from chargepoint.models import ChargingSession

    ChargingSession.objects.filter(station__site=site, transaction_id="2").update(stopped_at=None, meter_stop_wh=None)

    simulation_checkpoints_advance(now=datetime(2026, 10, 6, 3, tzinfo=LA))

    checkpoint = SimulationCheckpoint.objects.get(site=site, policy="cost_aware")
    assert checkpoint.cut == datetime(2026, 10, 5, 10, tzinfo=LA)  # the open session's arrival
    assert checkpoint.state["intervals"] == {}
    assert timedelta(0) <= datetime(2026, 10, 6, tzinfo=LA) - checkpoint.cut


@pytest.mark.django_db
def test_checkpoints_older_than_last_month_are_deleted_as_the_task_goes() -> None:
    site = mall_site()
    for month in (date(2026, 8, 1), date(2026, 9, 1)):
        SimulationCheckpoint.objects.create(
            site=site, month=month, policy="cost_aware", cut=datetime(2026, 9, 1, tzinfo=LA), inputs_key="x", state={}
        )

    simulation_checkpoints_advance(now=datetime(2026, 10, 6, 3, tzinfo=LA))

    months = sorted(SimulationCheckpoint.objects.values_list("month", flat=True))
    assert months == [date(2026, 9, 1), date(2026, 10, 1)]


@pytest.mark.django_db
def test_a_run_out_of_time_leaves_the_other_sites_to_the_next_run() -> None:
    mall_site("mall")
    mall_site("plaza")
    now = datetime(2026, 10, 6, 3, tzinfo=LA)

    assert simulation_checkpoints_advance(now=now, budget_s=0.0) == 1  # the first site, then out of time
    assert simulation_checkpoints_advance(now=now, budget_s=0.0) == 1  # the next run takes the other
    assert simulation_checkpoints_advance(now=now) == 0
    assert SimulationCheckpoint.objects.count() == 2
