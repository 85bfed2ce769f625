"""One balancing run of one site: build, solve, check, push (break before make), record.

Schema: tenant. Called by the ``balance_site`` task under the site's lock; see the README, "How
balancing works" and "Closed loop", and ``balancing.problem`` for what is booked as a fixed current:

- lowering profiles (and fail-safe defaults) go first; raises only after the lowerings they
  depend on were accepted. When a lowering is refused or unanswered, the site is solved again
  at once with that charger fixed at what it may draw (its old limit or its measured draw,
  whichever is higher) and the raises of the new solution that are still raises are sent: one
  charger's failed push holds back only the nodes it sits under;
- a charger that refused a lowering earlier keeps its booked value (or its draw, if higher)
  while it is asked again; one that never accepted a limit for its session is booked at its
  draw and asked again at most every ``REFUSED_RETRY``;
- a charger that draws more than its accepted limit (closed loop) keeps that limit in the books
  and is booked at its draw; its model's record may make us send the limit as a station-wide
  maximum profile too;
- an offline charger keeps its last profile (or its default): its current is reserved;
- a profile is sent only when the limit moves by a step, its validity runs low
  (``BALANCING_TX_RENEW_BEFORE_S``), or the transaction changed, so chargers are not flooded;
- the engine's answer is checked against every invariant before anything is sent;
- what chargers did is kept: overdraw books on ``ConnectorLimit``, site alerts (overdraw,
  refuses, never_accepted, sleeping_car) and the per-model compliance record;
- a run that finds the site as the last run left it is counted on that run instead of being
  stored again (``repeats``, ``last_repeated_at``): same inputs (``inputs_digest``, the engine
  input without its ``now``), same outcome (result, limits, site figures), and neither run
  pushed, failed or changed anything (books, alerts, escalations). A quiet site then keeps one
  row instead of one a minute, and every run that did something keeps its own.
"""

import copy
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import F, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from balancing.alerts import alert_clear, alert_raise, compliance_note
from balancing.dispatch import site_rebalance_request
from balancing.engine import Result, check, solve
from balancing.escalation import site_escalations_apply
from balancing.models import (
    BalancingRun,
    ChargerModelCompliance,
    ConnectorLimit,
    ProfilePush,
    Site,
    SiteAlert,
    StationFailsafe,
)
from balancing.problem import (
    FAILED_STATUSES,
    MIN_CURRENT_A,
    RESUME_GRACE,
    RESUMED_DRAW_A,
    STEP_A,
    BuiltProblem,
    EvseContext,
    build_problem,
    evse_id,
    failsafe_default_a,
    failsafe_stale,
)
from balancing.profiles import failsafe_profile, station_max_profile, tx_profile
from balancing.push import Pusher, PushRequest
from balancing.resync import station_resync_request
from chargepoint.models import ChargingStation, Connector
from evplatform.logs import bind

logger = logging.getLogger(__name__)

# A charger that never accepted a limit is asked again at most this often (it may flood otherwise).
REFUSED_RETRY = timedelta(seconds=30)
# Answers in which the charger itself said no: asking again at once would only flood it, and they
# count against its model. A push that never reached it (Offline, Timeout) says nothing about the
# model and is tried again at the next run.
CHARGER_REFUSALS = frozenset({"Rejected", "CallError", "NotSupported", "NotImplemented"})
# This many refused profiles in a row on one connector raise a "refuses" alert.
REFUSALS_FOR_ALERT = 3
# A model with this many accepted-but-ignored limits gets its limits as a station-wide max too.
IGNORED_FOR_STATION_MAX = 2
STATION_MAX = "station-max"


def _tx_validity() -> timedelta:
    return timedelta(seconds=settings.BALANCING_TX_PROFILE_VALIDITY_S)


def _renew_before() -> timedelta:
    return timedelta(seconds=settings.BALANCING_TX_RENEW_BEFORE_S)


@dataclass
class PlannedPush:
    kind: str
    station: ChargingStation
    connector: Connector | None
    old_limit_a: float | None
    new_limit_a: float
    request: PushRequest
    context: EvseContext | None = None
    valid_to: datetime | None = None
    active: bool = True  # the car wants energy: a 0 A profile is then a pause, not idle
    retry: bool = False  # asked again of a charger the plan does not count on
    purpose: str = "tx"  # "tx", "failsafe" or STATION_MAX


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _digest(problem: dict[str, Any]) -> str:
    """SHA-256 of the engine input without ``now``: equal for two runs of an unchanged site.

    ``now`` is the only part of the input that moves by itself; what it changes in the answer
    (minimum on/off times, laxity before a departure) shows in the result, which a repeat must
    match too (``_outcome``). Everything else the site does (draws, energy, limits, the meter,
    sessions, schedules) is in the input as values.
    """
    timeless = {key: value for key, value in problem.items() if key != "now"}
    return hashlib.sha256(_canonical(timeless).encode()).hexdigest()


def _outcome(run: BalancingRun) -> Any:
    """What a run concluded, as stored (JSON types): two runs that repeat each other must agree on all of it.

    Compared with ``==``, so a figure the database gives back as 0.0 equals the run's 0. The only
    part left out is when the site meter reading it used was taken (a new reading with the same
    figures changes nothing); the reading's figures are in.
    """
    limits = dict(run.limits or {})
    if isinstance(limits.get("meter"), dict):
        limits["meter"] = {k: v for k, v in limits["meter"].items() if k != "measured_at"}
    return json.loads(
        _canonical(
            {
                "result": run.result,
                "limits": limits,
                "figures": [
                    run.measured_kw,
                    run.allocated_kw,
                    run.limit_kw,
                    run.unmanaged_kw,
                    run.phase_measured_a,
                    run.phase_allocated_a,
                    run.phase_limit_a,
                ],
            }
        )
    )


def _repeat_of(site: Site, run: BalancingRun) -> BalancingRun | None:
    """The site's last run if ``run`` (unsaved: it pushed nothing) repeats it, counted there; else None.

    A repeat has the last run's inputs digest and outcome, and both ran clean (status OK, no
    error, no pushes). The caller has already ruled out runs that changed books or alerts.
    """
    if run.status != BalancingRun.Status.OK or run.error:
        return None
    last = BalancingRun.objects.filter(site=site).defer("problem").order_by("-started_at", "-pk").first()
    if (
        last is None
        or last.finished_at is None
        or last.status != BalancingRun.Status.OK
        or last.error
        or last.inputs_digest != run.inputs_digest
        or last.started_at > run.started_at
        or last.pushes.exists()
        or _outcome(last) != _outcome(run)
    ):
        return None
    BalancingRun.objects.filter(pk=last.pk).update(repeats=F("repeats") + 1, last_repeated_at=run.started_at)
    last.refresh_from_db(fields=["repeats", "last_repeated_at"])
    return last


def _plan(site: Site, built: BuiltProblem, allocations: dict[str, float], now: datetime) -> list[PlannedPush]:
    plans = _failsafe_plans(site, built, now)
    active_ids = {e["id"]: bool(e["active"]) for e in built.problem["evses"]}
    for key, ctx in built.evses.items():
        session = ctx.session
        if session is None:
            continue
        old = ctx.allowed_a
        same_tx = ctx.allowed_basis == "profile"
        renew_due = ctx.limit.valid_until is None or ctx.limit.valid_until - now < _renew_before()
        active = active_ids.get(key, False)
        if ctx.never_accepted:
            # Booked at its draw; asked again now and then for what it may safely take.
            requested = ctx.limit.requested_at
            said_no = ctx.limit.last_status in CHARGER_REFUSALS  # not just unreachable: then at once
            if requested is None or not said_no or now - requested >= REFUSED_RETRY:
                fixed = ctx.fixed_a or 0.0
                target = min(fixed, float(ctx.station.max_current_a)) if fixed >= MIN_CURRENT_A else 0.0
                plans.append(_tx_push(ctx, kind=_kind(old, target), old=old, target=target, now=now, active=active))
                plans[-1].retry = True
            continue
        if ctx.overdraw:
            # It ignores what it accepted: the books keep that limit, renewed while it lasts.
            if same_tx and renew_due:
                plans.append(_tx_push(ctx, kind="renew", old=old, target=old, now=now, active=active))
            continue
        target = allocations[key]
        if same_tx and abs(target - old) < STEP_A and not renew_due:
            continue
        plans.append(_tx_push(ctx, kind=_kind(old, target), old=old, target=target, now=now, active=active))
    return plans


def _failsafe_plans(site: Site, built: BuiltProblem, now: datetime) -> list[PlannedPush]:
    """The default profile for every online station whose default is stale (idle ones too).

    A station that refused it is asked again at most every ``REFUSED_RETRY``.
    """
    default_a = failsafe_default_a(site)
    stale = [s for s in built.stations if failsafe_stale(site, s, built.failsafes.get(s.pk), now)]
    refused = [
        s.pk for s in stale if (f := built.failsafes.get(s.pk)) is not None and f.last_status in CHARGER_REFUSALS
    ]
    tried = set()
    if refused:
        tried = set(
            ProfilePush.objects.filter(
                station_id__in=refused, kind=ProfilePush.Kind.FAILSAFE, run__started_at__gt=now - REFUSED_RETRY
            ).values_list("station_id", flat=True)
        )
    plans = []
    for station in stale:
        if station.pk in tried:
            continue
        failsafe = built.failsafes.get(station.pk)
        payload = failsafe_profile(
            ocpp_version=station.ocpp_version, limit_a=default_a, number_phases=len(station.site_phases)
        )
        plans.append(
            PlannedPush(
                "failsafe",
                station,
                None,
                float(failsafe.limit_a) if failsafe else None,
                default_a,
                PushRequest(station.charge_point_id, "SetChargingProfile", payload),
                purpose="failsafe",
            )
        )
    return plans


def _kind(old: float, target: float) -> str:
    return "lower" if target < old else "raise" if target > old else "renew"


def _tx_push(ctx: EvseContext, *, kind: str, old: float, target: float, now: datetime, active: bool) -> PlannedPush:
    """A TxProfile for the EVSE's running transaction, limited to ``target`` A."""
    if ctx.session is None:
        raise ValueError(f"a {kind} push needs the EVSE's session")
    valid_to = now + _tx_validity()
    payload = tx_profile(
        ocpp_version=ctx.station.ocpp_version,
        connector_id=ctx.connector.connector_id,
        transaction_id=ctx.session.transaction_id,
        limit_a=target,
        number_phases=len(ctx.station.site_phases),
        now=now,
        valid_to=valid_to,
    )
    request = PushRequest(ctx.station.charge_point_id, "SetChargingProfile", payload)
    return PlannedPush(kind, ctx.station, ctx.connector, old, target, request, ctx, valid_to, active=active)


LIMIT_FIELDS = [
    "limit_a",
    "valid_until",
    "transaction_id",
    "confirmed_at",
    "requested_a",
    "requested_at",
    "last_status",
    "paused_since",
    "charging_since",
    "resumed_at",
    "accepted_at",
]
LOOP_FIELDS = ["overdraw_count", "overdraw_since", "overdraw_a", "last_reading_at", "accepted_at"]
# The closed-loop books whose change is an event of the run (an overdraw that began or ended, a
# reaction measured): such a run is kept. ``last_reading_at`` only follows the meter.
EVENT_FIELDS = [name for name in LOOP_FIELDS if name != "last_reading_at"]


def _send(
    run: BalancingRun, plans: list[PlannedPush], pusher: Pusher, now: datetime, failsafes: dict[int, StationFailsafe]
) -> list[bool]:
    """Send one batch, record every push and its answer, update the books (in bulk) and each model's record.

    ``failsafes``: the stations' default rows as the run read them (``BuiltProblem.failsafes``).
    """
    if not plans:
        return []
    if run.pk is None:  # stored before anything leaves: a run that pushes is always on record
        run.save()
    sent_at = timezone.now()
    answers = pusher.send_many([p.request for p in plans])
    answered_at = timezone.now()
    ProfilePush.objects.bulk_create(
        [
            ProfilePush(
                run=run,
                station=plan.station,
                connector=plan.connector,
                kind=plan.kind,
                old_limit_a=None if plan.old_limit_a is None else Decimal(str(plan.old_limit_a)),
                new_limit_a=Decimal(str(plan.new_limit_a)),
                payload=plan.request.payload,
                status=answer.status,
                error=answer.error,
                sent_at=sent_at,
                answered_at=answered_at,
            )
            for plan, answer in zip(plans, answers, strict=True)
        ]
    )
    new_limits: list[ConnectorLimit] = []
    changed_limits: list[ConnectorLimit] = []
    new_defaults: list[StationFailsafe] = []
    # Answers per charger model (one compliance record each, however many of its stations answered).
    accepted: Counter[tuple[str, str, str]] = Counter()
    refused: Counter[tuple[str, str, str]] = Counter()
    models: dict[tuple[str, str, str], ChargingStation] = {}
    refused_defaults: dict[str, list[int]] = {}  # by answer
    for plan, answer in zip(plans, answers, strict=True):
        model = (plan.station.vendor, plan.station.model, plan.station.firmware_version)
        models.setdefault(model, plan.station)
        if answer.accepted:
            accepted[model] += 1
        elif answer.status in CHARGER_REFUSALS:
            refused[model] += 1
        if plan.purpose == "failsafe":
            known = (f := failsafes.get(plan.station.pk)) is not None and f.confirmed_at is not None
            if not answer.accepted and known:
                # The charger keeps the default it confirmed.
                refused_defaults.setdefault(answer.status, []).append(plan.station.pk)
                continue
            new_defaults.append(
                StationFailsafe(
                    station=plan.station,
                    limit_a=Decimal(str(plan.new_limit_a)),
                    confirmed_at=now if answer.accepted else None,
                    last_status=answer.status,
                    booted_at=plan.station.last_boot_at,
                )
            )
            continue
        if plan.purpose == STATION_MAX:
            continue
        limit = _book(plan, answer.accepted, answer.status, now)
        (changed_limits if limit.pk else new_limits).append(limit)
    ConnectorLimit.objects.bulk_create(new_limits)
    ConnectorLimit.objects.bulk_update(changed_limits, LIMIT_FIELDS)
    StationFailsafe.objects.bulk_create(
        new_defaults,
        update_conflicts=True,
        unique_fields=["station"],
        update_fields=["limit_a", "confirmed_at", "last_status", "booted_at"],
    )
    for status, pks in refused_defaults.items():
        StationFailsafe.objects.filter(station_id__in=pks).update(last_status=status)
    for model, station in models.items():
        if accepted[model] or refused[model]:
            compliance_note(station=station, accepted=accepted[model], rejected=refused[model])
    # A profile that got no answer may or may not be in force: ask the charger what it applies.
    for pk in sorted({p.station.pk for p, a in zip(plans, answers, strict=True) if a.status == "Timeout"}):
        station_resync_request(station_id=pk, reason="no answer to a charging profile")
    return [answer.accepted for answer in answers]


def _book(plan: PlannedPush, accepted: bool, status: str, now: datetime) -> ConnectorLimit:
    """The books after one answer: only an accepted profile changes what we plan with."""
    if plan.context is None or plan.context.session is None:
        raise ValueError(f"a {plan.kind} push needs the EVSE's session")
    limit = plan.context.limit
    limit.requested_a = Decimal(str(plan.new_limit_a))
    limit.requested_at = now
    limit.last_status = status
    if accepted:
        new_tx = limit.transaction_id != plan.context.session.transaction_id
        if new_tx:
            # A new session starts with a clean slate for rotation and resume tracking.
            limit.paused_since = limit.charging_since = limit.resumed_at = None
        was_paused = limit.limit_a is not None and limit.limit_a == 0 and limit.paused_since is not None
        before = plan.context.allowed_a
        draw = plan.context.measured_a
        if plan.new_limit_a < before and draw is not None and draw > plan.new_limit_a:
            limit.accepted_at = now  # a lowering the draw must follow: its reaction time is measured
        elif new_tx or plan.new_limit_a > before:
            limit.accepted_at = None
        same_limit = not new_tx and limit.limit_a == Decimal(str(plan.new_limit_a)) and limit.confirmed_at is not None
        limit.limit_a = Decimal(str(plan.new_limit_a))
        limit.valid_until = plan.valid_to
        limit.transaction_id = plan.context.session.transaction_id
        if not same_limit:
            # A renewal of the same limit changes nothing the car sees: the ramp-up and reaction
            # times keep counting from when this limit was first accepted.
            limit.confirmed_at = now
        if plan.new_limit_a == 0:
            # Only a car that wanted energy was paused; an idle connector is not waiting its turn.
            limit.paused_since = (limit.paused_since or now) if plan.active else None
            limit.charging_since = None
        else:
            if was_paused:
                limit.resumed_at = now
            limit.paused_since = None
            limit.charging_since = limit.charging_since or now
    return limit


def _track_resumes(built: BuiltProblem, now: datetime) -> bool:
    """A car offered current after a pause that still draws nothing is flagged (pausing avoids it).

    Returns whether any connector's books changed.
    """
    changed = False
    for ctx in built.evses.values():
        limit = ctx.limit
        if limit.pk is None or limit.resumed_at is None or now - limit.resumed_at < RESUME_GRACE:
            continue
        if ctx.measured_a is not None and ctx.measured_a >= RESUMED_DRAW_A:
            limit.resumed_at = None
        elif ctx.connector.status == Connector.Status.SUSPENDED_EV or ctx.sleeping:
            limit.no_resume_count += 1
            limit.resumed_at = None
            logger.warning("car on %s did not resume after a pause", ctx.connector)
        else:
            continue
        limit.save(update_fields=["resumed_at", "no_resume_count"])
        changed = True
    return changed


def _stuck(built: BuiltProblem) -> list[EvseContext]:
    """EVSEs whose last lowering was not accepted: still at their booked value (not already fixed)."""
    stuck = []
    for ctx in built.evses.values():
        limit = ctx.limit
        if (
            ctx.fixed_a is None
            and limit.last_status in FAILED_STATUSES
            and limit.requested_a is not None
            and limit.limit_a is not None
            and limit.requested_a < limit.limit_a
            and ctx.allowed_basis == "profile"
        ):
            stuck.append(ctx)
    return stuck


def _pin(built: BuiltProblem, pinned: Iterable[EvseContext], why: str) -> None:
    """Plan around chargers that cannot take a new limit now: fixed at what they may draw."""
    ids = {evse_id(ctx.connector): ctx for ctx in pinned}
    for evse in built.problem["evses"]:
        ctx = ids.get(evse["id"])
        if ctx is not None:
            ctx.fixed_a, ctx.fixed_why = ctx.may_draw_a, why
            evse["fixed_a"] = ctx.fixed_a
            evse["max_a"] = max(float(evse["max_a"]), ctx.fixed_a)


def _retries(stuck: list[EvseContext], now: datetime) -> list[PlannedPush]:
    """Ask again for the lowering a charger refused; the plan does not count on it."""
    plans = []
    for ctx in stuck:
        plan = _tx_push(
            ctx, kind="lower", old=ctx.allowed_a, target=float(ctx.limit.requested_a or 0), now=now, active=True
        )
        plan.retry = True
        plans.append(plan)
    return plans


def _solve(problem: dict[str, Any]) -> Result:
    result = solve(problem)
    violations = check(problem, result)
    if violations:
        raise RuntimeError("engine result violates limits: " + "; ".join(violations[:5]))
    return result


def _resolve_raises(
    built: BuiltProblem, first: list[PlannedPush], first_ok: list[bool], raises: list[PlannedPush], now: datetime
) -> tuple[list[PlannedPush], dict[str, float]]:
    """After refused lowerings: solve again with everything but the raises fixed where it now is.

    A refused lowering is fixed at what its charger may draw (old limit or draw, whichever is
    higher), an accepted one at its new limit, the rest at their books; only the would-be raises
    are shared out again. One that would now have to go down is fixed at its old value and the
    site solved again, so every raise sent fits next to what the others really hold.
    """
    problem = copy.deepcopy(built.problem)
    evses = {e["id"]: e for e in problem["evses"]}
    answered = {
        evse_id(p.context.connector): (p, ok) for p, ok in zip(first, first_ok, strict=True) if p.context is not None
    }
    free = {evse_id(p.context.connector): p for p in raises if p.context is not None}
    for key, ctx in built.evses.items():
        evse = evses[key]
        if "fixed_a" in evse or key in free:
            continue
        if key in answered:
            plan, ok = answered[key]
            fixed = plan.new_limit_a if ok else ctx.may_draw_a
        else:
            fixed = ctx.allowed_a
        evse["fixed_a"] = fixed
        evse["max_a"] = max(float(evse["max_a"]), fixed)
    allocations: dict[str, float] = {}
    for _ in range(len(free) + 1):
        allocations = {k: float(v) for k, v in _solve(problem)["allocations_a"].items()}
        down = [key for key, plan in free.items() if allocations[key] < (plan.old_limit_a or 0.0)]
        if not down:
            break
        for key in down:
            old = free.pop(key).old_limit_a or 0.0
            evses[key]["fixed_a"] = old
            evses[key]["max_a"] = max(float(evses[key]["max_a"]), old)
    replanned = []
    for key, plan in free.items():
        target = allocations[key]
        if plan.context is not None and target > (plan.old_limit_a or 0.0):
            replanned.append(
                _tx_push(
                    plan.context, kind="raise", old=plan.old_limit_a or 0.0, target=target, now=now, active=plan.active
                )
            )
    return replanned, allocations


def _station_max_models(built: BuiltProblem) -> set[tuple[str, str, str]]:
    """Models (vendor, model, firmware) of the site's stations whose limits go as a station-wide max too."""
    keys = {(c.station.vendor, c.station.model, c.station.firmware_version) for c in built.evses.values()}
    if not keys:
        return set()
    # The flag alone decides: the run sets it when a model has ignored enough limits, and an
    # operator who clears it in the admin is heard (until the model ignores a limit again).
    rows = ChargerModelCompliance.objects.filter(use_station_max=True).values_list(
        "vendor", "model", "firmware_version"
    )
    return {row for row in rows if row in keys}


def _station_max_last(stations: Iterable[ChargingStation]) -> dict[int, float]:
    """The station-wide max each station last accepted (A)."""
    rows = (
        ProfilePush.objects.filter(station__in=list(stations), connector__isnull=True, status="Accepted")
        .exclude(kind=ProfilePush.Kind.FAILSAFE)
        .order_by("station_id", "-sent_at", "-pk")
        .distinct("station_id")
        .values_list("station_id", "new_limit_a")
    )
    return {station_id: float(limit) for station_id, limit in rows}


def _station_max_plans(
    built: BuiltProblem, models: set[tuple[str, str, str]], values: dict[str, float], *, lowering: bool
) -> list[PlannedPush]:
    """Station-wide max profiles for stations of models that ignore TxProfiles.

    The limit is the sum of what the station's connectors are meant to draw (per phase): their
    planned limit, or for one that ignores its limit the limit it was given. ``lowering`` picks
    the ones below the last accepted value (first batch) or above it (with the raises).
    """
    stations: dict[int, ChargingStation] = {}
    wanted: dict[int, float] = {}
    for key, ctx in built.evses.items():
        station = ctx.station
        if (station.vendor, station.model, station.firmware_version) not in models:
            continue
        stations[station.pk] = station
        meant = ctx.allowed_a if ctx.overdraw or ctx.never_accepted else values.get(key, ctx.allowed_a)
        wanted[station.pk] = wanted.get(station.pk, 0.0) + meant
    if not stations:
        return []
    last = _station_max_last(stations.values())
    plans = []
    for pk, station in stations.items():
        target = min(wanted[pk], float(station.max_current_a))
        before = last.get(pk)
        if before is not None and abs(target - before) < STEP_A:
            continue
        if lowering != (before is None or target < before):
            continue
        payload = station_max_profile(
            ocpp_version=station.ocpp_version, limit_a=target, number_phases=len(station.site_phases)
        )
        plans.append(
            PlannedPush(
                "lower" if before is None or target < before else "raise",
                station,
                None,
                before,
                target,
                PushRequest(station.charge_point_id, "SetChargingProfile", payload),
                purpose=STATION_MAX,
            )
        )
    return plans


def _charger(ctx: EvseContext) -> str:
    return _charger_of(ctx.station)


def _charger_of(station: ChargingStation) -> str:
    """`` (Vendor Model fw 1.2)`` from its BootNotification, or nothing when it said nothing."""
    made = " ".join(x for x in (station.vendor, station.model) if x)
    firmware = f"fw {station.firmware_version}" if station.firmware_version else ""
    text = " ".join(x for x in (made, firmware) if x)
    return f" ({text})" if text else ""


def _refusal_streaks(contexts: list[EvseContext]) -> dict[int, tuple[int, str]]:
    """Connectors whose last ``REFUSALS_FOR_ALERT`` TxProfiles were all refused, with the last answer.

    One query for all of them (a row number over each connector's pushes, newest first).
    """
    if not contexts:
        return {}
    rows = (
        ProfilePush.objects.filter(connector__in={ctx.connector.pk for ctx in contexts})
        .annotate(
            n=Window(RowNumber(), partition_by=[F("connector_id")], order_by=[F("sent_at").desc(), F("pk").desc()])
        )
        .filter(n__lte=REFUSALS_FOR_ALERT)
        .order_by("connector_id", "n")
        .values_list("connector_id", "status")
    )
    answers: dict[int, list[str]] = {}
    for connector_id, status in rows:
        answers.setdefault(connector_id, []).append(status)
    # Offline (the platform could not reach it) is not the charger's doing; a Timeout is.
    return {
        pk: (len(last), last[0])
        for pk, last in answers.items()
        if len(last) == REFUSALS_FOR_ALERT and all(a in CHARGER_REFUSALS or a == "Timeout" for a in last)
    }


def _open_alerts(site: Site) -> list[SiteAlert]:
    """The site's open alerts at the start of the run's bookkeeping, read once for all of it."""
    return list(
        SiteAlert.objects.filter(site=site, cleared_at__isnull=True).select_related("station", "connector__station")
    )


def _closed_loop(
    site: Site, built: BuiltProblem, pushed: list[PlannedPush], now: datetime, open_rows: list[SiteAlert]
) -> tuple[list[str], bool]:
    """Keep the overdraw books, the alerts and the model records in step with what chargers did.

    ``open_rows``: the site's open alerts (``_open_alerts``). Returns the alert lines of this run
    (for the run's record) and whether an event changed the books (``EVENT_FIELDS``; the model
    records change only with them).
    """
    open_alerts = {(a.connector_id, a.kind) for a in open_rows if a.connector_id is not None}
    refused_now = [
        p.context for p in pushed if p.context is not None and p.context.limit.last_status in FAILED_STATUSES
    ]
    streaks = _refusal_streaks(refused_now)
    lines: list[str] = []
    changed: list[ConnectorLimit] = []
    events = False

    def alert(ctx: EvseContext, kind: str, holds: bool, detail: str = "", why: str = "cleared") -> None:
        if holds:
            alert_raise(site=site, kind=kind, detail=detail, now=now, station=ctx.station, connector=ctx.connector)
            lines.append(f"{kind}: {detail}")
        elif (ctx.connector.pk, kind) in open_alerts:
            alert_clear(site=site, kind=kind, now=now, station=ctx.station, connector=ctx.connector, why=why)

    for ctx in built.evses.values():
        limit = ctx.limit
        before = [getattr(limit, name) for name in LOOP_FIELDS]
        before_events = [getattr(limit, name) for name in EVENT_FIELDS]
        latest = ctx.readings[0] if ctx.readings else None
        if ctx.overdraw:
            streak = ctx.overdraw_readings
            fresh = [r for r in streak if limit.last_reading_at is None or r.at > limit.last_reading_at]
            if ctx.overdraw_began:
                limit.overdraw_count, limit.overdraw_since = len(streak), streak[-1].at
            else:
                limit.overdraw_count = min(32767, limit.overdraw_count + len(fresh))
            if streak:
                limit.overdraw_a = Decimal(str(round(streak[0].current_a, 1)))
            if ctx.overdraw_began and ctx.allowed_basis == "profile":
                record = compliance_note(station=ctx.station, ignored=1)
                if record.accepted_ignored >= IGNORED_FOR_STATION_MAX and not record.use_station_max:
                    ChargerModelCompliance.objects.filter(pk=record.pk).update(use_station_max=True)
                limit.accepted_at = None  # ignored, not a slow reaction
        elif latest is not None and latest.current_a <= ctx.ceiling_a:
            limit.overdraw_count, limit.overdraw_since, limit.overdraw_a = 0, None, None
            if limit.accepted_at is not None and latest.at > limit.accepted_at and ctx.allowed_basis == "profile":
                after = [r.at for r in ctx.readings if r.at > limit.accepted_at and r.current_a <= ctx.ceiling_a]
                followed = min(after, default=latest.at)
                compliance_note(station=ctx.station, reaction_s=(followed - limit.accepted_at).total_seconds())
                limit.accepted_at = None
        elif ctx.overdraw_readings:
            limit.overdraw_count = len(ctx.overdraw_readings)
        if latest is not None:
            limit.last_reading_at = latest.at
        if [getattr(limit, name) for name in LOOP_FIELDS] != before:
            changed.append(limit)
        events = events or [getattr(limit, name) for name in EVENT_FIELDS] != before_events

        label = evse_id(ctx.connector)
        alert(
            ctx,
            SiteAlert.Kind.OVERDRAW,
            ctx.overdraw,
            f"{label} draws {float(limit.overdraw_a or 0):.1f} A, offered {ctx.allowed_a:g} A{_charger(ctx)}",
            why="draws within its limit again",
        )
        accepted_now = ctx.session is not None and limit.transaction_id == ctx.session.transaction_id
        alert(
            ctx,
            SiteAlert.Kind.NEVER_ACCEPTED,
            ctx.never_accepted and not (accepted_now and limit.limit_a is not None),
            f"{label} never accepted a limit for transaction {ctx.session.transaction_id if ctx.session else ''} "
            f"(last answer {limit.last_status}); planned at {ctx.fixed_a or 0:g} A{_charger(ctx)}",
            why="accepted a limit",
        )
        streak_info = streaks.get(ctx.connector.pk)
        if streak_info is not None:
            count, status = streak_info
            detail = f"{label} answered {status} to {count} profiles in a row{_charger(ctx)}"
            alert(ctx, SiteAlert.Kind.REFUSES, True, detail)
        elif limit.last_status == "Accepted":
            alert(ctx, SiteAlert.Kind.REFUSES, False, why="accepted a profile")
        drawing = latest is not None and latest.current_a >= RESUMED_DRAW_A
        if ctx.sleeping:
            alert(
                ctx,
                SiteAlert.Kind.SLEEPING_CAR,
                True,
                f"car on {label} draws {ctx.measured_a or 0:.1f} A of {ctx.allowed_a:g} A offered for over "
                f"{int(RESUME_GRACE.total_seconds())} s; it is paused first while others wait{_charger(ctx)}",
            )
        elif drawing:
            alert(ctx, SiteAlert.Kind.SLEEPING_CAR, False, why="the car draws again")

    # Alerts of connectors whose session ended (or that left the plan) end with it.
    in_plan = {ctx.connector.pk for ctx in built.evses.values()}
    kinds = {SiteAlert.Kind.OVERDRAW, SiteAlert.Kind.NEVER_ACCEPTED, SiteAlert.Kind.SLEEPING_CAR}
    for row in open_rows:
        if row.connector is not None and row.connector.pk not in in_plan and row.kind in kinds:
            alert_clear(site=site, kind=row.kind, now=now, connector=row.connector, why="session ended")

    # The arbiter says when the site meter shows the site over a limit (``SiteLimits.site_over_limit``).
    if built.limits.site_over_limit:
        detail = built.limits.site_over_limit_detail or "site meter over the limit"
        alert_raise(site=site, kind=SiteAlert.Kind.SITE_OVER_LIMIT, detail=detail, now=now)
        lines.append(f"{SiteAlert.Kind.SITE_OVER_LIMIT}: {detail}")
    elif any(a.kind == SiteAlert.Kind.SITE_OVER_LIMIT and a.station_id is None for a in open_rows):
        alert_clear(site=site, kind=SiteAlert.Kind.SITE_OVER_LIMIT, now=now, why="site meter within the limits")
    ConnectorLimit.objects.bulk_update([limit for limit in changed if limit.pk is not None], LOOP_FIELDS)
    ConnectorLimit.objects.bulk_create([limit for limit in changed if limit.pk is None])
    return lines, events


def _offline_alerts(site: Site, built: BuiltProblem, now: datetime, open_rows: list[SiteAlert]) -> list[str]:
    """An offline charger the plan must reserve current for is an alert until it is back.

    ``open_rows``: the site's open alerts (``_open_alerts``).
    """
    lines = []
    reserved: dict[int, list[str]] = {}
    stations: dict[int, ChargingStation] = {}
    for reservation in built.reservations:
        stations[reservation.station.pk] = reservation.station
        reserved.setdefault(reservation.station.pk, []).append(
            f"{evse_id(reservation.connector)} {reservation.limit_a:g} A ({reservation.why})"
        )
    for pk, parts in reserved.items():
        station = stations[pk]
        seen = f"last heard {station.last_seen_at:%Y-%m-%d %H:%M:%S} UTC" if station.last_seen_at else "never heard"
        detail = f"{station.charge_point_id} is offline ({seen}){_charger_of(station)}; reserved: " + "; ".join(parts)
        alert_raise(site=site, kind=SiteAlert.Kind.OFFLINE, detail=detail, now=now, station=station)
        lines.append(f"{SiteAlert.Kind.OFFLINE}: {detail}")
    back = [a for a in open_rows if a.kind == SiteAlert.Kind.OFFLINE and a.station_id not in reserved]
    for alert in back:
        why = "online again, or nothing is reserved for it"
        alert_clear(site=site, kind=SiteAlert.Kind.OFFLINE, now=now, station=alert.station, why=why)
    return lines


def _summarise(run: BalancingRun, built: BuiltProblem, result: Result, site: Site) -> None:
    """Site-level totals of the run: drawn, allocated and allowed, in kW and per phase."""
    phases = ["L1", "L2", "L3"][: site.phases]
    voltage = float(site.voltage_v)
    measured = list(built.chargers_a) or [0.0] * len(phases)
    root = next(n for n in built.problem["nodes"] if n["parent"] is None)
    allocated = list(result["node_load_a"].get(root["id"], [0.0] * len(phases)))
    run.phase_measured_a = [round(x, 2) for x in measured]
    run.phase_allocated_a = [round(float(x), 2) for x in allocated]
    run.phase_limit_a = [round(x, 2) for x in built.limits.limit_a]
    run.measured_kw = round(sum(measured) * voltage / 1000, 3)
    # Offline and non-compliant chargers' currents are in the engine's loads (they are fixed EVSEs).
    run.allocated_kw = round(float(result["node_load_kw"].get(root["id"], 0.0)), 3)
    run.limit_kw = built.limits.limit_kw
    # Unmanaged, every active car would take what it accepts (or the charger's rating).
    run.unmanaged_kw = round(
        sum(
            min(float(e["max_a"]), float(e.get("ev_max_a", e["max_a"]))) * len(e["phases"]) * voltage / 1000
            for e in built.problem["evses"]
            if e["active"]
        ),
        3,
    )


def _failed(run: BalancingRun, exc: Exception) -> None:
    """Store the run as failed, with the error (it never counts as a repeat)."""
    run.status = BalancingRun.Status.FAILED
    run.error = f"{type(exc).__name__}: {exc}"
    run.finished_at = timezone.now()
    run.save()


def site_balance_run(*, site: Site, reason: str, pusher: Pusher, now: datetime | None = None) -> BalancingRun:
    """Balance one site now and push the result. The caller holds the site's lock.

    Returns the stored run: this one, or the site's last run when this one repeated it (then
    counted in its ``repeats``; see the module docstring).
    """
    now = now or timezone.now()
    bind(site=site.slug)  # on every log line of the task from here on
    built = build_problem(site, now)
    resumes_noted = _track_resumes(built, now)
    stuck = _stuck(built)
    _pin(built, stuck, "refused a lowering; planned at what it may draw")
    # Saved before its first push (``_send``), or at the end unless it repeats the last run.
    run = BalancingRun(
        site=site,
        reason=reason[:100],
        started_at=now,
        inputs_digest=_digest(built.problem),
        problem=built.problem,
        limits={
            **built.limits.as_record(),
            "reservations": [
                {"evse": evse_id(r.connector), "limit_a": r.limit_a, "why": r.why} for r in built.reservations
            ],
            "stuck": [evse_id(c.connector) for c in stuck],
            "fixed": {key: ctx.fixed_why for key, ctx in built.evses.items() if ctx.fixed_a is not None},
        },
    )
    started = time.perf_counter()
    try:
        result = _solve(built.problem)
        run.solve_ms = (time.perf_counter() - started) * 1000
        run.result = result
    except Exception as exc:
        _failed(run, exc)
        logger.exception("balancing run for site %s failed", site.slug)
        raise
    try:
        changed = _act(run, site, built, stuck, result, pusher, now)
    except Exception as exc:
        _failed(run, exc)
        raise
    changed = changed or resumes_noted
    all_ok = run.status == BalancingRun.Status.OK
    run.finished_at = timezone.now()
    if run.pk is None and all_ok and not changed:
        repeated = _repeat_of(site, run)
        if repeated is not None:
            return repeated
    run.save()
    return run


def _act(
    run: BalancingRun,
    site: Site,
    built: BuiltProblem,
    stuck: list[EvseContext],
    result: Result,
    pusher: Pusher,
    now: datetime,
) -> bool:
    """Plan and push the solved run, keep the books and alerts; sets the run's figures and status.

    Returns whether the run changed anything besides pushing (alerts opened or cleared, closed-loop
    events, escalations): such a run is kept even when nothing was pushed.
    """
    _summarise(run, built, result, site)
    allocations = {k: float(v) for k, v in result["allocations_a"].items()}
    stuck_ids = {id(ctx) for ctx in stuck}
    plans = [p for p in _plan(site, built, allocations, now) if id(p.context) not in stuck_ids]
    plans += _retries(stuck, now)
    models = _station_max_models(built)
    first: list[PlannedPush] = []
    raises: list[PlannedPush] = []
    for plan in plans:
        goes_first = plan.kind in ("lower", "renew") or plan.purpose == "failsafe" or plan.retry
        (first if goes_first else raises).append(plan)
    first += _station_max_plans(built, models, allocations, lowering=True)
    first_ok = _send(run, first, pusher, now, built.failsafes)
    failed = [p for p, ok in zip(first, first_ok, strict=True) if not ok and p.purpose == "tx" and not p.retry]
    if failed:
        try:
            raises, allocations = _resolve_raises(built, first, first_ok, raises, now)
        except Exception:
            logger.exception("re-solve after refused lowerings failed for site %s; raises held back", site.slug)
            raises = []
        run.limits["resolved_after_refusal"] = {
            "refused": [evse_id(p.connector) for p in failed if p.connector is not None],
            "raises": {evse_id(p.connector): p.new_limit_a for p in raises if p.connector is not None},
        }
        run.error = f"{len(failed)} lowering(s) not accepted; raises re-planned around them"
    final = dict(allocations)
    final.update({evse_id(p.connector): p.new_limit_a for p in raises if p.connector is not None})
    raises += _station_max_plans(built, models, final, lowering=False)
    raises_ok = _send(run, raises, pusher, now, built.failsafes)

    open_rows = _open_alerts(site)
    loop_lines, loop_events = _closed_loop(site, built, first + raises, now, open_rows)
    run.limits["alerts"] = loop_lines + _offline_alerts(site, built, now, open_rows)
    overdrawing = [
        (ctx.connector, ctx.session, ctx.limit.overdraw_since or now) for ctx in built.evses.values() if ctx.overdraw
    ]
    escalations = site_escalations_apply(site=site, overdrawing=overdrawing, now=now)
    if escalations:
        run.limits["escalations"] = escalations
    if failed:
        # The lowerings the others got assumed the refusers would follow: plan again around them now.
        site_rebalance_request(site_id=site.pk, reason="lowering refused: plan around it")
    all_ok = all(first_ok) and all(raises_ok)
    run.status = BalancingRun.Status.OK if all_ok else BalancingRun.Status.PARTIAL
    # An alert opened or cleared in this run (one refreshed keeps its row; its text is in the lines).
    open_after = set(SiteAlert.objects.filter(site=site, cleared_at__isnull=True).values_list("pk", flat=True))
    alerts_moved = open_after != {a.pk for a in open_rows}
    return loop_events or alerts_moved or bool(escalations)
