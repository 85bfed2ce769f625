"""What a site would have drawn unmanaged: every car at its own acceptance rate from plug-in.

Pure. For each session the car draws its acceptance rate from the start until it has the
energy it actually got. The rate is estimated, in this order (and the source is kept):

1. ``declared``: what the car declared (OCPP 2.0.1 NotifyEVChargingNeeds ``ev_max_current_a``
   at the site voltage on the charger's phases), capped by the charger's rating;
2. ``observed``: the highest draw seen while the limit in force was above the draw;
3. ``rating``: the charger's rating.

If that rate could not have delivered the session's energy in its actual duration, the rate
was plainly higher: it is raised to the session's average power (source ``average``).
The energy is the same managed and unmanaged: only its timing differs.
"""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from billing.intervals import DEFAULT_INTERVAL_MINUTES, ZERO, spread_energy

SOURCES = ("declared", "observed", "rating", "average")


@dataclass(frozen=True)
class SessionLoad:
    """One session as the counterfactual sees it (kW and kWh)."""

    session_id: int | str
    started_at: datetime
    stopped_at: datetime | None
    energy_kwh: Decimal
    rating_kw: Decimal
    declared_kw: Decimal | None = None
    observed_kw: Decimal | None = None


@dataclass(frozen=True)
class Acceptance:
    rate_kw: Decimal
    source: str


def acceptance_rate(session: SessionLoad) -> Acceptance:
    """The unmanaged draw of a session's car, and where the figure came from."""
    if session.declared_kw is not None and session.declared_kw > 0:
        rate, source = min(session.declared_kw, session.rating_kw), "declared"
    elif session.observed_kw is not None and session.observed_kw > 0:
        rate, source = session.observed_kw, "observed"
    else:
        rate, source = session.rating_kw, "rating"
    if session.stopped_at is not None and session.energy_kwh > 0:
        hours = Decimal((session.stopped_at - session.started_at).total_seconds()) / 3600
        if hours > 0 and rate * hours < session.energy_kwh:
            rate, source = session.energy_kwh / hours, "average"
    return Acceptance(rate, source)


def unmanaged_intervals(
    sessions: Iterable[SessionLoad], *, minutes: int = DEFAULT_INTERVAL_MINUTES
) -> tuple[dict[datetime, Decimal], Counter[str]]:
    """Interval kWh of all sessions drawn unmanaged, and how many rates came from each source."""
    out: dict[datetime, Decimal] = {}
    sources: Counter[str] = Counter()
    for session in sessions:
        if session.energy_kwh <= 0:
            continue
        acceptance = acceptance_rate(session)
        sources[acceptance.source] += 1
        if acceptance.rate_kw <= 0:
            continue
        seconds = float(session.energy_kwh / acceptance.rate_kw * 3600)
        end = session.started_at + timedelta(seconds=seconds)
        spread_energy(out, session.started_at, end, session.energy_kwh, minutes)
    return out, sources


def scaled_to(intervals: dict[datetime, Decimal], energy_kwh: Decimal) -> dict[datetime, Decimal]:
    """The same shape holding ``energy_kwh`` in total (metered energy; no phantom kWh)."""
    total = sum(intervals.values(), ZERO)
    if total == 0 or total == energy_kwh:
        return dict(intervals)
    factor = energy_kwh / total
    return {start: kwh * factor for start, kwh in intervals.items()}
