"""Turn a site's rows into the engine's input (and nothing else). Schema: tenant.

The engine (``balancing.engine``) sees plain dicts: the tree of nodes with their limits, and
one EVSE per connector. What cannot be changed right now is an EVSE with ``fixed_a``, which
the engine books on every node above it before sharing the rest:

- an offline charger: its last profile while a session is open (until it expires), else its
  default (the confirmed fail-safe, else its rating);
- an idle online connector (no session): the current a car plugging in would start at before
  its first TxProfile arrives (its confirmed default, else its rating), so a newcomer never
  lifts the site over its limit;
- a charger that is non-compliant (closed loop): it drew above what the books allow it (its
  accepted TxProfile, else its confirmed default, else its rating) by more than the tolerance in
  ``BALANCING_OVERDRAW_READINGS`` readings in a row: booked at its measured draw, rounded up to
  the step, so the others are lowered around it;
- a charger that never accepted a limit for its session (every push refused): booked at its
  measured draw, or its default while no reading has come.

Readings are the connectors' meter readings of the last minutes (one row per instant); a
reading's draw is the maximum of its Current.Import values (its phases, wherever measured);
readings above ``PLAUSIBLE_SHARE`` of the rating, negative ones and ones from the future are
dropped, so a broken meter never moves a limit. Amperes are per phase.
"""

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from balancing.limits import Candidate, SiteLimits, limits_with_demand_cap, site_limits
from balancing.models import Circuit, ConnectorLimit, Site, StationFailsafe
from balancing.policy import PolicyInput, policy_hook
from chargepoint.models import ChargingSession, ChargingStation, Connector, MeterReading
from chargepoint.readings import extra_values

logger = logging.getLogger(__name__)

ROOT_ID = "site"
MIN_CURRENT_A = 6.0  # IEC 61851 / SAE J1772 lowest pilot current
STEP_A = 1.0
# A reading older than this says nothing about what the car draws now.
MEASUREMENT_MAX_AGE = timedelta(minutes=2)
# A charger's clock may run a little ahead of ours; a reading further in the future is not trusted.
READING_CLOCK_SKEW = timedelta(seconds=10)
# A car gets this long under our profile to ramp up before a low draw counts as "not using it"
# (the engine then holds it near its draw); otherwise a car that has just started (still at 0 A)
# would be held down or paused. Overdraw is judged without it, reading by reading.
RAMP_UP = timedelta(seconds=60)
# A car offered at least its minimum that draws less than RESUMED_DRAW_A for this long sleeps.
RESUME_GRACE = timedelta(minutes=2)
RESUMED_DRAW_A = 1.0
# A sleeping car's weight: it is paused first when not all can charge, offered its minimum
# again when capacity is free.
SLEEPING_PRIORITY = 0.01
# A reading above this share of the charger's rating is implausible and dropped.
PLAUSIBLE_SHARE = 1.5
ACTIVE_STATUSES = frozenset(
    {
        Connector.Status.PREPARING,
        Connector.Status.CHARGING,
        Connector.Status.SUSPENDED_EV,
        Connector.Status.SUSPENDED_EVSE,
        Connector.Status.OCCUPIED,
    }
)
# No car can start on these: an idle connector in them keeps no headroom.
CLOSED_STATUSES = frozenset({Connector.Status.UNAVAILABLE, Connector.Status.FAULTED})
FAILED_STATUSES = frozenset({"Rejected", "CallError", "Timeout", "Offline", "NotSupported", "NotImplemented"})
CURRENT_IMPORT = "Current.Import"
ENERGY_REGISTER = "Energy.Active.Import.Register"


def node_id(circuit: Circuit | None) -> str:
    return ROOT_ID if circuit is None else f"circuit-{circuit.pk}"


def evse_id(connector: Connector) -> str:
    return f"{connector.station.charge_point_id}/{connector.connector_id}"


def ceil_step(value_a: float) -> float:
    """``value_a`` rounded up to the charger's step (A)."""
    return math.ceil(value_a / STEP_A - 1e-9) * STEP_A


def failsafe_default_a(site: Site) -> float:
    """The default (TxDefaultProfile) current the site's chargers should hold (A)."""
    return 0.0 if site.idle_default_zero else float(site.failsafe_a)


def failsafe_stale(site: Site, station: ChargingStation, failsafe: StationFailsafe | None, now: datetime) -> bool:
    """Whether the station's default must be (re)sent: never confirmed, another value, or a reboot since."""
    return (
        failsafe is None
        or failsafe.confirmed_at is None
        or float(failsafe.limit_a) != failsafe_default_a(site)
        or (station.last_boot_at is not None and (failsafe.booted_at or now) < station.last_boot_at)
    )


@dataclass
class Reading:
    at: datetime
    current_a: float  # max over the phases of one reading


@dataclass
class EvseContext:
    """What the run needs to know about one EVSE beyond the engine's view.

    ``allowed_a``: what the books allow it to draw now (its accepted TxProfile for this
    transaction, else its confirmed default, else its rating), ``allowed_basis`` says which.
    ``readings`` are the latest plausible ones, newest first.
    """

    station: ChargingStation
    connector: Connector
    session: ChargingSession | None
    limit: ConnectorLimit
    readings: list[Reading] = field(default_factory=list)
    allowed_a: float = 0.0
    allowed_basis: str = "rating"
    allowed_since: datetime | None = None
    overdraw: bool = False  # non-compliant in this run
    overdraw_began: bool = False  # its overdraw episode began in this run
    overdraw_readings: list[Reading] = field(default_factory=list)
    never_accepted: bool = False
    sleeping: bool = False
    fixed_a: float | None = None  # what the engine was told it draws, if it was fixed
    fixed_why: str = ""

    @property
    def rating_a(self) -> float:
        return float(self.station.max_current_a)

    @property
    def measured_a(self) -> float | None:
        """Its latest plausible reading (A), or None without a fresh one."""
        return self.readings[0].current_a if self.readings else None

    @property
    def ceiling_a(self) -> float:
        """The most it may draw before a reading counts as over: its allowance plus the tolerance (A)."""
        return self.allowed_a + overdraw_tolerance_a(self.allowed_a)

    @property
    def draw_a(self) -> float | None:
        """Its latest plausible draw rounded up to the step (A), or None without a fresh reading."""
        return None if self.measured_a is None else ceil_step(self.measured_a)

    @property
    def may_draw_a(self) -> float:
        """What it may really be drawing: the books' allowance or its draw, whichever is higher."""
        return max(self.allowed_a, self.draw_a or 0.0)


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
    failsafes: dict[int, StationFailsafe] = field(default_factory=dict)
    stations: list[ChargingStation] = field(default_factory=list)  # online, in charge point id order
    chargers_a: list[float] = field(default_factory=list)  # chargers' latest draw per site phase


def _default_a(station: ChargingStation, failsafe: StationFailsafe | None) -> tuple[float, str]:
    """What the station's connectors draw without a TxProfile of ours: its confirmed default, else its rating."""
    if failsafe is not None and failsafe.confirmed_at is not None:
        return float(failsafe.limit_a), f"fail-safe default {failsafe.limit_a} A"
    return float(station.max_current_a), f"no default confirmed, rating {station.max_current_a} A"


def _reserved_a(
    station: ChargingStation,
    limit: ConnectorLimit,
    session: ChargingSession | None,
    failsafe: StationFailsafe | None,
    now: datetime,
) -> tuple[float, str]:
    """What an offline charger may draw on a connector without hearing from us."""
    if (
        session is not None
        and limit.limit_a is not None
        and limit.valid_until is not None
        and limit.valid_until > now
        and limit.transaction_id in ("", session.transaction_id)
    ):
        return float(limit.limit_a), f"offline: last profile {limit.limit_a} A until {limit.valid_until:%H:%M:%S}"
    default, why = _default_a(station, failsafe)
    return default, f"offline{'' if session else ', no session'}: {why}"


@dataclass
class RecentMeter:
    """What the site's recent readings say, per connector pk (one bounded query, see ``_recent_meter``)."""

    readings: dict[int, list[Reading]] = field(default_factory=dict)  # newest first, up to ``keep``
    last_draws: dict[int, datetime] = field(default_factory=dict)  # last draw >= RESUMED_DRAW_A
    registers_wh: dict[int, float] = field(default_factory=dict)  # latest energy register


# station, connector, sampled_at, energy_wh, current_a, current_l1_a, current_l2_a, current_l3_a, extra
RecentRow = tuple[int, int, datetime, float | None, float | None, float | None, float | None, float | None, Any]


def recent_readings_query(station_ids: Iterable[int], now: datetime) -> "QuerySet[MeterReading, RecentRow]":
    """The stations' connector readings from ``max(MEASUREMENT_MAX_AGE, RESUME_GRACE)`` ago to
    ``READING_CLOCK_SKEW`` ahead, newest first, as (station, connector, time, register, currents,
    extra) tuples.

    A range of the readings' key (station, sampled_at) in the current month's partition (two
    in a month's first minutes): its cost follows the site's size, never the history's.
    """
    window = max(MEASUREMENT_MAX_AGE, RESUME_GRACE)
    return (
        MeterReading.objects.filter(
            station_id__in=sorted(set(station_ids)),
            sampled_at__gte=now - window,
            sampled_at__lte=now + READING_CLOCK_SKEW,
            connector_no__gt=0,
        )
        .order_by("-sampled_at")
        .values_list(
            "station_id",
            "connector_no",
            "sampled_at",
            "energy_wh",
            "current_a",
            "current_l1_a",
            "current_l2_a",
            "current_l3_a",
            "extra",
        )
    )


def _recent_meter(connectors: list[Connector], ratings: dict[int, float], now: datetime, keep: int) -> RecentMeter:
    """The connectors' readings of the last minutes, from one bounded query (``recent_readings_query``).

    A reading's current is the maximum of its Current.Import values: its phases, and any it
    reported at another location (inlet, cable, car) or on N, kept in ``extra``; the ingest's
    overdraw check looks at the same values. A reading with an implausible one (negative, above
    ``PLAUSIBLE_SHARE`` of the rating) is dropped, and the next older one counts instead: the
    readings are the latest ``keep`` plausible ones. Registers (Energy.Active.Import.Register,
    at the outlet or elsewhere) and readings count within ``MEASUREMENT_MAX_AGE``, draws (at
    least ``RESUMED_DRAW_A``, plausible or not) within ``RESUME_GRACE``.
    """
    recent = RecentMeter()
    by_key = {(c.station_id, c.connector_id): c.pk for c in connectors}
    if not by_key:
        return recent
    rows = recent_readings_query([c.station_id for c in connectors], now)
    for station_id, connector_no, at, energy_wh, *currents, extra in rows:
        pk = by_key.get((station_id, connector_no))
        if pk is None:
            continue
        fresh = at >= now - MEASUREMENT_MAX_AGE
        if energy_wh is None and extra:
            energy_wh = next((v for phase, _, v in extra_values(extra, ENERGY_REGISTER) if not phase), None)
        if fresh and energy_wh is not None and pk not in recent.registers_wh:
            recent.registers_wh[pk] = energy_wh
        values = [v for v in currents if v is not None] + [v for _, _, v in extra_values(extra, CURRENT_IMPORT)]
        if not values:
            continue
        current = max(values)
        if at >= now - RESUME_GRACE and current >= RESUMED_DRAW_A and pk not in recent.last_draws:
            recent.last_draws[pk] = at
        if not fresh or min(values) < 0 or current > PLAUSIBLE_SHARE * ratings.get(pk, 0.0):
            continue
        kept = recent.readings.setdefault(pk, [])
        if len(kept) < keep:
            kept.append(Reading(at, current))
    return recent


def _allowance(ctx: EvseContext, failsafe: StationFailsafe | None) -> None:
    """What the books allow the connector to draw now, why, and since when."""
    limit, session = ctx.limit, ctx.session
    if session is not None and limit.limit_a is not None and limit.transaction_id == session.transaction_id:
        ctx.allowed_a, ctx.allowed_basis, ctx.allowed_since = float(limit.limit_a), "profile", limit.confirmed_at
    elif failsafe is not None and failsafe.confirmed_at is not None:
        ctx.allowed_a, ctx.allowed_basis = float(failsafe.limit_a), "fail-safe"
        ctx.allowed_since = failsafe.confirmed_at
    else:
        ctx.allowed_a, ctx.allowed_basis, ctx.allowed_since = ctx.rating_a, "rating", None


def overdraw_tolerance_a(allowed_a: float) -> float:
    """How far above its allowance a charger may draw before it counts as over (A)."""
    return max(settings.BALANCING_OVERDRAW_TOLERANCE_A, settings.BALANCING_OVERDRAW_TOLERANCE_SHARE * allowed_a)


def _judge_overdraw(ctx: EvseContext) -> None:
    """Non-compliant: its last ``BALANCING_OVERDRAW_READINGS`` readings after the grace all over.

    Once non-compliant it stays so until a reading complies: without fresh readings it is still
    booked at its last draw above the limit.
    """
    needed = max(1, int(settings.BALANCING_OVERDRAW_READINGS))
    grace = timedelta(seconds=settings.BALANCING_OVERDRAW_GRACE_S)
    counted = [r for r in ctx.readings if ctx.allowed_since is None or r.at > ctx.allowed_since + grace][:needed]
    streak: list[Reading] = []
    for reading in counted:
        if reading.current_a <= ctx.ceiling_a:
            break
        streak.append(reading)
    limit, session = ctx.limit, ctx.session
    episode_open = (
        limit.overdraw_since is not None
        and limit.overdraw_count >= needed
        and session is not None
        and limit.overdraw_since >= session.started_at
    )
    complied = len(streak) < len(counted)
    ctx.overdraw_readings = streak
    ctx.overdraw = len(streak) >= needed or (episode_open and not complied)
    ctx.overdraw_began = ctx.overdraw and not episode_open


def _judge_sleep(ctx: EvseContext, last_draw: datetime | None, now: datetime) -> None:
    """A car offered its minimum or more for RESUME_GRACE that has not drawn RESUMED_DRAW_A since."""
    limit = ctx.limit
    offered_since = limit.charging_since or limit.confirmed_at
    if (
        ctx.allowed_basis != "profile"
        or ctx.allowed_a < MIN_CURRENT_A
        or offered_since is None
        or now - offered_since < RESUME_GRACE
        or (last_draw is not None and now - last_draw < RESUME_GRACE)
    ):
        return
    suspended = ctx.connector.status == Connector.Status.SUSPENDED_EV
    not_drawing = ctx.measured_a is not None and ctx.measured_a < RESUMED_DRAW_A
    ctx.sleeping = suspended or not_drawing


def _never_accepted(ctx: EvseContext) -> bool:
    """Its session has no accepted limit of ours, and its last push for this session failed."""
    limit, session = ctx.limit, ctx.session
    return (
        session is not None
        and ctx.allowed_basis != "profile"
        and limit.last_status in FAILED_STATUSES
        and limit.requested_at is not None
        and limit.requested_at >= session.started_at
    )


def build_problem(site: Site, now: datetime) -> BuiltProblem:
    """The engine input for ``site`` at ``now``, with the context to act on its answer."""
    connectors = list(
        Connector.objects.filter(station__site=site, station__is_site_meter=False)
        .select_related("station", "station__circuit")
        .order_by("station__charge_point_id", "connector_id")
    )
    open_sessions = {
        s.connector_id: s for s in ChargingSession.objects.filter(connector__in=connectors, stopped_at__isnull=True)
    }
    limits_by_connector = {cl.connector_id: cl for cl in ConnectorLimit.objects.filter(connector__in=connectors)}
    failsafes = {f.station_id: f for f in StationFailsafe.objects.filter(station__site=site)}
    ratings = {c.pk: float(c.station.max_current_a) for c in connectors}
    online = [c for c in connectors if c.station.is_online]
    keep = max(1, int(settings.BALANCING_OVERDRAW_READINGS))
    recent = _recent_meter(online, ratings, now, keep)
    readings, last_draws, registers = recent.readings, recent.last_draws, recent.registers_wh
    phase_names = ["L1", "L2", "L3"][: site.phases]
    drawn_a = [0.0] * len(phase_names)
    for connector in online:
        latest = readings.get(connector.pk)
        if connector.pk in open_sessions and latest:
            for phase in connector.station.site_phases:
                if phase in phase_names:
                    drawn_a[phase_names.index(phase)] += latest[0].current_a
    chargers_a = [round(x, 2) for x in drawn_a]
    chargers_kw = round(sum(drawn_a) * float(site.voltage_v) / 1000, 3)
    # The chargers' draw lets the arbiter tell the building's load from a site meter's total.
    limits = site_limits(site, now, chargers_a=chargers_a, chargers_kw=chargers_kw)
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

    built = BuiltProblem(problem={}, evses={}, limits=limits, failsafes=failsafes)
    built.stations = list({c.station_id: c.station for c in online}.values())
    built.chargers_a = chargers_a
    evses: list[dict[str, Any]] = []
    for connector in connectors:
        station = connector.station
        session = open_sessions.get(connector.pk)
        limit = limits_by_connector.get(connector.pk) or ConnectorLimit(connector=connector)
        failsafe = failsafes.get(station.pk)
        parent = node_id(station.circuit)
        phases = [p for p in station.site_phases if p in phase_names]
        if not station.is_online:
            known_default = failsafe is not None and failsafe.confirmed_at is not None
            if session is not None or (limit.limit_a or 0) > 0 or known_default:
                # The engine books what it may draw on every node above it (``fixed_a``) and
                # warns when that alone overloads a limit; nothing is pushed to it.
                reserved, why = _reserved_a(station, limit, session, failsafe, now)
                built.reservations.append(Reservation(station, connector, reserved, why))
                evses.append(_fixed_evse(connector, parent, phases, reserved, float(station.max_current_a)))
            continue
        ratings_a = [station.max_current_a, connector.max_current_a or station.max_current_a]
        if connector.external_limit_a is not None:  # set outside the platform: never offer more
            ratings_a.append(connector.external_limit_a)
        max_a = float(min(ratings_a))
        if session is None:
            if connector.status not in CLOSED_STATUSES:
                # Headroom for a car plugging in: it starts at the station's default.
                default, _ = _default_a(station, failsafe)
                if failsafe_stale(site, station, failsafe, now):
                    default = max(default, failsafe_default_a(site))  # the new default is on its way
                default = min(default, float(station.max_current_a))
                evses.append(_fixed_evse(connector, parent, phases, default, max_a))
            continue
        ctx = EvseContext(station, connector, session, limit, readings.get(connector.pk, []))
        _allowance(ctx, failsafe)
        ctx.never_accepted = _never_accepted(ctx)
        if not ctx.never_accepted:
            _judge_overdraw(ctx)
        _judge_sleep(ctx, last_draws.get(connector.pk), now)

        active = connector.status in ACTIVE_STATUSES
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
        cap_a = PLAUSIBLE_SHARE * ctx.rating_a
        if ctx.overdraw:
            worst = max([r.current_a for r in ctx.overdraw_readings] or [float(limit.overdraw_a or 0)])
            ctx.fixed_a = min(ceil_step(worst), cap_a)
            ctx.fixed_why = f"draws {worst:.1f} A, offered {ctx.allowed_a:g} A"
        elif ctx.never_accepted:
            if ctx.draw_a is not None:
                ctx.fixed_a = min(ctx.draw_a, cap_a)
                ctx.fixed_why = f"never accepted a limit; draws {ctx.measured_a:.1f} A"
            else:
                ctx.fixed_a = ctx.allowed_a
                ctx.fixed_why = f"never accepted a limit; no reading, its {ctx.allowed_basis} {ctx.allowed_a:g} A"
        if ctx.fixed_a is not None:
            evse["fixed_a"] = ctx.fixed_a
            evse["max_a"] = max(max_a, ctx.fixed_a)
        ramped = (
            ctx.allowed_basis == "profile" and limit.confirmed_at is not None and now - limit.confirmed_at >= RAMP_UP
        )
        if ctx.measured_a is not None and ramped:
            evse["measured_a"] = round(ctx.measured_a, 2)
        if limit.limit_a is not None:
            evse["offered_a"] = float(limit.limit_a)
        this_session = limit.transaction_id == session.transaction_id
        # On/off spells belong to a session: a new car does not inherit the last one's pause.
        if limit.paused_since is not None and this_session:
            evse["paused_since"] = limit.paused_since.isoformat()
        if limit.charging_since is not None and this_session and not ctx.sleeping:
            evse["charging_since"] = limit.charging_since.isoformat()
        if ctx.sleeping:
            # Paused first when not all can charge, offered its minimum again when there is room.
            evse["priority"] = SLEEPING_PRIORITY
        elif limit.no_resume_count:
            evse["resumes_after_pause"] = False
        delivered_kwh = _session_kwh(session, registers.get(connector.pk))
        evse["session_kwh"] = round(delivered_kwh, 3)
        if session.ev_max_current_a is not None:
            evse["ev_max_a"] = float(session.ev_max_current_a)
        if session.energy_needed_kwh is not None and session.departure_at is not None:
            evse["energy_needed_kwh"] = round(max(0.0, float(session.energy_needed_kwh) - delivered_kwh), 3)
            evse["departure"] = session.departure_at.isoformat()
        evses.append(evse)
        built.evses[evse["id"]] = ctx

    built.problem = {
        "voltage_v": float(site.voltage_v),
        "nodes": list(nodes.values()),
        "evses": evses,
        "now": now.isoformat(),
    }
    if site.max_raise_a is not None:
        built.problem["max_raise_a"] = float(site.max_raise_a)
    if site.balancing_policy != Site.Policy.STATIC:
        _apply_policy(site, now, built, nodes[ROOT_ID])
    return built


def _apply_policy(site: Site, now: datetime, built: BuiltProblem, root: dict[str, Any]) -> None:
    """Let the site's policy (``balancing.policy``) set the cap in force and the planned cars' currents.

    The cap goes through the arbiter as the demand cap would (``limits_with_demand_cap``); a
    planned car gets its planned current as ``ev_max_a`` (rounded up to the step), or waits this
    run (``active`` false) when that is below the lowest pilot current. A policy that fails
    leaves the static limits in force: balancing goes on, and the run's record says why.
    """
    hook = policy_hook(site.balancing_policy)
    if hook is None:
        built.limits.policy = {"policy": site.balancing_policy, "note": "policy not available: static cap"}
        return
    try:
        decision = hook(PolicyInput(site, now, built.limits, built.problem["evses"]))
    except Exception as exc:
        logger.exception("balancing policy %s failed for site %s; static cap kept", site.balancing_policy, site.slug)
        built.limits.policy = {"policy": site.balancing_policy, "error": f"{type(exc).__name__}: {exc}"}
        return
    if decision.cap_kw is not None:
        cap = Candidate(decision.cap_source, limit_kw=decision.cap_kw, why=decision.cap_reason)
        built.limits = limits_with_demand_cap(site, built.limits, cap)
        root["limit_a"] = list(built.limits.limit_a)
        if built.limits.limit_kw is not None:
            root["limit_kw"] = built.limits.limit_kw
        else:
            root.pop("limit_kw", None)
    voltage = float(site.voltage_v)
    for evse in built.problem["evses"]:
        kw = decision.car_kw.get(evse["id"])
        if kw is None or not evse["phases"]:
            continue
        planned_a = ceil_step(kw * 1000.0 / (len(evse["phases"]) * voltage)) if kw > 0 else 0.0
        if planned_a < MIN_CURRENT_A:
            evse["active"] = False
        else:
            evse["ev_max_a"] = min(planned_a, float(evse.get("ev_max_a", planned_a)))
    built.limits.policy = decision.record


def _fixed_evse(connector: Connector, parent: str, phases: list[str], fixed_a: float, max_a: float) -> dict[str, Any]:
    return {
        "id": evse_id(connector),
        "node": parent,
        "phases": phases,
        "min_a": 0.0,
        "max_a": max(fixed_a, max_a),
        "step_a": STEP_A,
        "active": False,
        "fixed_a": fixed_a,
    }


def _session_kwh(session: ChargingSession, register_wh: float | None) -> float:
    if register_wh is not None and register_wh >= float(session.meter_start_wh):
        return (register_wh - float(session.meter_start_wh)) / 1000.0
    return float(session.energy_kwh or 0)
