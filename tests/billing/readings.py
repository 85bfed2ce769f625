"""Meter readings written the way the ingest writes them: rows and the rollup's pending marks.

``MeterReading.objects.create`` writes no mark, so the rollup would never see such a reading;
these helpers go through ``chargepoint.readings.readings_store`` like ``telemetry_apply`` does.
"""

from collections.abc import Iterable, Mapping
from datetime import datetime

from chargepoint.models import ChargingSession, ChargingStation
from chargepoint.readings import BY_COLUMN, ReadingRows, readings_store


def readings_write(
    station: ChargingStation,
    rows: Iterable[tuple[datetime, Mapping[str, float]]],
    *,
    connector_no: int = 1,
    session: ChargingSession | None = None,
) -> int:
    """Store (instant, {column: value}) rows of one connector, e.g. ``{"energy_wh": 1500}``."""
    batch = ReadingRows()
    for at, values in rows:
        for column, value in values.items():
            measurand, phase, unit = BY_COLUMN[column]
            batch.add(
                station_id=station.pk,
                connector_no=connector_no,
                at=at,
                session_id=session.pk if session is not None else None,
                measurand=measurand,
                phase=phase,
                location="",
                context="",
                unit=unit,
                value=float(value),
            )
    return readings_store(batch)


def meter_event(cp: str, at: datetime, *, connector: int = 1, transaction_id: str = "", **values: float) -> dict:
    """A gateway meter event for ``telemetry_apply``: one instant, values by column name."""
    samples = []
    for column, value in values.items():
        measurand, phase, unit = BY_COLUMN[column]
        samples.append(
            {
                "at": at.isoformat(),
                "measurand": measurand,
                "phase": phase,
                "location": "",
                "context": "",
                "value": str(value),
                "unit": unit,
            }
        )
    event = {"type": "meter", "cp": cp, "ts": at.isoformat(), "connector": connector, "samples": samples}
    if transaction_id:
        event["transaction_id"] = transaction_id
    return event
