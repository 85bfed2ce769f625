"""The site meter's readings, from whichever input they arrive: checked, stored, acted on. Schema: tenant.

Three inputs feed ``site_meter_record``: the REST API (``balancing.api``), an OCPP meter identity
reporting on connector 0 (``chargepoint.telemetry``) and MQTT (``balancing.mqtt``). Whatever a
meter says is checked before it is believed: a reading that is negative, not a finite number,
implausibly large (more than ``HUGE_FACTOR`` times the site's grid limit), of the wrong number
of phases, stale or from the future, or whose ``includes_chargers`` is not a boolean, is refused
with a ``ValidationError`` naming the field, and nothing is stored, so a broken meter never
moves a limit. Currents are per phase in amperes, power in kilowatts, times timezone-aware.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils.dateparse import parse_datetime

from balancing.dispatch import site_rebalance_request
from balancing.models import Site, SiteMeterReading
from balancing.selectors import site_meter_latest
from evplatform.services import require_tenant_schema

logger = logging.getLogger(__name__)

# A reading above this multiple of the site's grid limit (per phase, or in kW) is a broken meter
# or a wrong scale (W sent as kW), not a real draw: a breaker would have tripped long before.
HUGE_FACTOR = Decimal(4)
# Meter and platform clocks differ a little; more than this ahead is a wrong clock.
MAX_FUTURE = timedelta(seconds=30)
CURRENT_QUANTUM = Decimal("0.01")
POWER_QUANTUM = Decimal("0.01")
OVER_LIMIT_REASON = "site meter over limit"
FRESH_AGAIN_REASON = "site meter fresh again"


@dataclass(frozen=True)
class MeterOutcome:
    """What one reading did: the row (new, or the one already stored), and why a run was asked for."""

    reading: SiteMeterReading
    created: bool
    rebalance_reason: str | None = None


def max_age() -> timedelta:
    """How old a reading may be and still count (``BALANCING_SITE_METER_MAX_AGE_S``)."""
    return timedelta(seconds=float(settings.BALANCING_SITE_METER_MAX_AGE_S))


def site_limit_kw(site: Site) -> Decimal:
    """The grid connection's capacity in kW: phases x per-phase limit (A) x line-to-neutral voltage (V)."""
    return Decimal(site.phases) * site.limit_a * site.voltage_v / 1000


def measured_at_parse(value: Any) -> datetime:
    """A meter's ISO 8601 time as sent (MQTT, OCPP); ``site_meter_record`` checks its zone and age."""
    try:
        parsed = parse_datetime(value) if isinstance(value, str) else None
    except ValueError:  # well formed but no such time, e.g. month 13
        parsed = None
    if parsed is None:
        raise ValidationError({"measured_at": f"{str(value)[:40]!r} is not an ISO 8601 time"})
    return parsed


def refusal(exc: ValidationError) -> str:
    """Why a reading was refused, in one line for the log: ``field: message; field: message``."""
    return "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in exc.message_dict.items())


def _finite(value: Any, *, field: str, what: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise ValidationError({field: f"{what} {value!r} is not a number"})
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        raise ValidationError({field: f"{what} {str(value)[:40]!r} is not a number"}) from None
    if not number.is_finite():
        raise ValidationError({field: f"{what} {value!r} is not a finite number"})
    if number < 0:
        raise ValidationError({field: f"{what} {value} is negative; a site meter reports import as positive"})
    return number


def _currents(site: Site, current_a: Any, *, has_power: bool) -> list[Decimal]:
    if current_a is None:
        current_a = []
    if isinstance(current_a, str | bytes) or not isinstance(current_a, Sequence):
        raise ValidationError({"current_a": "must be a list of per-phase currents in A, e.g. [12.5, 11.0, 13.2]"})
    if not current_a:
        if not has_power:
            raise ValidationError({"current_a": "give current_a (A per phase), power_kw (kW) or both"})
        return []
    if len(current_a) != site.phases:
        raise ValidationError(
            {
                "current_a": f"{len(current_a)} values for a {site.phases}-phase site: give {site.phases} "
                "(one per phase, L1 first) or [] with power_kw only"
            }
        )
    huge = max(HUGE_FACTOR * site.limit_a, Decimal(10))
    currents = []
    for n, raw in enumerate(current_a, start=1):
        value = _finite(raw, field="current_a", what=f"L{n} current")
        if value > huge:
            raise ValidationError(
                {"current_a": f"L{n} current {value} A is implausible: over {huge} A (4x the site's {site.limit_a} A)"}
            )
        currents.append(value.quantize(CURRENT_QUANTUM))
    return currents


def _power(site: Site, power_kw: Any) -> Decimal | None:
    if power_kw is None:
        return None
    value = _finite(power_kw, field="power_kw", what="power")
    huge = max(HUGE_FACTOR * site_limit_kw(site), Decimal(10))
    if value > huge:
        raise ValidationError(
            {
                "power_kw": f"{value} kW is implausible: more than {huge.quantize(POWER_QUANTUM)} kW "
                f"(4x the site's {site_limit_kw(site).quantize(POWER_QUANTUM)} kW); was it sent in W?"
            }
        )
    return value.quantize(POWER_QUANTUM)


def _check_time(measured_at: datetime, *, now: datetime) -> None:
    if measured_at > now + MAX_FUTURE:
        raise ValidationError(
            {
                "measured_at": f"{measured_at.isoformat()} is more than {MAX_FUTURE.seconds} s "
                "in the future (meter clock?)"
            }
        )
    if measured_at < now - max_age():
        raise ValidationError(
            {
                "measured_at": f"{measured_at.isoformat()} is stale: older than {max_age().total_seconds():g} s "
                "(BALANCING_SITE_METER_MAX_AGE_S)"
            }
        )


def _over_limit(site: Site, currents: list[Decimal], power_kw: Decimal | None) -> str | None:
    over = [f"L{n} {a} A > {site.limit_a} A" for n, a in enumerate(currents, start=1) if a > site.limit_a]
    if power_kw is not None and site.demand_cap_kw is not None and power_kw > site.demand_cap_kw:
        over.append(f"{power_kw} kW > cap {site.demand_cap_kw} kW")
    return "; ".join(over) or None


def site_meter_record(
    *,
    site: Site,
    measured_at: datetime,
    current_a: Sequence[Any] | None,
    power_kw: Any,
    source: str,
    includes_chargers: bool = True,
    now: datetime,
) -> MeterOutcome:
    """Check and store one site meter reading (per-phase ``current_a`` in A and/or ``power_kw``).

    Raises ``ValidationError`` naming the field for a reading that cannot be true; nothing is
    stored then. The same site, source and ``measured_at`` again is the same reading (a retry):
    the stored row is returned, nothing changes. A reading over the grid limit on a phase or over
    the demand cap (a meter that includes the chargers), or the first fresh one after a stale
    period, asks for a balancing run now, so the next run corrects the plan from what is measured.
    """
    require_tenant_schema("site_meter_record")
    if source not in SiteMeterReading.Source.values:
        raise ValidationError({"source": f"{source!r} is not one of {', '.join(SiteMeterReading.Source.values)}"})
    if not isinstance(includes_chargers, bool):
        raise ValidationError({"includes_chargers": "must be true or false"})
    power = _power(site, power_kw)
    currents = _currents(site, current_a, has_power=power is not None)
    if not isinstance(measured_at, datetime) or measured_at.tzinfo is None:
        raise ValidationError({"measured_at": "must be a time with a zone, e.g. 2026-05-01T12:00:00Z"})
    existing = SiteMeterReading.objects.filter(site=site, source=source, measured_at=measured_at).first()
    if existing is not None:
        return MeterOutcome(existing, created=False)
    _check_time(measured_at, now=now)

    previous = site_meter_latest(site=site)
    try:
        with transaction.atomic():
            reading = SiteMeterReading.objects.create(
                site=site,
                measured_at=measured_at,
                source=source,
                current_a=[float(a) for a in currents],
                power_kw=power,
                includes_chargers=includes_chargers,
            )
    except IntegrityError:  # the same reading stored by a concurrent retry
        return MeterOutcome(SiteMeterReading.objects.get(site=site, source=source, measured_at=measured_at), False)

    reason = None
    over = _over_limit(site, currents, power) if includes_chargers else None
    if over:
        reason = OVER_LIMIT_REASON
        logger.info("site %s: meter over limit (%s), rebalancing now", site.slug, over)
    elif previous is None or previous.measured_at < measured_at - max_age():
        reason = FRESH_AGAIN_REASON
    if reason:
        site_rebalance_request(site_id=site.pk, reason=reason)
    return MeterOutcome(reading, created=True, rebalance_reason=reason)


# --- An OCPP meter identity (a station registered with --site-meter) on connector 0 ---------------

CURRENT_IMPORT = "Current.Import"
POWER_IMPORT = "Power.Active.Import"
PHASE_INDEX = {"L1": 0, "L2": 1, "L3": 2, "L1-N": 0, "L2-N": 1, "L3-N": 2}


def _reading_from_samples(site: Site, samples: list[dict[str, Any]]) -> tuple[list[Any], Any]:
    """Per-phase currents (A) and total power (kW) of one sampled time; units as ``normalise`` left them."""
    currents: dict[int, Any] = {}
    total_w: Any = None
    phase_w: dict[int, Any] = {}
    for sample in samples:
        if sample.get("location") == "EV":
            continue
        phase = str(sample.get("phase") or "")
        index = PHASE_INDEX.get(phase, 0 if not phase and site.phases == 1 else None)
        if sample.get("measurand") == CURRENT_IMPORT and sample.get("unit", "A") == "A" and index is not None:
            currents[index] = sample["value"]
        elif sample.get("measurand") == POWER_IMPORT and sample.get("unit", "W") == "W":
            if not phase:
                total_w = sample["value"]
            elif phase in PHASE_INDEX:
                phase_w[PHASE_INDEX[phase]] = sample["value"]
    if total_w is None and phase_w:
        total_w = sum(_finite(v, field="power_kw", what="phase power") for v in phase_w.values())
    power_kw = None if total_w is None else _finite(total_w, field="power_kw", what="power") / 1000
    current_a = [currents[i] for i in sorted(currents)]
    return current_a, power_kw


def site_meter_record_samples(*, site: Site, samples: list[dict[str, Any]], now: datetime) -> None:
    """Record the readings of a site meter's MeterValues (connector 0 / EVSE 0) as ``source="ocpp"``.

    ``samples`` are the gateway's normalised samples (``at``, ``measurand``, ``phase``, ``value``,
    ``unit`` in A and W). Each sampled time with ``Current.Import`` per phase and/or a
    ``Power.Active.Import`` becomes one reading (phase powers are summed when no total is sent);
    other measurands (energy registers, voltages) are not part of a reading. A refused reading
    is logged with its reason and does not cost the others.
    """
    by_time: dict[str, list[dict[str, Any]]] = {}
    for sample in samples:
        if sample.get("measurand") in (CURRENT_IMPORT, POWER_IMPORT):
            by_time.setdefault(str(sample.get("at")), []).append(sample)
    for at, group in by_time.items():
        try:
            measured_at = measured_at_parse(at)
            current_a, power_kw = _reading_from_samples(site, group)
            site_meter_record(
                site=site,
                measured_at=measured_at,
                current_a=current_a,
                power_kw=power_kw,
                source=SiteMeterReading.Source.OCPP,
                now=now,
            )
        except ValidationError as exc:
            logger.warning("site %s: OCPP meter reading at %s refused: %s", site.slug, at, refusal(exc))
