"""The what-if estimator: sessions replayed unmanaged and through the real engine, the bill of
each, the NEC 625.42 capacity answer, and bad input that names the row or field."""

import json
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from billing.tariffs import tariff_from_urdb
from billing.whatif import WhatIfInputError, capacity, cost_aware_profile, sessions_from_csv, what_if
from tests.billing.conftest import LA, simple_record

HEADER = "station_id,arrival,departure,energy_kwh,max_kw\n"
# Four 7.2 kW cars plugging in at 08:00 local (UTC-7 in July), 14.4 kWh each, leaving at 17:00.
FOUR_CARS = HEADER + "".join(
    f"CP-{n},2026-07-01T08:00:00-07:00,2026-07-01T17:00:00-07:00,14.4,7.2\n" for n in range(1, 5)
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_four_cars_under_a_20_kw_limit_keep_their_energy_and_lower_the_peak() -> None:
    # Unmanaged: 4 x 7.2 = 28.8 kW for 2 h. Managed at 20 kW = 83.33 A at 240 V; in 0.1 A steps
    # the engine hands out 83.3 A (20.9 + 3 x 20.8 A) = 19.992 kW until every car has 14.4 kWh.
    sessions = sessions_from_csv(FOUR_CARS)
    spec = tariff_from_urdb(simple_record(flat_rate="10", energy_rates=("0.10",)))

    result = what_if(sessions, limit_kw=20, spec=spec, tz=LA)

    assert result["unmanaged_peak_kw"] == 28.8
    assert result["managed_peak_kw"] == 19.992
    assert result["energy_requested_kwh"] == 57.6
    assert result["energy_delivered_kwh"] == pytest.approx(57.6, abs=1e-3)
    assert result["energy_not_delivered_because_of_limit_kwh"] == pytest.approx(0, abs=1e-3)
    assert result["demand_charge_unmanaged"] == 288.00
    assert result["demand_charge_managed"] == 199.92
    assert result["energy_cost_unmanaged"] == result["energy_cost_managed"] == 5.76
    assert result["savings_total"] == pytest.approx(288.00 - result["demand_charge_managed"], abs=0.01)
    assert [m["month"] for m in result["months"]] == ["2026-07"]
    assert result["assumptions"]["engine_solves"] >= 1


def test_a_car_never_draws_after_it_leaves() -> None:
    # One 7.2 kW car wanting 20 kWh but leaving after 1 hour gets 7.2 kWh either way.
    text = HEADER + "CP-1,2026-07-01T08:00:00-07:00,2026-07-01T09:00:00-07:00,20,7.2\n"
    spec = tariff_from_urdb(simple_record())

    result = what_if(sessions_from_csv(text), limit_kw=50, spec=spec, tz=LA)

    assert result["energy_delivered_kwh"] == pytest.approx(7.2)
    assert result["energy_delivered_unmanaged_kwh"] == pytest.approx(7.2)


def test_a_tight_limit_delivers_less_and_claims_no_savings_for_it() -> None:
    # 6 kW for four cars that stay one hour: 6 A minimum = 1.44 kW each, so at most 4 charge;
    # they get 1.5 kW each = 6 kWh in total instead of 28.8 kWh.
    text = HEADER + "".join(
        f"CP-{n},2026-07-01T08:00:00-07:00,2026-07-01T09:00:00-07:00,7.2,7.2\n" for n in range(1, 5)
    )
    spec = tariff_from_urdb(simple_record(flat_rate="0", energy_rates=("0.10",)))

    result = what_if(sessions_from_csv(text), limit_kw=6, spec=spec, tz=LA)

    assert result["managed_peak_kw"] <= 6
    assert result["energy_not_delivered_because_of_limit_kwh"] == pytest.approx(28.8 - result["energy_delivered_kwh"])
    assert result["energy_cost_managed"] < result["energy_cost_unmanaged"]
    assert result["savings_total"] == pytest.approx(0, abs=0.01)  # cheaper only because less was delivered


def test_demand_windows_follow_the_local_clock_across_months() -> None:
    # A session from 23:30 on 31 July to 00:30 local on 1 August bills in both months.
    text = HEADER + "CP-1,2026-07-31T23:30:00-07:00,2026-08-01T00:30:00-07:00,7.2,7.2\n"
    result = what_if(sessions_from_csv(text), limit_kw=50, spec=tariff_from_urdb(simple_record()), tz=LA)
    assert [m["month"] for m in result["months"]] == ["2026-07", "2026-08"]
    assert [m["energy_managed_kwh"] for m in result["months"]] == [3.6, 3.6]


def test_capacity_without_and_with_load_management_by_nec_625_42() -> None:
    # A 100 kW panel: 7.2 kW chargers count 9 kW each without an EMS -> 11; with an EMS set to
    # 80 kW, each needs 6 A x 240 V = 1.44 kW at least -> 55.
    answer = capacity(panel_kw=Decimal(100), charger_kw=Decimal("7.2"), voltage_v=240, phases=1)

    assert answer["without_load_balancing"] == 11
    assert answer["ems_setting_kw"] == 80.0
    assert answer["with_load_balancing"] == 55
    assert answer["with_load_balancing_all_at_full_rate"] == 11


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("CP-2,2026-07-01T08:00:00,2026-07-01T10:00:00-07:00,5,7.2", "row 3: arrival: .* no UTC offset"),
        ("CP-2,2026-07-01T08:00:00-07:00,2026-07-01T07:00:00-07:00,5,7.2", "row 3: departure: not after arrival"),
        ("CP-2,2026-07-01T08:00:00-07:00,2026-07-01T10:00:00-07:00,lots,7.2", "row 3: energy_kwh: 'lots'"),
        ("CP-2,2026-07-01T08:00:00-07:00,2026-07-01T10:00:00-07:00,5,0", "row 3: max_kw: '0' must be > 0"),
        (",2026-07-01T08:00:00-07:00,2026-07-01T10:00:00-07:00,5,7.2", "row 3: station_id: empty"),
    ],
)
def test_a_bad_csv_row_is_named(line: str, message: str) -> None:
    text = HEADER + "CP-1,2026-07-01T08:00:00-07:00,2026-07-01T10:00:00-07:00,5,7.2\n" + line + "\n"
    with pytest.raises(WhatIfInputError, match=message):
        sessions_from_csv(text)


def test_a_missing_column_is_named() -> None:
    with pytest.raises(WhatIfInputError, match=r"row 1: header: missing column.*energy_kwh"):
        sessions_from_csv("station_id,arrival,departure\n")


def run_what_if_command(sessions: Path, tariff: Path, output: Path, *, timezone: str = "UTC") -> None:
    """The what_if command at a 20 kW limit."""
    call_command(
        "what_if",
        "--sessions",
        sessions,
        "--limit-kw",
        "20",
        "--tariff",
        tariff,
        "--timezone",
        timezone,
        "--output",
        output,
    )


def test_the_command_writes_the_comparison_with_the_issue_keys(
    tmp_path: Path, b19, capsys: pytest.CaptureFixture[str]
) -> None:
    sessions = write(tmp_path, "s.csv", FOUR_CARS)
    tariff = write(tmp_path, "b19.json", json.dumps(b19))
    output = tmp_path / "out.json"

    run_what_if_command(sessions, tariff, output, timezone="America/Los_Angeles")

    result = json.loads(output.read_text())
    for key in (
        "unmanaged_peak_kw",
        "managed_peak_kw",
        "energy_requested_kwh",
        "energy_delivered_kwh",
        "demand_charge_unmanaged",
        "demand_charge_managed",
        "energy_cost_unmanaged",
        "energy_cost_managed",
        "savings_total",
        "months",
        "capacity",
    ):
        assert key in result
    for key in (
        "cost_aware_peak_kw",
        "cost_aware_energy_delivered_kwh",
        "cost_aware_demand_charge",
        "cost_aware_energy_cost",
        "cost_aware_savings_total",
        "policies",
    ):
        assert key in result
    assert [p["policy"] for p in result["policies"]] == ["unmanaged", "static_cap", "cost_aware"]
    # B-19 in July: facility demand 30.77 $/kW on 28.8 kW vs ~20 kW; 08:00-10:00 is off-peak (0 $/kW).
    assert result["demand_charge_unmanaged"] == pytest.approx(28.8 * 30.77, abs=0.01)
    assert result["savings_total"] > 250
    header = next(line for line in capsys.readouterr().err.splitlines() if "unmanaged" in line)
    assert header.split() == ["unmanaged", "static", "cap", "cost-aware"]


def test_the_command_refuses_a_bad_row_and_writes_nothing(tmp_path: Path) -> None:
    sessions = write(tmp_path, "s.csv", FOUR_CARS + "CP-9,yesterday,2026-07-01T17:00:00-07:00,1,7.2\n")
    tariff = write(tmp_path, "t.json", json.dumps(simple_record()))
    output = tmp_path / "out.json"

    with pytest.raises(CommandError, match=r"--sessions: row 6: arrival: 'yesterday'"):
        run_what_if_command(sessions, tariff, output)
    assert not output.exists()


def test_the_command_refuses_a_tariff_missing_fields_and_writes_nothing(tmp_path: Path) -> None:
    record = simple_record()
    del record["energyweekdayschedule"]
    sessions = write(tmp_path, "s.csv", FOUR_CARS)
    tariff = write(tmp_path, "t.json", json.dumps(record))
    output = tmp_path / "out.json"

    with pytest.raises(CommandError, match=r"--tariff: energyweekdayschedule: missing"):
        run_what_if_command(sessions, tariff, output)
    assert not output.exists()


def test_sessions_over_a_dst_change_bill_in_local_time() -> None:
    # 8 March 2026 02:00 local does not exist in Los Angeles: from 01:00 PST to 04:00 PDT the
    # car is there 2 real hours, so a 7.2 kW car gets 14.4 kWh, not 21.6.
    text = HEADER + "CP-1,2026-03-08T01:00:00-08:00,2026-03-08T04:00:00-07:00,100,7.2\n"
    result = what_if(sessions_from_csv(text), limit_kw=50, spec=tariff_from_urdb(simple_record()), tz=LA)
    assert result["energy_delivered_kwh"] == pytest.approx(14.4)
    assert result["months"][0]["managed_peak_kw"] == 7.2


# Two 7.2 kW cars at 20:00-22:00 local wanting 7.2 kWh each; energy 0.30 $/kWh in 16-21 local and
# 0.10 otherwise, so 21-22 is the cheap hour.
TWO_EVENING_CARS = HEADER + "".join(
    f"CP-{n},2026-07-01T20:00:00-07:00,2026-07-01T22:00:00-07:00,7.2,7.2\n" for n in range(1, 3)
)


def test_cost_aware_moves_energy_to_the_cheap_hour_and_pays_less_than_the_static_cap() -> None:
    # Static cap (20 kW): both cars at 7.2 kW from 20:00, done by 21:00 -> peak 14.4 kW, 14.4 kWh
    # at 0.30 = 4.32 $, demand 14.4 x 10 = 144 $. Cost-aware: the lowest level that finishes both
    # is 7.2 kW for the two hours (7.2 x 10 = 72 $), 7.2 kWh at 0.30 and 7.2 kWh at 0.10 = 2.88 $.
    spec = tariff_from_urdb(simple_record(flat_rate="10", energy_rates=("0.10", "0.30")))

    result = what_if(sessions_from_csv(TWO_EVENING_CARS), limit_kw=20, spec=spec, tz=LA)

    policies = {p["policy"]: p for p in result["policies"]}
    assert policies["static_cap"]["peak_kw"] == pytest.approx(14.4, abs=0.01)
    assert policies["static_cap"]["energy_cost"] == pytest.approx(4.32, abs=0.01)
    assert policies["static_cap"]["demand_charge"] == pytest.approx(144.00, abs=0.1)
    assert result["cost_aware_peak_kw"] == pytest.approx(7.2, abs=0.01)
    assert result["cost_aware_energy_cost"] == pytest.approx(2.88, abs=0.01)
    assert result["cost_aware_demand_charge"] == pytest.approx(72.00, abs=0.1)
    assert result["cost_aware_energy_delivered_kwh"] == pytest.approx(result["energy_delivered_kwh"], abs=1e-3)
    assert result["cost_aware_energy_delivered_kwh"] == pytest.approx(14.4, abs=1e-3)
    assert policies["cost_aware"]["bill"] < policies["static_cap"]["bill"]
    assert result["cost_aware_savings_total"] == pytest.approx((144 + 4.32) - (72 + 2.88), abs=0.02)
    month = result["months"][0]
    assert month["cost_aware_peak_kw"] == result["cost_aware_peak_kw"]
    assert month["cost_aware_energy_kwh"] == pytest.approx(14.4, abs=1e-3)
    # The existing keys still describe the static cap.
    assert result["managed_peak_kw"] == policies["static_cap"]["peak_kw"]


def test_without_a_demand_charge_cost_aware_charges_only_in_the_cheap_hour() -> None:
    spec = tariff_from_urdb(simple_record(flat_rate="0", energy_rates=("0.10", "0.30")))

    run = cost_aware_profile(
        sessions_from_csv(TWO_EVENING_CARS),
        spec=spec,
        tz=LA,
        cap_kw=20,
        grid_kw=None,
        voltage_v=240,
        phases=1,
        step_minutes=15,
    )

    by_hour: dict[int, float] = {}
    for start, kwh in run.intervals.items():
        hour = start.astimezone(LA).hour
        by_hour[hour] = by_hour.get(hour, 0.0) + float(kwh)
    assert by_hour.get(20, 0.0) == pytest.approx(0.0, abs=1e-6)
    assert by_hour[21] == pytest.approx(14.4, abs=1e-3)
    assert run.delivered_by_row == pytest.approx({2: 7.2, 3: 7.2}, abs=1e-3)
    assert run.solves == len(run.solve_ms) == 8  # one plan + engine solve per 15-min step with cars present


def test_cost_aware_never_exceeds_the_grid_even_when_cars_cannot_finish() -> None:
    # Four 7.2 kW cars for one hour wanting 7.2 kWh each; a 30 kW cap but a 10 kW grid: at most 10 kWh.
    text = HEADER + "".join(
        f"CP-{n},2026-07-01T08:00:00-07:00,2026-07-01T09:00:00-07:00,7.2,7.2\n" for n in range(1, 5)
    )
    spec = tariff_from_urdb(simple_record())

    run = cost_aware_profile(
        sessions_from_csv(text), spec=spec, tz=LA, cap_kw=30, grid_kw=10, voltage_v=240, phases=1, step_minutes=15
    )

    assert max(float(kwh) * 4 for kwh in run.intervals.values()) <= 10 + 1e-6
    assert run.delivered_kwh == pytest.approx(sum(run.delivered_by_row.values()))
    assert run.delivered_kwh <= 10 + 1e-6
