"""Resync and verification of one charger: ask it what it does instead of trusting the books.

Schema: tenant.

When a charger comes back online (a reconnect after an earlier connection) or a balancing run is
in doubt about it, ``station_resync`` sends, through the gateway's command path
(``chargepoint.commands``):

- TriggerMessage StatusNotification and MeterValues (OCPP 1.6: for the whole charger; 2.0.1:
  per EVSE), so its connector states and draw are fresh for the next run;
- GetCompositeSchedule per connector (60 s, in A), which says what limit the charger applies now.

What the charger says it applies is stored on the connector's books (``ConnectorLimit.applied_a``).
When it is more than the books by more than a step (a charger applies 32 A where the books say
16 A), the site gets a ``refuses`` alert naming the charger and both figures, the books are set
to what the charger applies (so the next run sends the lowering again instead of believing it
is in force) and a rebalance is requested. A composite schedule that cannot be true (negative,
not a number, far above any rating, another connector's) is rejected and changes nothing.

A station is resynced at most once a minute (a Redis key per station), however often it
reconnects (an attempt that found it offline does not count); ``station_resync_request``
enqueues the ``station_resync`` task on the balancing queue a few seconds after the caller's
transaction commits. A reconnect reaches it through ``chargepoint.listeners.station_reconnected``
(``balancing.receivers``).
"""

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from balancing.alerts import alert_clear, alert_raise
from balancing.dispatch import site_rebalance_request
from balancing.models import ConnectorLimit, SiteAlert, StationFailsafe
from balancing.problem import STEP_A  # the smallest limit change a profile is sent for
from balancing.push import push_timeout_s
from chargepoint.commands import OFFLINE, Command, command_send_many
from chargepoint.models import ChargingSession, ChargingStation, Connector
from evplatform.redis import get_redis, tenant_key
from evplatform.services import active_schema, require_tenant_schema

logger = logging.getLogger(__name__)

RESYNC_EVERY_S = 60
# After a reconnect the charger first sends its own boot and status, and the run the reconnect
# asked for pushes its profiles; the check comes after them.
RESYNC_DELAY_S = 3.0
# Short: a live charger answers in well under a second, and the balancing worker waits meanwhile.
RESYNC_TIMEOUT_S = 5.0
COMPOSITE_DURATION_S = 60
MAX_PLAUSIBLE_A = 1000.0  # no AC connector applies more; a figure above it is not believed
MARKER = "GetCompositeSchedule"  # in the detail of the alerts this module raises (and may clear)
TRIGGERED = ("StatusNotification", "MeterValues")


@dataclass
class ConnectorCheck:
    """One connector's verification: what the charger applies against what the books say."""

    connector_id: int
    applied_a: float | None = None
    books_a: float | None = None
    books_basis: str = ""
    status: str = ""
    error: str = ""

    @property
    def over(self) -> bool:
        return self.applied_a is not None and self.books_a is not None and self.applied_a > self.books_a + STEP_A


@dataclass
class ResyncOutcome:
    station_id: int
    throttled: bool = False
    offline: bool = False
    triggers: dict[str, str] = field(default_factory=dict)  # "StatusNotification#1" -> charger's answer
    checks: list[ConnectorCheck] = field(default_factory=list)

    @property
    def mismatches(self) -> list[ConnectorCheck]:
        return [c for c in self.checks if c.over]


def _throttle_key(station_id: int) -> str:
    return tenant_key(active_schema(), "resync", station_id)


def station_resync_request(*, station_id: int, reason: str) -> None:
    """Ask for a resync of a station once the current transaction commits (at most once a minute).

    Never raises: a resync that cannot be queued (Redis or the broker away) is logged, and the
    next reconnect or doubt asks again.
    """
    require_tenant_schema("station_resync_request")
    schema = active_schema()
    key = _throttle_key(station_id)

    def send() -> None:
        try:
            if get_redis().exists(key):
                return  # resynced within the last minute
            from balancing.tasks import station_resync_task  # the tasks module imports this one

            station_resync_task.apply_async(  # to the balancing queue (evplatform.celery.TASK_QUEUES)
                kwargs={"station_id": station_id, "reason": reason[:100]},
                headers={"_schema_name": schema},
                countdown=RESYNC_DELAY_S,
                retry=False,
            )
        except Exception:  # a lost resync must not cost the telemetry batch
            logger.warning("resync of station %s (%s) not queued", station_id, reason, exc_info=True)

    transaction.on_commit(send)


def resync_commands(station: ChargingStation, connector_ids: list[int]) -> list[Command]:
    """The OCPP calls of one resync, in the station's protocol version (triggers first)."""
    cp = station.charge_point_id
    commands: list[Command] = []
    if station.ocpp_version == "2.0.1":
        for n in connector_ids:
            status = {"requestedMessage": "StatusNotification", "evse": {"id": n, "connectorId": 1}}
            commands.append(Command(cp, "TriggerMessage", status))
            commands.append(Command(cp, "TriggerMessage", {"requestedMessage": "MeterValues", "evse": {"id": n}}))
        schedule = {"duration": COMPOSITE_DURATION_S, "chargingRateUnit": "A"}
        commands += [Command(cp, "GetCompositeSchedule", {"evseId": n, **schedule}) for n in connector_ids]
    else:
        commands += [Command(cp, "TriggerMessage", {"requestedMessage": message}) for message in TRIGGERED]
        schedule = {"duration": COMPOSITE_DURATION_S, "chargingRateUnit": "A"}
        commands += [Command(cp, "GetCompositeSchedule", {"connectorId": n, **schedule}) for n in connector_ids]
    return commands


def composite_limit_a(
    *, payload: dict[str, Any] | None, connector_id: int, station: ChargingStation, voltage_v: float, now: datetime
) -> float:
    """The limit (A per phase) a GetCompositeSchedule answer says applies at ``now``.

    Raises ``ValueError`` naming the field when the answer cannot be true or is not about
    ``connector_id``.
    """
    if not isinstance(payload, dict):
        raise ValueError("payload: not an object")
    if "schedule" in payload:  # 2.0.1
        schedule = payload["schedule"]
        if not isinstance(schedule, dict):
            raise ValueError("schedule: not an object")
        number = schedule.get("evseId")
        start_raw = schedule.get("scheduleStart")
        number_field = "schedule.evseId"
    else:  # 1.6
        schedule = payload.get("chargingSchedule")
        if not isinstance(schedule, dict):
            raise ValueError("chargingSchedule: missing")
        number = payload.get("connectorId")
        start_raw = payload.get("scheduleStart") or schedule.get("startSchedule")
        number_field = "connectorId"
    if number is not None and number != connector_id:
        raise ValueError(f"{number_field}: {number!r} is not the connector asked about ({connector_id})")
    periods = schedule.get("chargingSchedulePeriod")
    if not isinstance(periods, list) or not periods:
        raise ValueError("chargingSchedulePeriod: empty")
    try:
        ordered = sorted(periods, key=lambda p: float(p.get("startPeriod", 0)))
    except (TypeError, ValueError, AttributeError):
        raise ValueError("chargingSchedulePeriod.startPeriod: not a number") from None
    start = parse_datetime(start_raw) if isinstance(start_raw, str) else None
    current = ordered[0]
    if start is not None and start.tzinfo is not None:
        elapsed = (now - start).total_seconds()
        for period in ordered:
            if float(period.get("startPeriod", 0)) <= elapsed:
                current = period
    raw = current.get("limit")
    if isinstance(raw, bool) or not isinstance(raw, int | float | Decimal):
        raise ValueError(f"chargingSchedulePeriod.limit: {raw!r} is not a number")
    limit = float(raw)
    if not math.isfinite(limit) or limit < 0:
        raise ValueError(f"chargingSchedulePeriod.limit: {raw!r} is not a current")
    unit = schedule.get("chargingRateUnit", "A")
    if unit == "W":
        phases = current.get("numberPhases") or len(station.site_phases)
        if not isinstance(phases, int) or not 1 <= phases <= 3:
            raise ValueError(f"chargingSchedulePeriod.numberPhases: {phases!r} is not 1-3")
        limit = limit / (voltage_v * phases)
    elif unit != "A":
        raise ValueError(f"chargingRateUnit: {unit!r} is neither A nor W")
    if limit > MAX_PLAUSIBLE_A:
        raise ValueError(f"chargingSchedulePeriod.limit: {limit:g} A is more than any connector carries")
    return round(limit, 1)


def _books(
    station: ChargingStation,
    connector: Connector,
    limit: ConnectorLimit | None,
    session: ChargingSession | None,
    failsafe: StationFailsafe | None,
    now: datetime,
) -> tuple[float, str]:
    """What the books say the connector applies now, and on what grounds."""
    if (
        limit is not None
        and limit.limit_a is not None
        and session is not None
        and limit.transaction_id == session.transaction_id
        and (limit.valid_until is None or limit.valid_until > now)
    ):
        return float(limit.limit_a), "accepted TxProfile"
    if failsafe is not None and failsafe.confirmed_at is not None:
        return float(failsafe.limit_a), "fail-safe default"
    return float(connector.max_current_a or station.max_current_a), "rating"


def station_resync(*, station_id: int, now: datetime | None = None, timeout_s: float | None = None) -> ResyncOutcome:
    """Resync one station and verify what it applies (see the module docstring)."""
    require_tenant_schema("station_resync")
    outcome = ResyncOutcome(station_id)
    if not get_redis().set(_throttle_key(station_id), "1", nx=True, ex=RESYNC_EVERY_S):
        outcome.throttled = True
        return outcome
    station = ChargingStation.objects.select_related("site").filter(pk=station_id).first()
    if station is None:
        return outcome
    connectors = list(station.connectors.order_by("connector_id"))
    numbers = [c.connector_id for c in connectors]
    commands = resync_commands(station, numbers)
    limit_s = min(RESYNC_TIMEOUT_S, push_timeout_s())
    results = command_send_many(commands=commands, timeout_s=timeout_s if timeout_s is not None else limit_s)
    if all(r.status == OFFLINE for r in results):
        # Nothing was verified: the charger's comeback must not be held back by this attempt.
        get_redis().delete(_throttle_key(station_id))
        outcome.offline = True
        return outcome
    now = now or timezone.now()
    composites = {}
    for command, result in zip(commands, results, strict=True):
        if command.action == "TriggerMessage":
            evse = command.payload.get("evse", {}).get("id")
            name = command.payload["requestedMessage"] + (f"#{evse}" if evse else "")
            outcome.triggers[name] = result.status
        else:
            number = command.payload.get("connectorId", command.payload.get("evseId"))
            composites[number] = result

    limits = {cl.connector_id: cl for cl in ConnectorLimit.objects.filter(connector__in=connectors)}
    open_sessions = ChargingSession.objects.filter(connector__in=connectors, stopped_at__isnull=True)
    sessions = {s.connector_id: s for s in open_sessions.order_by("started_at")}
    failsafe = StationFailsafe.objects.filter(station=station).first()
    site = station.site
    for connector in connectors:
        result = composites[connector.connector_id]
        check = ConnectorCheck(connector.connector_id, status=result.status)
        outcome.checks.append(check)
        if not result.accepted:
            check.error = result.error or f"composite schedule not given: {result.status}"
            continue
        try:
            check.applied_a = composite_limit_a(
                payload=result.payload,
                connector_id=connector.connector_id,
                station=station,
                voltage_v=float(site.voltage_v),
                now=now,
            )
        except ValueError as exc:
            check.error = f"composite schedule rejected: {exc}"
            logger.warning("%s: %s", connector, check.error)
            continue
        limit = limits.get(connector.pk)
        check.books_a, check.books_basis = _books(station, connector, limit, sessions.get(connector.pk), failsafe, now)
        values: dict[str, Any] = {"applied_a": Decimal(str(check.applied_a)), "applied_checked_at": now}
        if check.over:
            values.update(_act_on_mismatch(site, station, connector, failsafe, check, now))
        else:
            _clear_own_alert(site, connector, check, now)
        # Only these fields: a run may be booking the same row meanwhile.
        ConnectorLimit.objects.update_or_create(connector=connector, defaults=values)
    if outcome.mismatches:
        site_rebalance_request(site_id=site.pk, reason=f"{station.charge_point_id}: applies more than the books say")
    return outcome


def _act_on_mismatch(
    site: Any,
    station: ChargingStation,
    connector: Connector,
    failsafe: StationFailsafe | None,
    check: ConnectorCheck,
    now: datetime,
) -> dict[str, Any]:
    """Alert, and the books' new values: what the charger applies, so the next run corrects it."""
    applied, books = check.applied_a or 0.0, check.books_a or 0.0
    alert_raise(
        site=site,
        kind=SiteAlert.Kind.REFUSES,
        detail=f"{connector} applies {applied:g} A, books say {books:g} A ({check.books_basis}); found with {MARKER}",
        now=now,
        station=station,
        connector=connector,
    )
    if check.books_basis == "accepted TxProfile":
        return {"limit_a": Decimal(str(applied))}
    if check.books_basis == "fail-safe default" and failsafe is not None:
        # Not in force as we thought: the next run sends the fail-safe default again.
        StationFailsafe.objects.filter(pk=failsafe.pk).update(confirmed_at=None)
    return {}


def _clear_own_alert(site: Any, connector: Connector, check: ConnectorCheck, now: datetime) -> None:
    """Clear an alert of this module once the charger applies what the books say."""
    open_alert = SiteAlert.objects.filter(
        site=site, connector=connector, kind=SiteAlert.Kind.REFUSES, cleared_at__isnull=True
    ).first()
    if open_alert is not None and MARKER in open_alert.detail:
        alert_clear(
            site=site,
            kind=SiteAlert.Kind.REFUSES,
            now=now,
            station=connector.station,
            connector=connector,
            why=f"applies {check.applied_a:g} A, books say {check.books_a:g} A",
        )
