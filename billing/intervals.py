"""The interval grid: UTC instants every ``minutes`` from the epoch, and spreading energy on it.

Pure. The grid is aligned to UTC; for 15-minute intervals that is also the local clock's grid
in every zone whose offset is a whole number of quarter hours (all but a few).
"""

from collections.abc import MutableMapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal

DEFAULT_INTERVAL_MINUTES = 15
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ZERO = Decimal(0)


def interval_floor(moment: datetime, minutes: int = DEFAULT_INTERVAL_MINUTES) -> datetime:
    """Start of the interval containing ``moment`` (a UTC instant)."""
    seconds = int((moment - EPOCH).total_seconds() // (minutes * 60)) * minutes * 60
    return EPOCH + timedelta(seconds=seconds)


def spread_energy(
    out: MutableMapping[datetime, Decimal],
    start: datetime,
    end: datetime,
    energy_kwh: Decimal,
    minutes: int = DEFAULT_INTERVAL_MINUTES,
) -> None:
    """Add ``energy_kwh`` drawn evenly over [start, end) to the intervals it overlaps."""
    if energy_kwh == 0:
        return
    first = interval_floor(start, minutes)
    step = timedelta(minutes=minutes)
    if end <= start or end <= first + step:
        out[first] = out.get(first, ZERO) + energy_kwh
        return
    total = Decimal((end - start).total_seconds())
    full_slot = energy_kwh * (minutes * 60) / total
    slot = first
    remaining = energy_kwh
    while slot < end:
        slot_end = slot + step
        if slot_end >= end:
            out[slot] = out.get(slot, ZERO) + remaining
            break
        part = full_slot if slot >= start else energy_kwh * Decimal((slot_end - start).total_seconds()) / total
        out[slot] = out.get(slot, ZERO) + part
        remaining -= part
        slot = slot_end
