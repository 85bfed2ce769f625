"""Energy register readings -> interval energy. Pure; ``billing.interval_rollup`` feeds it rows.

A charger's ``Energy.Active.Import.Register`` (Wh) only grows, so the energy between two
readings is their difference, drawn evenly over the time between them (a gap spreads its
energy over the gap instead of losing it). Readings arrive late and out of order: they are
sorted by time first, and the caller recomputes every interval a new reading can touch.
A duplicate reading (same time) counts once.

A register that goes *down* was reset (firmware update, meter swap): if the new value is what
the charger could have drawn since the last reading (at ``max_power_kw``, with a margin), the
register restarted from zero and the new value is the energy; otherwise it is a new meter's
foreign start value and the pair adds nothing. A jump *up* larger than the charger could draw
is a swap too. Either way the interval records a reset, so a report can say so.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from billing.intervals import DEFAULT_INTERVAL_MINUTES, EPOCH, ZERO, interval_floor, spread_energy

PLAUSIBLE_MARGIN = Decimal("1.25")  # a register may read a little ahead of the rated power
PLAUSIBLE_SLACK_WH = Decimal("50")  # rounding and sampling jitter of short gaps


@dataclass
class RegisterRollup:
    intervals_kwh: dict[datetime, Decimal] = field(default_factory=dict)
    resets: dict[datetime, int] = field(default_factory=dict)


def plausible_wh(max_power_kw: Decimal, seconds: float) -> Decimal:
    """The most energy (Wh) a charger of ``max_power_kw`` can draw in ``seconds``."""
    return max_power_kw * 1000 * Decimal(seconds) / 3600 * PLAUSIBLE_MARGIN + PLAUSIBLE_SLACK_WH


def register_to_intervals(
    readings: Iterable[tuple[datetime, Decimal]],
    *,
    max_power_kw: Decimal,
    minutes: int = DEFAULT_INTERVAL_MINUTES,
) -> RegisterRollup:
    """Interval energy (kWh) of one register series of (time, Wh) readings in any order.

    Most pairs of readings lie within one interval: those add their energy to it directly (the
    interval told by whole-number division of the time since the epoch), the others are spread
    by ``spread_energy``; the limit of a plausible rise is computed once per gap length.
    """
    by_time: dict[datetime, Decimal] = {}
    for at, wh in readings:
        by_time[at] = wh
    ordered = sorted(by_time.items())
    rollup = RegisterRollup()
    energy = rollup.intervals_kwh
    step = timedelta(minutes=minutes)
    slots = [divmod(at - EPOCH, step) for at, _ in ordered]  # (interval number, time into it)
    starts: dict[int, datetime] = {}
    limits: dict[timedelta, Decimal] = {}
    for n in range(1, len(ordered)):
        (t0, v0), (t1, v1) = ordered[n - 1], ordered[n]
        delta = v1 - v0
        gap = t1 - t0
        limit = limits.get(gap)
        if limit is None:
            limit = limits[gap] = plausible_wh(max_power_kw, gap.total_seconds())
        if delta < 0 or delta > limit:
            slot = interval_floor(t1, minutes)
            rollup.resets[slot] = rollup.resets.get(slot, 0) + 1
            delta = v1 if delta < 0 and ZERO <= v1 <= limit else ZERO
        if delta == 0:
            continue
        (k0, _), (k1, into) = slots[n - 1], slots[n]
        if k1 == k0 or (k1 == k0 + 1 and not into):  # [t0, t1) within interval k0
            start = starts.get(k0)
            if start is None:
                start = starts[k0] = EPOCH + k0 * step
            energy[start] = energy.get(start, ZERO) + delta / 1000
        else:
            spread_energy(energy, t0, t1, delta / 1000, minutes)
    return rollup
