"""Energy register readings -> interval energy. Pure; ``billing.services`` feeds it rows.

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

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from billing.intervals import DEFAULT_INTERVAL_MINUTES, ZERO, interval_floor, spread_energy

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
    """Interval energy (kWh) of one register series of (time, Wh) readings in any order."""
    by_time: dict[datetime, Decimal] = {}
    for at, wh in readings:
        by_time[at] = wh
    ordered = sorted(by_time.items())
    rollup = RegisterRollup()
    for (t0, v0), (t1, v1) in itertools.pairwise(ordered):
        delta = v1 - v0
        limit = plausible_wh(max_power_kw, (t1 - t0).total_seconds())
        if delta < 0 or delta > limit:
            slot = interval_floor(t1, minutes)
            rollup.resets[slot] = rollup.resets.get(slot, 0) + 1
            delta = v1 if delta < 0 and ZERO <= v1 <= limit else ZERO
        spread_energy(rollup.intervals_kwh, t0, t1, delta / 1000, minutes)
    return rollup
