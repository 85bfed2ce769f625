"""Turn a site's rows into the engine's input (and nothing else). Schema: tenant.

The engine (``balancing.engine``) sees plain dicts: the tree of nodes with their limits, and
one EVSE per connector of an online station. What cannot be changed right now is an EVSE with
``fixed_a``: the current an offline charger may still draw under its last profile (or its
fail-safe default), which the engine books on every node above it before sharing the rest.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from balancing.limits import SiteLimits, site_limits
from balancing.models import Circuit, ConnectorLimit, Site, StationFailsafe
from chargepoint.models import ChargingSession, ChargingStation, Connector, MeterSample

ROOT_ID = "site"
MIN_CURRENT_A = 6.0  # IEC 61851 / SAE J1772 lowest pilot current
STEP_A = 1.0
# A reading older than this says nothing about what the car draws now.
MEASUREMENT_MAX_AGE = timedelta(minutes=2)
# A car gets this long under our profile to ramp up before a low draw counts as "not using it";
# otherwise a car that has just started (still at 0 A) would be held down or paused.
RAMP_UP = timedelta(seconds=60)
ACTIVE_STATUSES = frozenset(
    {
        Connector.Status.PREPARING,
        Connector.Status.CHARGING,
        Connector.Status.SUSPENDED_EV,
        Connector.Status.SUSPENDED_EVSE,
        Connector.Status.OCCUPIED,
    }
)
CURRENT_IMPORT = "Current.Import"
ENERGY_REGISTER = "Energy.Active.Import.Register"


def node_id(circuit: Circuit | None) -> str:
    return ROOT_ID if circuit is None else f"circuit-{circuit.pk}"


def evse_id(connector: Connector) -> str:
    return f"{connector.station.charge_point_id}/{connector.connector_id}"


@dataclass
class EvseContext:
    """What the run needs to know about one EVSE beyond the engine's view."""

    station: ChargingStation
    connector: Connector
    session: ChargingSession | None
    limit: ConnectorLimit
    measured_a: float | None


@dataclass
class Reservation:
    station: ChargingStation
    connector: Connector
    limit_a: float
    why: str


@dataclass
class BuiltProblem:
    problem: dict[str, Any]
    evses: dict[str, EvseContext]
    limits: SiteLimits
    reservations: list[Reservation] = field(default_factory=list)


def _f(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _reserved_a(station: ChargingStation, limit: ConnectorLimit, now: datetime) -> tuple[float, str]:
    """What an offline charger may draw on a connector without hearing from us."""
    if limit.limit_a is not None and limit.valid_until is not None and limit.valid_until > now:
        return float(limit.limit_a), f"offline: last profile {limit.limit_a} A until {limit.valid_until:%H:%M:%S}"
    failsafe = StationFailsafe.objects.filter(station=station, confirmed_at__isnull=False).first()
    if failsafe is not None:
        return float(failsafe.limit_a), f"offline: fail-safe default {failsafe.limit_a} A"
    return float(station.max_current_a), f"offline: no profile known, rating {station.max_current_a} A"


def _latest_samples(connectors: list[Connector], since: datetime) -> dict[tuple[int, str, str], MeterSample]:
    rows = (
        MeterSample.objects.filter(
            connector__in=connectors, measurand__in=[CURRENT_IMPORT, ENERGY_REGISTER], sampled_at__gte=since
        )
        .order_by("connector_id", "measurand", "phase", "-sampled_at")
        .distinct("connector_id", "measurand", "phase")
    )
    return {(row.connector_id or 0, row.measurand, row.phase): row for row in rows}


def build_problem(site: Site, now: datetime) -> BuiltProblem:
    """The engine input for ``site`` at ``now``, with the context to act on its answer."""
    limits = site_limits(site, now)
    phase_names = ["L1", "L2", "L3"][: site.phases]
    circuits = list(Circuit.objects.filter(site=site).order_by("pk"))
    nodes: dict[str, dict[str, Any]] = {
        ROOT_ID: {"id": ROOT_ID, "parent": None, "limit_a": list(limits.limit_a)},
    }
    if limits.limit_kw is not None:
        nodes[ROOT_ID]["limit_kw"] = limits.limit_kw
    for circuit in circuits:
        node: dict[str, Any] = {
            "id": node_id(circuit),
            "parent": ROOT_ID if circuit.parent_id is None else f"circuit-{circuit.parent_id}",
            "limit_a": [float(circuit.limit_a)] * site.phases,
        }
        if circuit.limit_kw is not None:
            node["limit_kw"] = float(circuit.limit_kw)
        nodes[node["id"]] = node

    connectors = list(
        Connector.objects.filter(station__site=site)
        .select_related("station", "station__circuit")
        .order_by("station__charge_point_id", "connector_id")
    )
    open_sessions = {
        s.connector_id: s for s in ChargingSession.objects.filter(connector__in=connectors, stopped_at__isnull=True)
    }
    limits_by_connector = {cl.connector_id: cl for cl in ConnectorLimit.objects.filter(connector__in=connectors)}
    samples = _latest_samples(connectors, now - MEASUREMENT_MAX_AGE)

    built = BuiltProblem(problem={}, evses={}, limits=limits)
    evses: list[dict[str, Any]] = []
    for connector in connectors:
        station = connector.station
        session = open_sessions.get(connector.pk)
        limit = limits_by_connector.get(connector.pk) or ConnectorLimit(connector=connector)
        parent = node_id(station.circuit)
        phases = [p for p in station.site_phases if p in phase_names]
        if not station.is_online:
            if session is not None or (limit.limit_a or 0) > 0:
                # The engine books what it may draw on every node above it (``fixed_a``) and
                # warns when that alone overloads a limit; nothing is pushed to it.
                reserved, why = _reserved_a(station, limit, now)
                built.reservations.append(Reservation(station, connector, reserved, why))
                evses.append(
                    {
                        "id": evse_id(connector),
                        "node": parent,
                        "phases": phases,
                        "min_a": 0.0,
                        "max_a": max(reserved, float(station.max_current_a)),
                        "step_a": STEP_A,
                        "active": False,
                        "fixed_a": reserved,
                    }
                )
            continue
        currents = [
            samples[(connector.pk, CURRENT_IMPORT, p)].value
            for p in ("L1", "L2", "L3", "")
            if (connector.pk, CURRENT_IMPORT, p) in samples
        ]
        measured = max((float(c) for c in currents), default=None)
        ratings = [station.max_current_a, connector.max_current_a or station.max_current_a]
        if connector.external_limit_a is not None:  # set outside the platform: never offer more
            ratings.append(connector.external_limit_a)
        max_a = float(min(ratings))
        active = session is not None and connector.status in ACTIVE_STATUSES
        if max_a < MIN_CURRENT_A:  # an outside limit below the lowest pilot current: it may only pause
            max_a, active = MIN_CURRENT_A, False
        evse: dict[str, Any] = {
            "id": evse_id(connector),
            "node": parent,
            "phases": phases,
            "min_a": MIN_CURRENT_A,
            "max_a": max_a,
            "step_a": STEP_A,
            "active": active,
        }
        ramped = (
            session is not None
            and limit.transaction_id == session.transaction_id
            and limit.confirmed_at is not None
            and now - limit.confirmed_at >= RAMP_UP
        )
        if measured is not None and ramped:
            evse["measured_a"] = round(measured, 2)
        if limit.limit_a is not None:
            evse["offered_a"] = float(limit.limit_a)
        this_session = session is not None and limit.transaction_id == session.transaction_id
        # On/off spells belong to a session: a new car does not inherit the last one's pause.
        if limit.paused_since is not None and this_session:
            evse["paused_since"] = limit.paused_since.isoformat()
        if limit.charging_since is not None and this_session:
            evse["charging_since"] = limit.charging_since.isoformat()
        if limit.no_resume_count:
            evse["resumes_after_pause"] = False
        if session is not None:
            delivered_kwh = _session_kwh(session, samples.get((connector.pk, ENERGY_REGISTER, "")))
            evse["session_kwh"] = round(delivered_kwh, 3)
            if session.ev_max_current_a is not None:
                evse["ev_max_a"] = float(session.ev_max_current_a)
            if session.energy_needed_kwh is not None and session.departure_at is not None:
                evse["energy_needed_kwh"] = round(max(0.0, float(session.energy_needed_kwh) - delivered_kwh), 3)
                evse["departure"] = session.departure_at.isoformat()
        evses.append(evse)
        built.evses[evse["id"]] = EvseContext(station, connector, session, limit, measured)

    built.problem = {
        "voltage_v": float(site.voltage_v),
        "nodes": list(nodes.values()),
        "evses": evses,
        "now": now.isoformat(),
    }
    if site.max_raise_a is not None:
        built.problem["max_raise_a"] = float(site.max_raise_a)
    return built


def _session_kwh(session: ChargingSession, register: MeterSample | None) -> float:
    if register is not None and register.value >= session.meter_start_wh:
        return float(register.value - session.meter_start_wh) / 1000.0
    return float(session.energy_kwh or 0)
