"""Tariff parsing and monthly bills, each checked against a figure worked out by hand."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from billing.tariffs import TariffError, bill_month, month_bounds, tariff_from_urdb, tariff_json_load, tiered_charge
from tests.billing.conftest import LA, constant_load, simple_record

JULY_1 = datetime(2026, 7, 1, tzinfo=LA)  # a Wednesday


def bill(record: dict[str, Any], intervals: dict[datetime, Decimal], year: int, month: int, **kw: Any):
    return bill_month(tariff_from_urdb(record), intervals, tz=LA, year=year, month=month, **kw)


def test_a_spike_in_one_15_minute_window_sets_the_billing_demand() -> None:
    # 10 kW all day on 1 July, except 40 kW for 5 minutes at 14:00: the 14:00-14:15 window
    # averages (40 * 5 + 10 * 10) / 15 = 20 kW; every other window is 10 kW.
    load = constant_load(JULY_1, JULY_1 + timedelta(days=1), "10")
    spike = JULY_1.replace(hour=14).astimezone(UTC)
    load[spike] = Decimal(40) * 5 / 60 + Decimal(10) * 10 / 60

    result = bill(simple_record(flat_rate="10", energy_rates=("0.10",)), load, 2026, 7)

    assert result.flat_demand_kw == Decimal(20)
    assert result.peak_at == spike
    assert result.flat_demand_charge == Decimal("200.00")  # 20 kW x $10
    assert result.energy_kwh == Decimal("242.5")  # 24 h x 10 kW + (20 - 10) kW x 0.25 h
    assert result.energy_cost == Decimal("24.25")


def test_tou_demand_is_the_highest_window_inside_each_period() -> None:
    # Off-peak 30 kW at 03:00, 12 kW at 17:00 (weekday peak 16-21): the peak period bills 12 kW,
    # the facility charge the month's 30 kW.
    load = {
        JULY_1.replace(hour=3).astimezone(UTC): Decimal("7.5"),
        JULY_1.replace(hour=17).astimezone(UTC): Decimal("3"),
        JULY_1.replace(hour=17, minute=15).astimezone(UTC): Decimal("2"),
    }
    record = simple_record(flat_rate="10", tou_demand_rates=("0", "20"))

    result = bill(record, load, 2026, 7)

    assert result.tou_demand_kw == {0: Decimal(30), 1: Decimal(12)}
    assert result.tou_demand_charge == {0: Decimal(0), 1: Decimal(240)}
    assert result.flat_demand_charge == Decimal(300)
    assert result.demand_charge == Decimal(540)


def test_tou_demand_window_of_weekends_is_off_peak() -> None:
    saturday = datetime(2026, 7, 4, 17, tzinfo=LA)
    load = {saturday.astimezone(UTC): Decimal("5")}  # 20 kW on a Saturday at 17:00

    result = bill(simple_record(flat_rate=None, tou_demand_rates=("0", "20")), load, 2026, 7)

    assert result.tou_demand_kw == {0: Decimal(20)}
    assert result.demand_charge == 0


@pytest.mark.parametrize("share", [0.8, 80])
def test_ratchet_bills_a_share_of_the_highest_earlier_demand(share: float) -> None:
    load = {JULY_1.replace(hour=10).astimezone(UTC): Decimal("7.5")}  # 30 kW this month
    record = simple_record(flat_rate="10", ratchet=[share] * 12)

    result = bill(record, load, 2026, 7, ratchet_reference_kw=Decimal(50))

    assert result.flat_demand_kw == Decimal(30)
    assert result.ratchet_kw == Decimal(40)  # 80 % of 50 kW
    assert result.flat_billing_kw == Decimal(40)
    assert result.flat_demand_charge == Decimal(400)


def test_ratchet_does_not_lower_a_higher_demand() -> None:
    load = {JULY_1.replace(hour=10).astimezone(UTC): Decimal("15")}  # 60 kW
    result = bill(simple_record(ratchet=[0.8] * 12), load, 2026, 7, ratchet_reference_kw=Decimal(50))
    assert result.flat_billing_kw == Decimal(60)


def test_spring_forward_month_has_one_hour_less_and_bills_each_local_hour() -> None:
    # March 2026 in Los Angeles: 8 March has 23 hours. 4 kW constant = 1 kWh per interval.
    start, end = month_bounds(2026, 3, LA)
    load = constant_load(start, end, "4")
    record = simple_record(energy_rates=("0.10", "0.30"), flat_rate=None)

    result = bill(record, load, 2026, 3)

    assert len(load) == (31 * 24 - 1) * 4
    assert result.energy_kwh == Decimal(2972)
    assert result.energy_kwh_by_period == {0: Decimal(2352), 1: Decimal(620)}  # peak: 31 days x 5 h x 4 kW
    assert result.energy_cost == Decimal("235.20") + Decimal("186.00")


def test_fall_back_month_has_one_hour_more_and_keeps_the_repeated_windows_apart() -> None:
    start, end = month_bounds(2026, 11, LA)
    load = constant_load(start, end, "4")
    first_one_am = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)  # 01:00 PDT
    repeated_one_am = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)  # 01:00 PST, an hour later
    assert first_one_am.astimezone(LA).hour == repeated_one_am.astimezone(LA).hour == 1
    load[first_one_am] = Decimal(2)  # 8 kW
    load[repeated_one_am] = Decimal(1)  # 4 kW: the two must not add up to 12 kW

    result = bill(simple_record(energy_rates=("0.10", "0.30"), flat_rate="10"), load, 2026, 11)

    assert len(load) == (30 * 24 + 1) * 4
    assert result.energy_kwh == Decimal(2885)
    assert result.energy_kwh_by_period[1] == Decimal(600)
    assert result.flat_demand_kw == Decimal(8)
    assert result.peak_at == first_one_am


def test_fixed_charge_per_day_counts_the_days_of_the_month() -> None:
    result = bill(simple_record(fixed="45.09", fixed_units="$/day"), {}, 2026, 2)
    assert result.fixed_charge == Decimal("1262.52")  # 28 x 45.09
    assert result.total == Decimal("1262.52")


def test_tiers_charge_each_block_at_its_price() -> None:
    record = simple_record(flat_rate=None)
    record["energyratestructure"] = [[{"max": 100, "rate": 0.10}, {"max": 300, "rate": 0.08}, {"rate": 0.05}]]
    spec = tariff_from_urdb(record)

    assert tiered_charge(spec.energy_periods[0], Decimal(350)) == Decimal("28.50")  # 10 + 16 + 2.50
    assert tiered_charge(spec.energy_periods[0], Decimal(50)) == Decimal("5.00")


def test_rate_plus_adj_is_the_price() -> None:
    record = simple_record(flat_rate=None)
    record["energyratestructure"] = [[{"rate": 0.1, "adj": 0.015, "unit": "kWh"}]]
    assert tariff_from_urdb(record).energy_periods[0][0].price == Decimal("0.115")


def test_a_30_minute_demand_window_averages_two_intervals_on_the_local_clock() -> None:
    at = JULY_1.replace(hour=9).astimezone(UTC)
    load = {at: Decimal(10), at + timedelta(minutes=15): Decimal(0)}  # 40 kW then 0 kW
    result = bill(simple_record(window=30), load, 2026, 7)
    assert result.flat_demand_kw == Decimal(20)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.pop("energyratestructure"), "energyratestructure"),
        (lambda r: r.pop("energyweekendschedule"), "energyweekendschedule"),
        (lambda r: r["energyratestructure"][0][0].pop("rate"), "energyratestructure[0][0].rate"),
        (lambda r: r["energyweekdayschedule"][5].__setitem__(3, 7), "energyweekdayschedule[5][3]"),
        (lambda r: r.pop("flatdemandmonths"), "flatdemandmonths"),
        (lambda r: r.__setitem__("demandratchetpercentage", [0.5] * 11), "demandratchetpercentage"),
        (lambda r: r.__setitem__("fixedchargeunits", "$/kWh"), "fixedchargeunits"),
        (lambda r: r.pop("name"), "name"),
    ],
)
def test_a_record_missing_or_wrong_names_the_field(change, field: str) -> None:
    record = simple_record(fixed="10")
    change(record)
    with pytest.raises(TariffError) as raised:
        tariff_from_urdb(record)
    assert raised.value.path == field
    assert str(raised.value).startswith(f"{field}: ")


def test_the_b19_record_parses_into_its_periods(b19) -> None:
    spec = tariff_from_urdb(b19)

    assert spec.utility == "Pacific Gas & Electric Co"
    assert len(spec.energy_periods) == 6
    assert spec.energy_period(datetime(2026, 7, 1, 17, tzinfo=LA)) == 0  # summer peak
    assert spec.energy_period(datetime(2026, 7, 1, 15, tzinfo=LA)) == 1  # summer weekday part-peak
    assert spec.energy_period(datetime(2026, 7, 4, 15, tzinfo=LA)) == 2  # summer Saturday: off-peak
    assert spec.energy_period(datetime(2026, 4, 1, 10, tzinfo=LA)) == 5  # spring super off-peak
    assert spec.demand_period(datetime(2026, 7, 1, 17, tzinfo=LA)) == 1
    assert spec.fixed_units == "$/day"


def test_a_july_bill_under_b19_matches_the_hand_calculation(b19) -> None:
    # Wednesday 1 July 2026: 20 kW 17:00-18:00 (peak), 10 kW 14:00-15:00 (part-peak),
    # 30 kW 10:00-10:15 (off-peak). Worked out by hand:
    #   energy: 20 kWh x 0.19872 + 10 kWh x 0.15953 + 7.5 kWh x 0.13171 = 3.9744 + 1.5953 + 0.987825
    #   facility demand: 30 kW x 30.77 = 923.10
    #   TOU demand: peak 20 kW x 29.26 = 585.20; part-peak 10 kW x 5.89 = 58.90; off 30 kW x 0 = 0
    #   fixed: 31 days x 45.09 = 1397.79
    load = {}
    load.update(constant_load(JULY_1.replace(hour=17), JULY_1.replace(hour=18), "20"))
    load.update(constant_load(JULY_1.replace(hour=14), JULY_1.replace(hour=15), "10"))
    load.update(constant_load(JULY_1.replace(hour=10), JULY_1.replace(hour=10, minute=15), "30"))

    result = bill(b19, load, 2026, 7)

    assert result.energy_cost == Decimal("6.557525")
    assert result.flat_demand_charge == Decimal("923.10")
    assert result.tou_demand_charge == {0: Decimal(0), 1: Decimal("585.20"), 2: Decimal("58.90")}
    assert result.fixed_charge == Decimal("1397.79")
    assert result.total == Decimal("6.557525") + Decimal("923.10") + Decimal("585.20") + Decimal("58.90") + Decimal(
        "1397.79"
    )


def test_an_api_answer_with_one_item_is_accepted(b19) -> None:
    assert tariff_from_urdb({"items": [b19]}).name == b19["name"]


def _set_tier(key: str, **values: Any):
    return lambda r: r[key][0][0].update(values)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (_set_tier("energyratestructure", rate=1e308), "energyratestructure[0][0].rate"),
        (_set_tier("energyratestructure", rate=-0.1), "energyratestructure[0][0].rate"),
        (_set_tier("energyratestructure", rate=100.01), "energyratestructure[0][0].rate"),
        (_set_tier("energyratestructure", rate="NaN"), "energyratestructure[0][0].rate"),
        (_set_tier("energyratestructure", rate="-Infinity"), "energyratestructure[0][0].rate"),
        (_set_tier("energyratestructure", rate=0.1, adj=-0.2), "energyratestructure[0][0].adj"),
        (_set_tier("energyratestructure", rate="0." + "1" * 40), "energyratestructure[0][0].rate"),
        (_set_tier("energyratestructure", rate=10**5000), "energyratestructure[0][0].rate"),
        (_set_tier("energyratestructure", rate="1" * 100_000), "energyratestructure[0][0].rate"),
        (_set_tier("flatdemandstructure", rate=10_001), "flatdemandstructure[0][0].rate"),
        (_set_tier("flatdemandstructure", rate=10, max=1e12), "flatdemandstructure[0][0].max"),
        (lambda r: r.__setitem__("fixedchargefirstmeter", 1e7), "fixedchargefirstmeter"),
        (lambda r: r.__setitem__("fixedchargefirstmeter", -5), "fixedchargefirstmeter"),
        (lambda r: r.__setitem__("demandwindow", 10**9), "demandwindow"),
        (lambda r: r.__setitem__("demandratchetpercentage", [101] * 12), "demandratchetpercentage[0]"),
    ],
)
def test_a_value_out_of_bounds_is_refused_naming_the_field(change, field: str) -> None:
    record = simple_record(fixed="10")
    change(record)
    with pytest.raises(TariffError) as raised:
        tariff_from_urdb(record)
    assert raised.value.path == field


def test_credits_in_adj_and_the_bounds_themselves_are_accepted() -> None:
    record = simple_record(energy_rates=("100",), flat_rate="10000", fixed="1000000")
    record["energyratestructure"][0][0]["adj"] = -99.5  # a credit adjustment, price still >= 0
    spec = tariff_from_urdb(record)
    assert spec.energy_periods[0][0].price == Decimal("0.5")
    assert spec.fixed_charge == Decimal(1_000_000)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 32 levels"),
        (b'{"a": ' * 33 + b"1" + b"}" * 33, "nested deeper than 32 levels"),
        (b'{"rate": ' + b"9" * 100_000 + b"}", "more than 30 digits"),
        (b'{"rate": 0.' + b"1" * 40 + b"}", "more than 30 digits"),
        (b'{"rate": NaN}', "NaN is not a number"),
        (b'{"rate": Infinity}', "Infinity is not a number"),
        (b" " * (512 * 1024 + 1), "larger than 512 KiB"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{nope", "not JSON (line 1"),
        (b'{"name": "Peak\\u0000"}', "NUL character"),
        (b'{"a": [{"\\u0000": 1}]}', "NUL character"),
        (b'"' + b'\\"' * 200_000, "not JSON (line 1"),  # one pass: escaped quotes are not rescanned
    ],
)
def test_a_rate_record_file_the_parser_cannot_take_is_refused_clearly(raw: bytes, problem: str) -> None:
    with pytest.raises(TariffError) as raised:
        tariff_json_load(raw)
    assert raised.value.path == "record"
    assert problem in raised.value.problem


def test_brackets_inside_strings_do_not_count_as_nesting(b19) -> None:
    record = {**b19, "description": '"[[[[' * 40}
    assert tariff_json_load(json.dumps(record))["description"] == '"[[[[' * 40
