"""Meter readings: from the gateway's normalised samples to one row per instant, and back.

Schema: tenant. The gateway hands over one dict per sampled value (measurand, phase,
location, context, value in base units); ``ReadingRows`` folds those of one connector and
instant into one ``MeterReading`` row (typed columns for what the platform reads, ``extra``
for the rest), and ``readings_store`` writes a batch of rows with one statement. A row that
already exists (the message was sent twice, or two messages share an instant) is completed,
never overwritten: a value already stored wins, and a session or context (why the reading was
taken) is filled in only where the row had none.

``reading_values`` turns a row back into the per-value form the API shows; ``extra_values``
finds one measurand's values among a row's ``extra``.
"""

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction

from chargepoint.models import MeterReading, ReadingContext, RollupPending
from chargepoint.partitions import PARENT, partitions_ensure

logger = logging.getLogger(__name__)

REGISTER = "Energy.Active.Import.Register"
POWER = "Power.Active.Import"
CURRENT = "Current.Import"
OFFERED = "Current.Offered"
VOLTAGE = "Voltage"
SOC = "SoC"
OUTLET_LOCATIONS = ("", "Outlet")

# (measurand, phase) -> column, base unit. A value in another unit or at another location
# (the inlet, the cable) goes to ``extra``; SoC is the car's whatever the location says.
TYPED: dict[tuple[str, str], tuple[str, str]] = {
    (REGISTER, ""): ("energy_wh", "Wh"),
    (POWER, ""): ("power_w", "W"),
    (CURRENT, ""): ("current_a", "A"),
    (CURRENT, "L1"): ("current_l1_a", "A"),
    (CURRENT, "L2"): ("current_l2_a", "A"),
    (CURRENT, "L3"): ("current_l3_a", "A"),
    (OFFERED, ""): ("offered_a", "A"),
    (VOLTAGE, ""): ("voltage_v", "V"),
    (SOC, ""): ("soc_pct", "Percent"),
}
COLUMNS = [column for column, _ in TYPED.values()]
BY_COLUMN = {column: (measurand, phase, unit) for (measurand, phase), (column, unit) in TYPED.items()}
CONTEXTS = {label: value for value, label in ReadingContext.choices}
CONTEXT_LABELS = {value: label for value, label in ReadingContext.choices}
# The billing rollup's grain: the ingest marks each station interval with new readings.
PENDING_GRAIN = timedelta(minutes=15)


def column_of(measurand: str, phase: str, location: str, unit: str) -> str | None:
    """The typed column a value belongs in, or None for ``extra``."""
    typed = TYPED.get((measurand, phase))
    if typed is None or typed[1] != unit:
        return None
    if measurand != SOC and location not in OUTLET_LOCATIONS:
        return None
    return typed[0]


def extra_key(measurand: str, phase: str, location: str, unit: str) -> str:
    """``measurand[|phase][@location][#unit]``: the unit only where it is not the base unit."""
    key = measurand + (f"|{phase}" if phase else "") + (f"@{location}" if location else "")
    return key + (f"#{unit}" if unit and unit != _base_unit(measurand) else "")


def _base_unit(measurand: str) -> str:
    from chargepoint.gateway.normalise import DEFAULT_UNITS

    for prefix, unit in DEFAULT_UNITS:
        if measurand.startswith(prefix):
            return unit
    return ""


def _split_key(key: str) -> tuple[str, str, str, str]:
    rest, _, unit = key.partition("#")
    rest, _, location = rest.partition("@")
    measurand, _, phase = rest.partition("|")
    return measurand, phase, location, unit or _base_unit(measurand)


@dataclass
class ReadingRows:
    """The rows of one batch, keyed (station, sampled_at, connector), merged as values arrive."""

    rows: dict[tuple[int, datetime, int], dict[str, Any]] = field(default_factory=dict)
    values: int = 0

    def add(
        self,
        *,
        station_id: int,
        connector_no: int,
        at: datetime,
        session_id: int | None,
        measurand: str,
        phase: str,
        location: str,
        context: str,
        unit: str,
        value: float,
    ) -> None:
        row = self.rows.setdefault((station_id, at, connector_no), {"session_id": session_id, "context": 0})
        if session_id is not None and row["session_id"] is None:
            row["session_id"] = session_id
        if not row["context"]:  # the first value that says why the reading was taken names it
            row["context"] = CONTEXTS.get(context, ReadingContext.OTHER if context else 0)
        column = column_of(measurand, phase, location, unit)
        if column is not None:
            row.setdefault(column, value)
        else:
            row.setdefault("extra", {}).setdefault(extra_key(measurand, phase, location, unit), value)
        self.values += 1

    def __bool__(self) -> bool:
        return bool(self.rows)


_NAMES = ["station_id", "sampled_at", "connector_no", "session_id", "context", *COLUMNS, "extra"]
_FILL = ", ".join(
    ["session_id = COALESCE(r.session_id, EXCLUDED.session_id)"]
    + ["context = CASE WHEN r.context = 0 THEN EXCLUDED.context ELSE r.context END"]
    + [f"{c} = COALESCE(r.{c}, EXCLUDED.{c})" for c in COLUMNS]
    + ["extra = CASE WHEN EXCLUDED.extra IS NULL THEN r.extra ELSE EXCLUDED.extra || COALESCE(r.extra, '{}') END"]
)
_NEWS = " OR ".join(
    [f"(r.{c} IS NULL AND EXCLUDED.{c} IS NOT NULL)" for c in ["session_id", *COLUMNS]]
    + ["(r.context = 0 AND EXCLUDED.context <> 0)"]
    + ["(EXCLUDED.extra IS NOT NULL AND NOT COALESCE(r.extra, '{}') @> EXCLUDED.extra)"]
)
_INSERT = (
    f"INSERT INTO {PARENT} AS r ({', '.join(_NAMES)}) VALUES <values> "  # noqa: S608 - our own names
    f"ON CONFLICT (station_id, sampled_at, connector_no) DO UPDATE SET {_FILL} WHERE {_NEWS}"
)
CHUNK = 1000
CHECK_VIOLATION = "23514"


def readings_store(batch: ReadingRows) -> int:
    """Write the batch's rows (and the rollup's pending marks); returns the rows inserted or
    completed (a row sent again that brings nothing new is not counted).

    A month without a partition yet gets one and the write is tried again; the caller has
    refused readings older than the retention period, so no dropped month comes back. Each
    attempt runs in a savepoint, so a failed one leaves the caller's transaction usable.

    The caller holds the batch's stations locked FOR UPDATE until it commits, as
    ``telemetry_apply`` does: a mark already pending stands for these readings too, and the
    billing rollup leaves the marks of a locked station for its next run, so it never takes
    one before the readings it stands for are visible.
    """
    items = sorted(batch.rows.items(), key=lambda item: item[0])
    params_all = []
    for (station_id, at, connector_no), row in items:
        extra = row.get("extra")
        params_all.append(
            [
                station_id,
                at,
                connector_no,
                row["session_id"],
                row["context"],
                *(row.get(c) for c in COLUMNS),
                json.dumps(extra) if extra else None,
            ]
        )
    written = 0
    placeholder = "(" + ", ".join(["%s"] * (len(_NAMES) - 1)) + ", %s::jsonb)"
    for offset in range(0, len(params_all), CHUNK):
        chunk = params_all[offset : offset + CHUNK]
        sql = _INSERT.replace("<values>", ", ".join([placeholder] * len(chunk)))
        flat = [value for params in chunk for value in params]
        try:
            written += _execute(sql, flat)
        except IntegrityError as exc:
            if not _no_partition(exc):
                raise
            times = [params[1] for params in chunk]
            partitions_ensure(min(times), max(times))
            written += _execute(sql, flat)
    _pending_mark(items)
    return written


def _execute(sql: str, params: list[Any]) -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _no_partition(exc: IntegrityError) -> bool:
    """PostgreSQL found no partition for a row: a check violation that names no constraint.

    Told by the error's code and fields, not its text (which follows the server's language).
    """
    cause = exc.__cause__
    diag = getattr(cause, "diag", None)
    return getattr(cause, "sqlstate", None) == CHECK_VIOLATION and diag is not None and not diag.constraint_name


def _pending_mark(items: Iterable[tuple[tuple[int, datetime, int], dict[str, Any]]]) -> None:
    """One pending mark per station, 15-minute interval and session the readings touch."""
    marks = set()
    for (station_id, at, _), row in items:
        if row.get("energy_wh") is None and row.get("power_w") is None and not _has_current(row):
            continue
        grain = int(PENDING_GRAIN.total_seconds())
        start = datetime.fromtimestamp(at.timestamp() // grain * grain, tz=at.tzinfo)
        marks.add((station_id, start, row["session_id"]))
    if marks:
        RollupPending.objects.bulk_create(
            [RollupPending(station_id=s, interval_start=t, session_id=x) for s, t, x in sorted(marks, key=str)],
            ignore_conflicts=True,
        )


def _has_current(row: dict[str, Any]) -> bool:
    return any(row.get(c) is not None for c in ("current_a", "current_l1_a", "current_l2_a", "current_l3_a"))


def reading_values(reading: MeterReading) -> list[dict[str, Any]]:
    """The row's values one by one: measurand, phase, location, value, unit (for the API)."""
    values = []
    for column in COLUMNS:
        value = getattr(reading, column)
        if value is not None:
            measurand, phase, unit = BY_COLUMN[column]
            values.append({"measurand": measurand, "phase": phase, "location": "", "value": value, "unit": unit})
    for key, value in sorted((reading.extra or {}).items()):
        measurand, phase, location, unit = _split_key(key)
        values.append({"measurand": measurand, "phase": phase, "location": location, "value": value, "unit": unit})
    return values


def extra_values(extra: dict[str, Any] | None, measurand: str) -> list[tuple[str, str, float]]:
    """(phase, location, value) of each ``measurand`` value a row keeps in ``extra``, base unit only.

    Where a charger measures elsewhere than the outlet (its inlet, the cable, the car) or on
    another phase (N), its values are in ``extra``; readers that want every value of a
    measurand, as the ingest's overdraw check does, take these next to the typed column.
    """
    found = []
    for key, value in (extra or {}).items():
        name, phase, location, _ = _split_key(key)
        if name == measurand and "#" not in key and isinstance(value, int | float):
            found.append((phase, location, float(value)))
    return found


def context_label(reading: MeterReading) -> str:
    return CONTEXT_LABELS.get(reading.context, "")
