"""The one arbiter: every limit that applies to a site now, combined, with the one that binds.

Schema: tenant. Grid connection, building load behind the same meter, demand cap, schedules and
manual overrides are all reduced here to the root node's per-phase amperes and kilowatts the
engine sees, so one place decides and the run's record says which limit bound.
"""

import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from balancing.models import BuildingLoadReading, LimitOverride, Site, SiteLimitSchedule

# A building meter reading older than this is not trusted; the site's fallback applies instead.
BUILDING_READING_MAX_AGE = timedelta(minutes=5)
PHASES = ("L1", "L2", "L3")


@dataclass(frozen=True)
class Candidate:
    source: str  # "grid", "building", "demand_cap", "schedule:<name>", "override:<reason>"
    limit_a: float | None = None
    limit_kw: float | None = None


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

    def as_record(self) -> dict[str, object]:
        return {
            "limit_a": self.limit_a,
            "limit_kw": self.limit_kw,
            "bound_a": self.bound_a,
            "bound_kw": self.bound_kw,
            "building_a": self.building_a,
            "building_kw": self.building_kw,
            "candidates": [{"source": c.source, "limit_a": c.limit_a, "limit_kw": c.limit_kw} for c in self.candidates],
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


def site_limits(site: Site, now: datetime) -> SiteLimits:
    """Combine every limit on the site's grid connection that is in force at ``now``."""
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

    a_candidates = [c for c in candidates if c.limit_a is not None]
    bound_a = min(a_candidates, key=lambda c: (c.limit_a, c.source))
    kw_candidates = [c for c in candidates if c.limit_kw is not None]
    bound_kw = min(kw_candidates, key=lambda c: (c.limit_kw, c.source)) if kw_candidates else None

    building_a, building_kw, note = _building_load(site, now)
    grid_a = bound_a.limit_a if bound_a.limit_a is not None else float(site.limit_a)
    limit_a = [max(0.0, grid_a - load) for load in building_a]
    limit_kw = None
    if bound_kw is not None and bound_kw.limit_kw is not None:
        limit_kw = max(0.0, bound_kw.limit_kw - building_kw)
    source_a = bound_a.source + (" minus building load" if any(building_a) else "")
    source_kw = None
    if bound_kw is not None:
        source_kw = bound_kw.source + (" minus building load" if building_kw else "")
    if note:
        source_a += f" ({note})"
    return SiteLimits(limit_a, limit_kw, source_a, source_kw, candidates, building_a, building_kw)
