"""Billing fixtures: small URDB records a reader can bill on paper, and the PG&E B-19 fixture."""

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
LA = ZoneInfo("America/Los_Angeles")
OFF, PEAK = 0, 1


def hours_schedule(peak_hours: range = range(16, 21), *, peak: int = PEAK, off: int = OFF) -> list[list[int]]:
    """12 x 24: ``peak`` in ``peak_hours`` (local), ``off`` otherwise."""
    return [[peak if h in peak_hours else off for h in range(24)] for _ in range(12)]


def simple_record(
    *,
    energy_rates: tuple[str, ...] = ("0.10",),
    flat_rate: str | None = "10",
    tou_demand_rates: tuple[str, ...] | None = None,
    ratchet: list[Any] | None = None,
    fixed: str | None = None,
    fixed_units: str = "$/month",
    window: int = 15,
) -> dict[str, Any]:
    """A URDB v7 record: energy by period (period 1 = 16-21 local on every day), flat demand,
    optional TOU demand (period 1 = 16-21 on weekdays only), ratchet, fixed charge."""
    energy_schedule = hours_schedule() if len(energy_rates) > 1 else hours_schedule(range(0))
    record: dict[str, Any] = {
        "name": "Test commercial TOU",
        "utility": "Test Utility",
        "energyratestructure": [[{"rate": float(rate), "unit": "kWh"}] for rate in energy_rates],
        "energyweekdayschedule": energy_schedule,
        "energyweekendschedule": energy_schedule,
        "demandwindow": window,
    }
    if flat_rate is not None:
        record["flatdemandstructure"] = [[{"rate": float(flat_rate)}]]
        record["flatdemandmonths"] = [0] * 12
    if tou_demand_rates is not None:
        record["demandratestructure"] = [[{"rate": float(rate)}] for rate in tou_demand_rates]
        record["demandweekdayschedule"] = hours_schedule()
        record["demandweekendschedule"] = hours_schedule(range(0))
    if ratchet is not None:
        record["demandratchetpercentage"] = ratchet
    if fixed is not None:
        record["fixedchargefirstmeter"] = float(fixed)
        record["fixedchargeunits"] = fixed_units
    return record


def b19_record() -> dict[str, Any]:
    return json.loads((FIXTURES / "pge_b19_secondary.json").read_text())


def constant_load(start: datetime, end: datetime, kw: str) -> dict[datetime, Decimal]:
    """15-minute intervals of a constant ``kw`` in [start, end) (UTC instants)."""
    out = {}
    at = start.astimezone(UTC)
    while at < end:
        out[at] = Decimal(kw) / 4
        at += timedelta(minutes=15)
    return out


@pytest.fixture
def b19() -> dict[str, Any]:
    return b19_record()
