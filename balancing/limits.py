"""The one arbiter: every limit that applies to a site now, combined, with the one that binds.

Schema: tenant. Grid connection, building load behind the same meter, demand cap, schedules and
manual overrides are all reduced here to the root node's per-phase amperes and kilowatts the
engine sees, so one place decides and the run's record says which limit bound.

The site meter (``SiteMeterReading``) is the truth while its latest reading is fresh (at most
``BALANCING_SITE_METER_MAX_AGE_S`` old). A meter at the grid connection (``includes_chargers``)
gives the building load as its figure minus what the chargers drew (the caller passes their
measured draw), and when it shows the site over a limit the chargers' limit is lowered by the
overshoot as well, so the next run corrects at once whatever the model predicted. A
building-only meter is used like a ``BuildingLoadReading``. Without a fresh site meter the
latest ``BuildingLoadReading`` applies (its last value assumed while it is stale).
"""

import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings

from balancing.models import BuildingLoadReading, LimitOverride, Site, SiteLimitSchedule, SiteMeterReading

# A building meter reading older than this is not trusted; the site's fallback applies instead.
BUILDING_READING_MAX_AGE = timedelta(minutes=5)
PHASES = ("L1", "L2", "L3")


@dataclass(frozen=True)
class Candidate:
    source: str  # "grid", "building", "demand_cap", "month_peak:<key>", "schedule:<name>", "override:<reason>"
    limit_a: float | None = None
    limit_kw: float | None = None
    why: str = ""  # a policy's cap: the sentence that says where its value comes from


@dataclass
class SiteLimits:
    """Per-phase current (A) and power (kW) available to the chargers at the root, and why."""

    limit_a: list[float]
    limit_kw: float | None
    bound_a: str
    bound_kw: str | None
    candidates: list[Candidate] = field(default_factory=list)
    building_a: list[float] = field(default_factory=list)
    building_kw: float = 0.0
    # A fresh site meter (at the grid connection) shows the site over a limit: the run raises a
    # ``site_over_limit`` alert with the detail ("site meter 21.3 kW over 20 kW demand_cap").
    site_over_limit: bool = False
    site_over_limit_detail: str = ""
    meter: dict[str, object] | None = None
    # What they were combined from, to combine again with a policy's cap (not in the record).
    inputs: "LimitInputs | None" = field(default=None, repr=False)
    chargers_a: list[float] | None = field(default=None, repr=False)
    chargers_kw: float | None = field(default=None, repr=False)
    # A policy's record (``balancing.policy``): the cap in force, why, the cars it planned.
    policy: dict[str, object] | None = None

    def as_record(self) -> dict[str, object]:
        extra: dict[str, object] = {} if self.policy is None else {"policy": self.policy}
        return {
            "limit_a": self.limit_a,
            "limit_kw": self.limit_kw,
            "bound_a": self.bound_a,
            "bound_kw": self.bound_kw,
            "building_a": self.building_a,
            "building_kw": self.building_kw,
            "site_over_limit": self.site_over_limit,
            "site_over_limit_detail": self.site_over_limit_detail,
            "meter": self.meter,
            "candidates": [
                {"source": c.source, "limit_a": c.limit_a, "limit_kw": c.limit_kw, **({"why": c.why} if c.why else {})}
                for c in self.candidates
            ],
            **extra,
        }


def schedule_applies(schedule: SiteLimitSchedule, local: datetime) -> bool:
    """Whether a weekly window covers this local time (windows may run past midnight)."""
    start, end, now_t = schedule.start_time, schedule.end_time, local.time()
    if start <= end:
        return str(local.weekday()) in schedule.weekdays and start <= now_t < end
    # Past midnight: the part after midnight belongs to the previous day's window.
    if now_t >= start:
        return str(local.weekday()) in schedule.weekdays
    return now_t < end and str((local.weekday() - 1) % 7) in schedule.weekdays


def _building_load(site: Site, now: datetime) -> tuple[list[float], float, str]:
    reading = BuildingLoadReading.objects.filter(site=site, measured_at__lte=now).order_by("-measured_at").first()
    if reading is None:
        return [0.0] * site.phases, 0.0, ""
    if now - reading.measured_at > BUILDING_READING_MAX_AGE:
        # A meter that went quiet: assume the building still draws its last value, not zero.
        note = f"building meter stale since {reading.measured_at:%H:%M:%S}; last value assumed"
    else:
        note = ""
    currents = [max(0.0, float(x)) for x in list(reading.current_a)[: site.phases]]
    currents += [0.0] * (site.phases - len(currents))
    return currents, max(0.0, float(reading.power_kw)), note


def _fmt(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _meter_phases(site: Site, reading: SiteMeterReading) -> list[float] | None:
    """The meter's per-phase currents (A) for the site's phases, or None if it gave none."""
    values = reading.current_a if isinstance(reading.current_a, list) else []
    numbers = [v for v in values[: site.phases] if isinstance(v, int | float) and not isinstance(v, bool)]
    if len(numbers) < site.phases:
        return None
    return [max(0.0, float(v)) for v in numbers]


def _site_meter(site: Site, now: datetime) -> tuple[SiteMeterReading | None, str]:
    """The latest site meter reading if it is fresh, else None and a note if it went quiet."""
    reading = (
        SiteMeterReading.objects.filter(site=site, measured_at__lte=now)
        .order_by("-measured_at", "-received_at")
        .first()
    )
    if reading is None:
        return None, ""
    if now - reading.measured_at > timedelta(seconds=settings.BALANCING_SITE_METER_MAX_AGE_S):
        return None, f"site meter silent since {reading.measured_at:%H:%M:%S}"
    return reading, ""


@dataclass
class LimitInputs:
    """What the arbiter read for a site at one instant (``limits_read``): combined by ``limits_combine``."""

    candidates: list[Candidate]
    building_a: list[float]
    building_kw: float
    building_note: str
    reading: SiteMeterReading | None
    meter_note: str


def limits_read(site: Site, now: datetime) -> LimitInputs:
    """Every limit in force on the site's grid connection at ``now``, the building load and the site meter."""
    candidates = [Candidate("grid", limit_a=float(site.limit_a))]
    if site.demand_cap_kw is not None:
        candidates.append(Candidate("demand_cap", limit_kw=float(site.demand_cap_kw)))
    local = now.astimezone(zoneinfo.ZoneInfo(site.timezone))
    for schedule in SiteLimitSchedule.objects.filter(site=site, is_active=True):
        if schedule_applies(schedule, local):
            candidates.append(
                Candidate(
                    f"schedule:{schedule.name}",
                    limit_a=float(schedule.limit_a) if schedule.limit_a is not None else None,
                    limit_kw=float(schedule.limit_kw) if schedule.limit_kw is not None else None,
                )
            )
    for override in LimitOverride.objects.filter(site=site, starts_at__lte=now, ends_at__gt=now):
        candidates.append(
            Candidate(
                f"override:{override.reason}",
                limit_a=float(override.limit_a) if override.limit_a is not None else None,
                limit_kw=float(override.limit_kw) if override.limit_kw is not None else None,
            )
        )
    building_a, building_kw, note = _building_load(site, now)
    reading, meter_note = _site_meter(site, now)
    return LimitInputs(candidates, building_a, building_kw, note, reading, meter_note)


def site_limits(
    site: Site, now: datetime, *, chargers_a: list[float] | None = None, chargers_kw: float | None = None
) -> SiteLimits:
    """Combine every limit on the site's grid connection that is in force at ``now``.

    ``chargers_a`` (per site phase) and ``chargers_kw``: what the site's chargers drew at the
    latest readings, which a site meter at the grid connection includes; without them such a
    meter still detects the site over a limit, but the building load comes from
    ``BuildingLoadReading``.
    """
    return limits_combine(site, limits_read(site, now), chargers_a=chargers_a, chargers_kw=chargers_kw)


def limits_with_demand_cap(site: Site, limits: SiteLimits, cap: Candidate) -> SiteLimits:
    """``limits`` again with ``cap`` in place of the site's demand cap (no new reads).

    A policy's cap in force (``balancing.policy``) goes through the same arithmetic as the demand
    cap: building load and a site meter's overshoot come off it, schedules and overrides below it
    still bind, and the record's ``bound_kw`` names it when it binds.
    """
    if limits.inputs is None:
        raise ValueError("these limits were not built by limits_combine")
    kept = [c for c in limits.inputs.candidates if c.source != "demand_cap"]
    inputs = LimitInputs(
        [kept[0], cap, *kept[1:]],
        limits.inputs.building_a,
        limits.inputs.building_kw,
        limits.inputs.building_note,
        limits.inputs.reading,
        limits.inputs.meter_note,
    )
    return limits_combine(site, inputs, chargers_a=limits.chargers_a, chargers_kw=limits.chargers_kw)


def limits_combine(
    site: Site, inputs: LimitInputs, *, chargers_a: list[float] | None = None, chargers_kw: float | None = None
) -> SiteLimits:
    """The one arbiter: the lowest limit of each kind, less the building load and a meter's overshoot."""
    candidates = inputs.candidates
    given_a, given_kw = chargers_a, chargers_kw
    a_candidates = [c for c in candidates if c.limit_a is not None]
    bound_a = min(a_candidates, key=lambda c: (c.limit_a, c.source))
    kw_candidates = [c for c in candidates if c.limit_kw is not None]
    bound_kw = min(kw_candidates, key=lambda c: (c.limit_kw, c.source)) if kw_candidates else None

    building_a, building_kw, note = list(inputs.building_a), inputs.building_kw, inputs.building_note
    grid_a = bound_a.limit_a if bound_a.limit_a is not None else float(site.limit_a)
    cap_kw = bound_kw.limit_kw if bound_kw is not None else None
    over_a = [0.0] * site.phases
    over_kw = 0.0
    meter_record: dict[str, object] | None = None
    reading, meter_note = inputs.reading, inputs.meter_note
    if reading is not None:
        meter_a = _meter_phases(site, reading)
        meter_kw = float(reading.power_kw) if reading.power_kw is not None else None
        if meter_kw is None and meter_a is not None:
            meter_kw = sum(meter_a) * float(site.voltage_v) / 1000.0
        meter_record = {
            "measured_at": reading.measured_at.isoformat(),
            "source": reading.source,
            "includes_chargers": reading.includes_chargers,
            "current_a": meter_a,
            "power_kw": meter_kw,
        }
        if chargers_kw is None and chargers_a is not None:
            chargers_kw = sum(chargers_a) * float(site.voltage_v) / 1000.0
        if reading.includes_chargers:
            if meter_a is not None and chargers_a is not None:
                drawn = list(chargers_a[: site.phases]) + [0.0] * (site.phases - len(chargers_a))
                building_a = [max(0.0, m - c) for m, c in zip(meter_a, drawn, strict=True)]
            if meter_kw is not None and chargers_kw is not None:
                building_kw = max(0.0, meter_kw - chargers_kw)
            # What the model predicted no longer matters: the overshoot comes off at once.
            if meter_a is not None:
                over_a = [max(0.0, m - grid_a) for m in meter_a]
            if meter_kw is not None and cap_kw is not None:
                over_kw = max(0.0, meter_kw - cap_kw)
        else:
            if meter_a is not None:
                building_a = meter_a
            if meter_kw is not None:
                building_kw = max(0.0, meter_kw)
        if meter_a is not None and meter_kw is not None and (chargers_a is not None or not reading.includes_chargers):
            note = ""  # the building reading was not used
    limit_a = [max(0.0, grid_a - load - over) for load, over in zip(building_a, over_a, strict=True)]
    limit_kw = None
    if cap_kw is not None:
        limit_kw = max(0.0, cap_kw - building_kw - over_kw)
    source_a = bound_a.source + (" minus building load" if any(building_a) else "")
    source_kw = None
    if bound_kw is not None:
        source_kw = bound_kw.source + (f" ({bound_kw.why})" if bound_kw.why else "")
        source_kw += " minus building load" if building_kw else ""
    overs: list[str] = []
    phases_over = [
        f"{PHASES[i]} {_fmt(grid_a + over)} A over {_fmt(grid_a)} A" for i, over in enumerate(over_a) if over > 0
    ]
    if phases_over:
        lowered = max(over_a)
        source_a += f" (site meter {', '.join(phases_over)}: lowered up to {_fmt(lowered)} A)"
        overs.append(f"site meter {', '.join(phases_over)} ({bound_a.source})")
    if over_kw > 0 and source_kw is not None and cap_kw is not None and bound_kw is not None:
        kw_over = f"{_fmt(cap_kw + over_kw)} kW over {_fmt(cap_kw)} kW"
        source_kw += f" (site meter {kw_over}: lowered {_fmt(over_kw)} kW)"
        overs.append(f"site meter {kw_over} ({bound_kw.source})")
    for extra in (note, meter_note):
        if extra:
            source_a += f" ({extra})"
    return SiteLimits(
        limit_a,
        limit_kw,
        source_a,
        source_kw,
        candidates,
        building_a,
        building_kw,
        site_over_limit=bool(overs),
        site_over_limit_detail="; ".join(overs),
        meter=meter_record,
        inputs=inputs,
        chargers_a=given_a,
        chargers_kw=given_kw,
    )
