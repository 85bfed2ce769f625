"""Utility tariffs: parse an OpenEI URDB v7 rate record, and bill a month of interval energy.

Pure: no Django, no I/O, ``Decimal`` money at full precision (round only where shown).

What is understood of a URDB v7 record (field names as the API returns them):

- ``energyratestructure``: one list of tiers per period; a tier is ``{"max": kWh, "rate":
  $/kWh, "adj": $/kWh, "unit": "kWh"}``, price = ``rate + adj``; the last tier has no ``max``.
  Tiers count the period's kWh within the month.
- ``energyweekdayschedule`` / ``energyweekendschedule``: 12 months x 24 hours of zero-indexed
  periods, in the site's local clock time (Saturday and Sunday are the weekend).
- ``flatdemandstructure`` + ``flatdemandmonths``: the facility (flat) demand charge, $/kW of
  the month's highest demand; tiers by kW; 12 period indices, one per month.
- ``demandratestructure`` + ``demandweekdayschedule`` / ``demandweekendschedule``: time-of-use
  demand charges: per period, $/kW of the highest demand in that period's hours.
- ``demandwindow``: minutes of the averaging window (15 by default); windows are aligned to
  the local clock. Demand of a window = its energy / its length.
- ``demandratchetpercentage``: 12 values, one per month: the flat billing demand is at least
  that share of the highest flat demand of the 11 months before. URDB data hold fractions
  (0.8) and percentages (80) alike: a value above 1 is read as a percentage.
- ``fixedchargefirstmeter`` with ``fixedchargeunits`` ``$/month`` (default) or ``$/day``.

Daylight saving time: intervals are UTC instants; each is placed in the site's local clock, so
a spring-forward day has 23 hours of intervals and a fall-back day 25, and the repeated hour
is billed twice under the period of its local hour. Holidays are not in URDB v7 and are not
modelled (a holiday is billed as the weekday it is).
"""

from __future__ import annotations

import calendar
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

MONTHS = 12
HOURS = 24
DEFAULT_DEMAND_WINDOW_MINUTES = 15
FIXED_UNITS = ("$/month", "$/day")
ZERO = Decimal(0)

# Bounds of what a rate record may hold: generous for any real tariff, small enough that every
# bill of a month stays a number the reports can round to the cent.
MAX_DIGITS = 30  # significant digits (and decimal places) of any number
MAX_NUMBER_CHARS = 64  # a number written as text
PRICE_MAX = {"kWh": Decimal(100), "kW": Decimal(10_000)}  # $ per kWh of energy, per kW of demand
TIER_MAX_UNITS = Decimal(10**9)  # kWh or kW where a tier ends
FIXED_CHARGE_MAX = Decimal(1_000_000)  # $ per month or per day
DEMAND_WINDOW_MAX_MINUTES = 24 * 60
RECORD_MAX_BYTES = 512 * 1024  # an uploaded rate record's JSON (a real one is a few kB)
RECORD_MAX_DEPTH = 32  # nesting of its arrays and objects (a URDB record needs 4)
JSON_TOKENS = re.compile(r'["\[\]{}]')
JSON_STRING_REST = re.compile(r'(?:[^"\\]|\\.)*"', re.S)  # after the opening quote


class TariffError(ValueError):
    """A rate record that cannot be billed; the message starts with the field path."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class Tier:
    """One tier: price per unit (``rate + adj``) up to ``max_units`` (None: no upper bound)."""

    max_units: Decimal | None
    price: Decimal


Periods = tuple[tuple[Tier, ...], ...]
Schedule = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class TariffSpec:
    """A parsed tariff; built by ``tariff_from_urdb``."""

    name: str
    utility: str
    label: str
    energy_periods: Periods
    energy_weekday: Schedule
    energy_weekend: Schedule
    flat_demand_periods: Periods = ()
    flat_demand_months: tuple[int, ...] = ()
    demand_periods: Periods = ()
    demand_weekday: Schedule = ()
    demand_weekend: Schedule = ()
    demand_window_minutes: int = DEFAULT_DEMAND_WINDOW_MINUTES
    ratchet_fractions: tuple[Decimal, ...] = (ZERO,) * MONTHS
    fixed_charge: Decimal = ZERO
    fixed_units: str = "$/month"

    def energy_period(self, local: datetime) -> int:
        table = self.energy_weekend if local.weekday() >= 5 else self.energy_weekday
        return table[local.month - 1][local.hour]

    def demand_period(self, local: datetime) -> int | None:
        if not self.demand_periods:
            return None
        table = self.demand_weekend if local.weekday() >= 5 else self.demand_weekday
        return table[local.month - 1][local.hour]


def _number(value: Any, path: str, *, low: Decimal | None = None, high: Decimal | None = None) -> Decimal:
    """A finite number of at most ``MAX_DIGITS`` digits (and decimal places), within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise TariffError(path, f"expected a number, got {_shown(value)}")
    if isinstance(value, str) and len(value) > MAX_NUMBER_CHARS:
        raise TariffError(path, f"expected a number of at most {MAX_DIGITS} digits")
    try:
        number = Decimal(value) if isinstance(value, int | Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise TariffError(path, f"expected a number, got {_shown(value)}") from None
    if not number.is_finite():
        raise TariffError(path, f"expected a finite number, got {_shown(value)}")
    if (low is not None and number < low) or (high is not None and number > high):
        raise TariffError(path, f"{_shown(value)} is outside {low if low is not None else '...'}..{high}")
    digits = number.as_tuple()
    if len(digits.digits) > MAX_DIGITS or int(digits.exponent) < -MAX_DIGITS:
        raise TariffError(path, f"expected a number of at most {MAX_DIGITS} digits")
    return number


def _shown(value: Any) -> str:
    """A value as quoted in an error: short, whatever was sent."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**MAX_DIGITS else "a huge number"
    return text if len(text) <= 40 else text[:37] + "..."


def _tiers(record: Mapping[str, Any], key: str, unit: str) -> Periods:
    raw = record.get(key)
    if not isinstance(raw, list) or not raw:
        raise TariffError(key, "missing or empty (a list of periods, each a list of tiers)")
    periods = []
    for p, tiers in enumerate(raw):
        if not isinstance(tiers, list) or not tiers:
            raise TariffError(f"{key}[{p}]", "expected a non-empty list of tiers")
        parsed = []
        previous_max = ZERO
        for t, tier in enumerate(tiers):
            path = f"{key}[{p}][{t}]"
            if not isinstance(tier, dict):
                raise TariffError(path, "expected an object with 'rate'")
            if "rate" not in tier:
                raise TariffError(f"{path}.rate", "missing")
            if tier.get("unit") not in (None, unit):
                raise TariffError(f"{path}.unit", f"{tier['unit']!r} is not supported (only {unit!r})")
            top = PRICE_MAX[unit]
            price = _number(tier["rate"], f"{path}.rate", low=ZERO, high=top) + _number(
                tier.get("adj", 0) or 0, f"{path}.adj", low=-top, high=top
            )
            if not ZERO <= price <= top:
                raise TariffError(f"{path}.adj", f"rate + adj is {price}, outside 0..{top} $/{unit}")
            max_units = (
                None if tier.get("max") in (None, "") else _number(tier["max"], f"{path}.max", high=TIER_MAX_UNITS)
            )
            if max_units is not None:
                if max_units <= previous_max:
                    raise TariffError(f"{path}.max", "tier maxima must increase")
                previous_max = max_units
            elif t != len(tiers) - 1:
                raise TariffError(f"{path}.max", "only the last tier may be without 'max'")
            parsed.append(Tier(max_units, price))
        periods.append(tuple(parsed))
    return tuple(periods)


def _schedule(record: Mapping[str, Any], key: str, n_periods: int) -> Schedule:
    raw = record.get(key)
    if not isinstance(raw, list) or len(raw) != MONTHS:
        raise TariffError(key, f"missing or not {MONTHS} months of {HOURS} hours")
    rows = []
    for m, row in enumerate(raw):
        if not isinstance(row, list) or len(row) != HOURS:
            raise TariffError(f"{key}[{m}]", f"expected {HOURS} hourly period indices")
        for h, period in enumerate(row):
            if isinstance(period, bool) or not isinstance(period, int) or not 0 <= period < n_periods:
                raise TariffError(f"{key}[{m}][{h}]", f"period {period!r} is not one of 0..{n_periods - 1}")
        rows.append(tuple(row))
    return tuple(rows)


def tariff_from_urdb(record: Mapping[str, Any]) -> TariffSpec:
    """Parse one URDB v7 rate record (or an API answer ``{"items": [record]}``).

    Raises ``TariffError`` naming the first field that is missing or wrong.
    """
    if not isinstance(record, Mapping):
        raise TariffError("record", "expected a JSON object")
    if "items" in record and "energyratestructure" not in record:
        items = record["items"]
        if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], Mapping):
            raise TariffError("items", "expected exactly one rate record")
        record = items[0]
    name = record.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TariffError("name", "missing")
    energy_periods = _tiers(record, "energyratestructure", "kWh")
    spec: dict[str, Any] = {
        "name": name.strip(),
        "utility": str(record.get("utility") or ""),
        "label": str(record.get("label") or ""),
        "energy_periods": energy_periods,
        "energy_weekday": _schedule(record, "energyweekdayschedule", len(energy_periods)),
        "energy_weekend": _schedule(record, "energyweekendschedule", len(energy_periods)),
    }
    if record.get("flatdemandstructure"):
        flat = _tiers(record, "flatdemandstructure", "kW")
        months = record.get("flatdemandmonths")
        if not isinstance(months, list) or len(months) != MONTHS:
            raise TariffError("flatdemandmonths", f"missing or not {MONTHS} period indices")
        for m, period in enumerate(months):
            if isinstance(period, bool) or not isinstance(period, int) or not 0 <= period < len(flat):
                raise TariffError(f"flatdemandmonths[{m}]", f"period {period!r} is not one of 0..{len(flat) - 1}")
        spec["flat_demand_periods"] = flat
        spec["flat_demand_months"] = tuple(months)
    if record.get("demandratestructure"):
        demand = _tiers(record, "demandratestructure", "kW")
        spec["demand_periods"] = demand
        spec["demand_weekday"] = _schedule(record, "demandweekdayschedule", len(demand))
        spec["demand_weekend"] = _schedule(record, "demandweekendschedule", len(demand))
    window = record.get("demandwindow")
    if window not in (None, ""):
        minutes = _number(window, "demandwindow", high=Decimal(DEMAND_WINDOW_MAX_MINUTES))
        if minutes <= 0 or minutes != minutes.to_integral_value():
            raise TariffError("demandwindow", f"expected whole minutes > 0, got {window!r}")
        spec["demand_window_minutes"] = int(minutes)
    ratchet = record.get("demandratchetpercentage")
    if ratchet not in (None, []):
        if not isinstance(ratchet, list) or len(ratchet) != MONTHS:
            raise TariffError("demandratchetpercentage", f"expected {MONTHS} values, one per month")
        fractions = []
        for m, value in enumerate(ratchet):
            share = _number(value, f"demandratchetpercentage[{m}]", low=ZERO, high=Decimal(100))
            fractions.append(share / 100 if share > 1 else share)
        spec["ratchet_fractions"] = tuple(fractions)
    if record.get("fixedchargefirstmeter") not in (None, ""):
        spec["fixed_charge"] = _number(
            record["fixedchargefirstmeter"], "fixedchargefirstmeter", low=ZERO, high=FIXED_CHARGE_MAX
        )
    units = record.get("fixedchargeunits") or "$/month"
    if units not in FIXED_UNITS:
        raise TariffError("fixedchargeunits", f"{units!r} is not supported ({', '.join(FIXED_UNITS)})")
    spec["fixed_units"] = units
    return TariffSpec(**spec)


def tariff_json_load(raw: bytes | str) -> Any:
    """Parse the JSON text of an uploaded rate record; ``TariffError`` (path ``record``) if unfit.

    Refused before parsing: more than ``RECORD_MAX_BYTES``, or nested deeper than
    ``RECORD_MAX_DEPTH`` (the parser would run out of stack); while parsing: a number of more
    than ``MAX_DIGITS`` digits, ``NaN`` or ``Infinity``; after it: a NUL character in a text
    (PostgreSQL stores none).
    """
    if len(raw) > RECORD_MAX_BYTES:
        raise TariffError("record", f"the file is larger than {RECORD_MAX_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise TariffError("record", "the file is not UTF-8 text") from None
    if _json_depth(text) > RECORD_MAX_DEPTH:
        raise TariffError("record", f"nested deeper than {RECORD_MAX_DEPTH} levels")
    try:
        record = json.loads(text, parse_int=_json_int, parse_float=_json_float, parse_constant=_json_constant)
    except TariffError:
        raise
    except json.JSONDecodeError as exc:
        raise TariffError("record", f"the file is not JSON (line {exc.lineno}: {exc.msg})") from None
    except (RecursionError, ValueError):
        raise TariffError("record", "the file is not JSON") from None
    if _holds_nul(record):
        raise TariffError("record", "a text holds a NUL character (\\u0000), which cannot be stored")
    return record


def _holds_nul(value: Any) -> bool:
    """Whether a parsed JSON value (nested at most ``RECORD_MAX_DEPTH``) has a NUL in a key or text."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def _json_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest (brackets in strings do not count).

    One pass: each string is skipped from its opening quote to its closing one; an unterminated
    string ends the count (the parser stops there too).
    """
    depth = deepest = position = 0
    while (token := JSON_TOKENS.search(text, position)) is not None:
        if token.group() == '"':
            rest = JSON_STRING_REST.match(text, token.end())
            if rest is None:
                break
            position = rest.end()
            continue
        depth += 1 if token.group() in "[{" else -1
        deepest = max(deepest, depth)
        position = token.end()
    return deepest


def _json_digits(text: str) -> str:
    if sum(ch.isdigit() for ch in text) > MAX_DIGITS:
        raise TariffError("record", f"a number of more than {MAX_DIGITS} digits ({text[:20]}...)")
    return text


def _json_int(text: str) -> int:
    return int(_json_digits(text))


def _json_float(text: str) -> float:
    return float(_json_digits(text))


def _json_constant(text: str) -> Any:
    raise TariffError("record", f"{text} is not a number a tariff may hold")


def tiered_charge(tiers: Sequence[Tier], units: Decimal) -> Decimal:
    """Charge for ``units`` (kWh or kW) through cumulative tiers."""
    total = ZERO
    floor = ZERO
    for tier in tiers:
        top = units if tier.max_units is None else min(units, tier.max_units)
        if top > floor:
            total += (top - floor) * tier.price
        if tier.max_units is None or units <= tier.max_units:
            break
        floor = tier.max_units
    return total


def month_bounds(year: int, month: int, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The month's first and first-after instants in UTC, by the site's local midnight."""
    start = datetime(year, month, 1, tzinfo=tz)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def previous_months(year: int, month: int, count: int) -> list[date]:
    """First days of the ``count`` months before (year, month), oldest first."""
    out = []
    for back in range(count, 0, -1):
        index = year * 12 + (month - 1) - back
        out.append(date(index // 12, index % 12 + 1, 1))
    return out


def window_start(start: datetime, local: datetime, window_minutes: int) -> datetime:
    """The UTC start of the demand window (aligned to the local clock) an interval falls in."""
    minute_of_day = local.hour * 60 + local.minute
    return start - timedelta(minutes=minute_of_day % window_minutes, seconds=local.second)


def window_demands_kw(
    intervals: Mapping[datetime, Decimal],
    *,
    tz: ZoneInfo,
    window_minutes: int,
    interval_minutes: int,
    local_times: Mapping[datetime, datetime] | None = None,
) -> dict[datetime, Decimal]:
    """Average kW of each demand window: energy in it / its length. Keys are UTC window starts.

    ``local_times`` may hold each interval start already in ``tz`` (saves converting twice).
    """
    if window_minutes % interval_minutes:
        raise TariffError(
            "demandwindow", f"{window_minutes} min is not a multiple of the {interval_minutes}-min interval data"
        )
    energy: dict[datetime, Decimal] = {}
    for start, kwh in intervals.items():
        local = local_times[start] if local_times is not None else start.astimezone(tz)
        key = start if window_minutes == interval_minutes else window_start(start, local, window_minutes)
        energy[key] = energy.get(key, ZERO) + kwh
    hours = Decimal(window_minutes) / 60
    return {key: kwh / hours for key, kwh in energy.items()}


@dataclass
class MonthBill:
    """One month's bill of one meter, every component at full precision."""

    energy_kwh: Decimal = ZERO
    energy_kwh_by_period: dict[int, Decimal] = field(default_factory=dict)
    energy_cost_by_period: dict[int, Decimal] = field(default_factory=dict)
    energy_cost: Decimal = ZERO
    peak_kw: Decimal = ZERO
    peak_at: datetime | None = None
    flat_period: int | None = None
    flat_demand_kw: Decimal = ZERO
    ratchet_kw: Decimal = ZERO
    flat_billing_kw: Decimal = ZERO
    flat_demand_charge: Decimal = ZERO
    tou_demand_kw: dict[int, Decimal] = field(default_factory=dict)
    tou_demand_at: dict[int, datetime] = field(default_factory=dict)
    tou_demand_charge: dict[int, Decimal] = field(default_factory=dict)
    demand_charge: Decimal = ZERO
    fixed_charge: Decimal = ZERO
    total: Decimal = ZERO
    daily_peak_kw: dict[date, Decimal] = field(default_factory=dict)
    windows_kw: list[Decimal] = field(default_factory=list)


def bill_month(
    spec: TariffSpec,
    intervals: Mapping[datetime, Decimal],
    *,
    tz: ZoneInfo,
    year: int,
    month: int,
    interval_minutes: int = 15,
    ratchet_reference_kw: Decimal = ZERO,
) -> MonthBill:
    """Bill ``intervals`` (UTC interval start -> kWh) for the local month ``year``-``month``.

    Intervals outside the month are ignored. ``ratchet_reference_kw`` is the highest flat
    demand of the 11 months before (0 for none).
    """
    month_start, month_end = month_bounds(year, month, tz)
    inside = {start: kwh for start, kwh in intervals.items() if month_start <= start < month_end}
    bill = MonthBill()
    local_times = {start: start.astimezone(tz) for start in inside}
    for start, kwh in inside.items():
        period = spec.energy_period(local_times[start])
        bill.energy_kwh_by_period[period] = bill.energy_kwh_by_period.get(period, ZERO) + kwh
        bill.energy_kwh += kwh
    for period, kwh in sorted(bill.energy_kwh_by_period.items()):
        cost = tiered_charge(spec.energy_periods[period], kwh)
        bill.energy_cost_by_period[period] = cost
        bill.energy_cost += cost

    demands = window_demands_kw(
        inside,
        tz=tz,
        window_minutes=spec.demand_window_minutes,
        interval_minutes=interval_minutes,
        local_times=local_times,
    )
    for key in sorted(demands):
        kw = demands[key]
        local = local_times.get(key) or key.astimezone(tz)
        bill.windows_kw.append(kw)
        if kw > bill.peak_kw or bill.peak_at is None:
            bill.peak_kw, bill.peak_at = kw, key
        day = local.date()
        if kw > bill.daily_peak_kw.get(day, Decimal(-1)):
            bill.daily_peak_kw[day] = kw
        tou = spec.demand_period(local)
        if tou is not None and (tou not in bill.tou_demand_kw or kw > bill.tou_demand_kw[tou]):
            bill.tou_demand_kw[tou] = kw
            bill.tou_demand_at[tou] = key
    if spec.flat_demand_periods:
        bill.flat_period = spec.flat_demand_months[month - 1]
        bill.flat_demand_kw = bill.peak_kw
        bill.ratchet_kw = spec.ratchet_fractions[month - 1] * ratchet_reference_kw
        bill.flat_billing_kw = max(bill.flat_demand_kw, bill.ratchet_kw)
        bill.flat_demand_charge = tiered_charge(spec.flat_demand_periods[bill.flat_period], bill.flat_billing_kw)
    for period, kw in sorted(bill.tou_demand_kw.items()):
        bill.tou_demand_charge[period] = tiered_charge(spec.demand_periods[period], kw)
    bill.demand_charge = bill.flat_demand_charge + sum(bill.tou_demand_charge.values(), ZERO)
    days = calendar.monthrange(year, month)[1]
    bill.fixed_charge = spec.fixed_charge * (days if spec.fixed_units == "$/day" else 1)
    bill.total = bill.energy_cost + bill.demand_charge + bill.fixed_charge
    return bill
