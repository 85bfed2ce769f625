"""Checking and normalising what a charger reports, before it leaves the gateway.

Schema: none (pure functions). The library has checked the payload against the OCPP JSON
schema; here come the checks a schema cannot make: numbers that are numbers and in range,
timestamps that are plausible, units brought to A, V, W, Wh. What fails is refused with the
CALLERROR the spec names (``PropertyConstraintViolation``), so the charger learns it, and the
whole message is dropped: nothing of it reaches the worker.

Plausible means what a charger can physically report (``Limits``): an energy register or
interval 0..1e10 Wh; current 0..the charger's rating x2 (the worker's own bound), at most
1,000 A; power 0..1 MW (import and export are separate measurands: neither is negative; a site
meter, which measures the whole site: 10,000 A, 100 MW);
power factor -1..1; voltage 0..1,000 V; SoC 0..100 %; a connector the charger is registered
with; a time no more than ``GATEWAY_CLOCK_SKEW_S`` ahead of ours, and for a reading or a
transaction not older than the readings are kept (``TELEMETRY_RETENTION_DAYS``).
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from ocpp.exceptions import PropertyConstraintViolationError

MAX_CONNECTOR_ID = 16  # as many outlets as register_charger allows
EARLIEST = datetime(2010, 1, 1, tzinfo=UTC)
MAX_ABS_VALUE = Decimal("1e13")  # far beyond any meter; a float still holds it to the Wh
VALUE_QUANTUM = Decimal("0.000001")
MAX_ENERGY_WH = Decimal("1e10")  # 10 GWh: 150 kW without a break for seven years
MAX_CURRENT_A = Decimal(1000)
MAX_POWER_W = Decimal("1e6")
# A site meter measures the whole site's supply, not one charger.
MAX_SITE_CURRENT_A = Decimal(10_000)
MAX_SITE_POWER_W = Decimal("1e8")
MAX_VOLTAGE_V = Decimal(1000)
RATING_FACTOR = Decimal(2)
MAX_DEPARTURE_AHEAD = timedelta(days=7)  # a planned departure, not a time that has passed


@dataclass(frozen=True)
class Limits:
    """What one charger can report: its connectors and its current (from its registration)."""

    max_connector: int = MAX_CONNECTOR_ID
    max_current_a: Decimal = MAX_CURRENT_A
    max_power_w: Decimal = MAX_POWER_W

    @classmethod
    def for_station(cls, *, connectors: int | None, rating_a: Decimal | None, site_meter: bool = False) -> "Limits":
        """``connectors`` None or 0 (not known yet): any id up to the platform's maximum."""
        if site_meter:  # reports on connector 0; the worker checks its figures against the site
            return cls(max_connector=0, max_current_a=MAX_SITE_CURRENT_A, max_power_w=MAX_SITE_POWER_W)
        current = MAX_CURRENT_A if not rating_a else min(MAX_CURRENT_A, rating_a * RATING_FACTOR)
        return cls(max_connector=connectors or MAX_CONNECTOR_ID, max_current_a=current)


ANY_CHARGER = Limits()


def _bounds(measurand: str, limits: Limits) -> tuple[Decimal, Decimal]:
    """The physical range of a measurand in base units (A, V, W, Wh, %)."""
    if measurand.startswith("Energy."):
        return Decimal(0), MAX_ENERGY_WH
    if measurand.startswith("Current."):
        return Decimal(0), limits.max_current_a
    if measurand == "Power.Factor":
        return Decimal(-1), Decimal(1)
    if measurand.startswith("Power."):
        return Decimal(0), limits.max_power_w
    if measurand == "Voltage":
        return Decimal(0), MAX_VOLTAGE_V
    if measurand == "SoC":
        return Decimal(0), Decimal(100)
    return -MAX_ABS_VALUE, MAX_ABS_VALUE


# kilo-units become base units, so the balancer and billing read one unit per quantity.
UNIT_SCALE = {
    "kWh": ("Wh", Decimal(1000)),
    "kW": ("W", Decimal(1000)),
    "kvarh": ("varh", Decimal(1000)),
    "kvar": ("var", Decimal(1000)),
    "kVA": ("VA", Decimal(1000)),
}
DEFAULT_UNITS = (
    ("Energy.", "Wh"),
    ("Power.Factor", ""),
    ("Power.", "W"),
    ("Current.", "A"),
    ("Voltage", "V"),
    ("Frequency", "Hz"),
    ("SoC", "Percent"),
    ("Temperature", "Celsius"),
    ("RPM", "RPM"),
)
DEFAULT_MEASURAND = "Energy.Active.Import.Register"


def refuse(cause: str) -> PropertyConstraintViolationError:
    return PropertyConstraintViolationError(details={"cause": cause})


def timestamp(
    value: Any,
    *,
    now: datetime,
    field: str = "timestamp",
    earliest: datetime = EARLIEST,
    ahead: timedelta | None = None,
) -> datetime:
    """An aware UTC datetime; naive values are taken as UTC (many chargers omit the Z).

    Not before ``earliest``; at most ``ahead`` after ``now`` (default ``GATEWAY_CLOCK_SKEW_S``:
    what happened cannot be later than now, give or take the charger's clock).
    """
    if not isinstance(value, str):
        raise refuse(f"{field} must be an ISO 8601 date-time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise refuse(f"{field} {value[:40]!r} is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    parsed = parsed.astimezone(UTC)
    if ahead is None:
        ahead = timedelta(seconds=settings.GATEWAY_CLOCK_SKEW_S)
    if parsed > now + ahead or parsed < earliest:
        raise refuse(f"{field} {value[:40]!r} is not plausible (charger clock?)")
    return parsed


def connector_id(value: Any, *, allow_zero: bool = True, limits: Limits = ANY_CHARGER) -> int:
    low = 0 if allow_zero else 1
    high = limits.max_connector
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise refuse(f"connector/EVSE id {str(value)[:20]!r} is outside {low}-{high}")
    return value


def readings_floor(now: datetime) -> datetime:
    """Readings older than this would be pruned at once: a charger clock gone wrong."""
    return max(EARLIEST, now - timedelta(days=settings.TELEMETRY_RETENTION_DAYS))


def number(value: Any, *, field: str, low: Decimal = -MAX_ABS_VALUE, high: Decimal = MAX_ABS_VALUE) -> Decimal:
    """A finite decimal within [low, high]; strings as OCPP 1.6 sends them, or JSON numbers."""
    if isinstance(value, bool):
        raise refuse(f"{field} {value!r} is not a number")
    try:
        result = (
            value if isinstance(value, Decimal) else Decimal(value if isinstance(value, str | int) else repr(value))
        )
    except (InvalidOperation, ValueError, TypeError):
        raise refuse(f"{field} {str(value)[:40]!r} is not a number") from None
    if not result.is_finite() or not low <= result <= high:
        raise refuse(f"{field} {str(value)[:40]!r} is out of range")
    return result.quantize(VALUE_QUANTUM)


def _default_unit(measurand: str) -> str:
    for prefix, unit in DEFAULT_UNITS:
        if measurand.startswith(prefix):
            return unit
    return ""


def _sample(
    *,
    at: datetime,
    raw_value: Any,
    measurand: str,
    unit: str,
    phase: str,
    location: str,
    context: str,
    limits: Limits,
) -> dict[str, str]:
    value = number(raw_value, field=f"value of {measurand}")
    if unit in UNIT_SCALE:
        unit, scale = UNIT_SCALE[unit]
        value = number(value * scale, field=f"value of {measurand}")
    low, high = _bounds(measurand, limits)
    if not low <= value <= high:
        raise refuse(f"{measurand[:40]} {value.normalize()} {unit[:10]} is outside {low}..{high}")
    return {
        "at": at.isoformat(),
        "measurand": measurand,
        "phase": phase,
        "location": location,
        "context": context,
        "value": str(value),
        "unit": unit,
    }


def meter_values_16(
    meter_value: list[dict[str, Any]], *, now: datetime, limits: Limits = ANY_CHARGER
) -> list[dict[str, str]]:
    """OCPP 1.6 ``meterValue`` (snake_case keys) to normalised samples; signed data is skipped."""
    samples = []
    for entry in meter_value:
        at = timestamp(entry.get("timestamp"), now=now, earliest=readings_floor(now))
        for sv in entry.get("sampled_value", []):
            if sv.get("format") == "SignedData":
                continue
            measurand = sv.get("measurand") or DEFAULT_MEASURAND
            samples.append(
                _sample(
                    at=at,
                    raw_value=sv.get("value"),
                    measurand=measurand,
                    unit=sv.get("unit") or _default_unit(measurand),
                    phase=sv.get("phase") or "",
                    location=sv.get("location") or "",
                    context=sv.get("context") or "",
                    limits=limits,
                )
            )
    return samples


def meter_values_201(
    meter_value: list[dict[str, Any]], *, now: datetime, limits: Limits = ANY_CHARGER
) -> list[dict[str, str]]:
    """OCPP 2.0.1 ``meterValue`` to normalised samples (``unitOfMeasure.multiplier`` applied)."""
    samples = []
    for entry in meter_value:
        at = timestamp(entry.get("timestamp"), now=now, earliest=readings_floor(now))
        for sv in entry.get("sampled_value", []):
            measurand = sv.get("measurand") or DEFAULT_MEASURAND
            uom = sv.get("unit_of_measure") or {}
            multiplier = uom.get("multiplier", 0)
            if not isinstance(multiplier, int) or not -3 <= multiplier <= 3:
                raise refuse(f"unitOfMeasure.multiplier {multiplier!r} is outside -3..3")
            raw = number(sv.get("value"), field=f"value of {measurand}") * (Decimal(10) ** multiplier)
            samples.append(
                _sample(
                    at=at,
                    raw_value=raw,
                    measurand=measurand,
                    unit=uom.get("unit") or _default_unit(measurand),
                    phase=sv.get("phase") or "",
                    location=sv.get("location") or "",
                    context=sv.get("context") or "",
                    limits=limits,
                )
            )
    return samples


def energy_register_wh(samples: list[dict[str, str]]) -> str | None:
    """The station-level energy register among samples (Wh), if one was sent."""
    for sample in samples:
        if sample["measurand"] == DEFAULT_MEASURAND and not sample["phase"] and sample["unit"] == "Wh":
            return sample["value"]
    return None
