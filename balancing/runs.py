"""One balancing run of one site: build, solve, check, push (break before make), record.

Schema: tenant. Called by the ``balance_site`` task under the site's lock; see ARCHITECTURE.md,
"Safety of pushes":

- lowering profiles (and fail-safe defaults) go first; raises only after every one of them was
  accepted. A rejected or unanswered lowering keeps the old value in the books, the run sends
  no raise, and the next run keeps that charger at its booked value while retrying;
- an offline charger keeps its last profile: its current is reserved (see ``problem``);
- a profile is sent only when the limit moves by a step, its validity runs low, or the
  transaction changed, so chargers are not flooded;
- the engine's answer is checked against every invariant before anything is sent.
"""

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

from balancing.engine import check, solve
from balancing.models import BalancingRun, ConnectorLimit, ProfilePush, Site, StationFailsafe
from balancing.problem import STEP_A, BuiltProblem, EvseContext, build_problem, evse_id
from balancing.profiles import failsafe_profile, tx_profile
from balancing.push import Pusher, PushRequest
from chargepoint.models import ChargingStation, Connector

logger = logging.getLogger(__name__)

TX_PROFILE_VALIDITY = timedelta(minutes=15)
RENEW_BEFORE = timedelta(minutes=5)
RESUME_GRACE = timedelta(minutes=2)
RESUMED_DRAW_A = 1.0
FAILED_STATUSES = frozenset({"Rejected", "CallError", "Timeout", "Offline", "NotSupported", "NotImplemented"})


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


def _digest(problem: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(problem, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _effective_old_a(ctx: EvseContext, failsafe: StationFailsafe | None) -> float:
    """What the charger may be drawing now under the books: our profile, else its default."""
    limit, session = ctx.limit, ctx.session
    same_tx = session is not None and limit.transaction_id == session.transaction_id
    if limit.limit_a is not None and same_tx:
        return float(limit.limit_a)
    if failsafe is not None and failsafe.confirmed_at is not None:
        return float(failsafe.limit_a)
    return float(ctx.station.max_current_a)


def _plan(site: Site, built: BuiltProblem, allocations: dict[str, float], now: datetime) -> list[PlannedPush]:
    plans: list[PlannedPush] = []
    active_ids = {e["id"]: bool(e["active"]) for e in built.problem["evses"]}
    failsafes = {f.station_id: f for f in StationFailsafe.objects.filter(station__site=site)}
    seen_stations: set[int] = set()
    for key, ctx in built.evses.items():
        station = ctx.station
        if station.pk not in seen_stations:
            seen_stations.add(station.pk)
            failsafe = failsafes.get(station.pk)
            stale = (
                failsafe is None
                or failsafe.confirmed_at is None
                or failsafe.limit_a != site.failsafe_a
                or (station.last_boot_at is not None and (failsafe.booted_at or now) < station.last_boot_at)
            )
            if stale:
                payload = failsafe_profile(
                    ocpp_version=station.ocpp_version, limit_a=site.failsafe_a, number_phases=len(station.site_phases)
                )
                plans.append(
                    PlannedPush(
                        "failsafe",
                        station,
                        None,
                        float(failsafe.limit_a) if failsafe else None,
                        float(site.failsafe_a),
                        PushRequest(station.charge_point_id, "SetChargingProfile", payload),
                    )
                )
        session = ctx.session
        if session is None:
            continue  # no transaction to bind a TxProfile to; the fail-safe default governs a new one
        target = allocations[key]
        old = _effective_old_a(ctx, failsafes.get(station.pk))
        same_tx = ctx.limit.transaction_id == session.transaction_id and ctx.limit.limit_a is not None
        renew_due = ctx.limit.valid_until is None or ctx.limit.valid_until - now < RENEW_BEFORE
        if same_tx and abs(target - old) < STEP_A and not renew_due:
            continue
        kind = "lower" if target < old else "raise" if target > old else "renew"
        plans.append(_tx_push(ctx, kind=kind, old=old, target=target, now=now, active=active_ids.get(key, False)))
    return plans


def _tx_push(ctx: EvseContext, *, kind: str, old: float, target: float, now: datetime, active: bool) -> PlannedPush:
    """A TxProfile for the EVSE's running transaction, limited to ``target`` A."""
    if ctx.session is None:
        raise ValueError(f"a {kind} push needs the EVSE's session")
    valid_to = now + TX_PROFILE_VALIDITY
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
]


def _send(run: BalancingRun, plans: list[PlannedPush], pusher: Pusher, now: datetime) -> list[bool]:
    """Send one batch, record every push and its answer, and update the books (in bulk)."""
    if not plans:
        return []
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
    failsafes: list[StationFailsafe] = []
    for plan, answer in zip(plans, answers, strict=True):
        if plan.kind == "failsafe":
            failsafes.append(
                StationFailsafe(
                    station=plan.station,
                    limit_a=Decimal(str(plan.new_limit_a)),
                    confirmed_at=now if answer.accepted else None,
                    last_status=answer.status,
                    booted_at=plan.station.last_boot_at,
                )
            )
            continue
        limit = _book(plan, answer.accepted, answer.status, now)
        (changed_limits if limit.pk else new_limits).append(limit)
    ConnectorLimit.objects.bulk_create(new_limits)
    ConnectorLimit.objects.bulk_update(changed_limits, LIMIT_FIELDS)
    StationFailsafe.objects.bulk_create(
        failsafes,
        update_conflicts=True,
        unique_fields=["station"],
        update_fields=["limit_a", "confirmed_at", "last_status", "booted_at"],
    )
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
        if limit.transaction_id != plan.context.session.transaction_id:
            # A new session starts with a clean slate for rotation and resume tracking.
            limit.paused_since = limit.charging_since = limit.resumed_at = None
        was_paused = limit.limit_a is not None and limit.limit_a == 0 and limit.paused_since is not None
        limit.limit_a = Decimal(str(plan.new_limit_a))
        limit.valid_until = plan.valid_to
        limit.transaction_id = plan.context.session.transaction_id
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


def _track_resumes(built: BuiltProblem, now: datetime) -> None:
    """A car offered current after a pause that still draws nothing is flagged (pausing avoids it)."""
    for ctx in built.evses.values():
        limit = ctx.limit
        if limit.pk is None or limit.resumed_at is None or now - limit.resumed_at < RESUME_GRACE:
            continue
        if ctx.measured_a is not None and ctx.measured_a >= RESUMED_DRAW_A:
            limit.resumed_at = None
        elif ctx.connector.status == Connector.Status.SUSPENDED_EV:
            limit.no_resume_count += 1
            limit.resumed_at = None
            logger.warning("car on %s did not resume after a pause", ctx.connector)
        else:
            continue
        limit.save(update_fields=["resumed_at", "no_resume_count"])


def _stuck(built: BuiltProblem) -> list[EvseContext]:
    """EVSEs whose last lowering was not accepted: still at their booked value."""
    stuck = []
    for ctx in built.evses.values():
        limit = ctx.limit
        if (
            limit.last_status in FAILED_STATUSES
            and limit.requested_a is not None
            and limit.limit_a is not None
            and limit.requested_a < limit.limit_a
            and ctx.session is not None
            and limit.transaction_id == ctx.session.transaction_id
        ):
            stuck.append(ctx)
    return stuck


def _pin_stuck(built: BuiltProblem, stuck: list[EvseContext]) -> None:
    """Plan around chargers that refused a lowering: they keep exactly their booked current."""
    ids = {evse_id(ctx.connector): ctx for ctx in stuck}
    for evse in built.problem["evses"]:
        if evse["id"] in ids:
            evse["fixed_a"] = float(ids[evse["id"]].limit.limit_a or 0)


def _retries(stuck: list[EvseContext], now: datetime) -> list[PlannedPush]:
    """Ask again for the lowering a charger refused; the plan does not count on it."""
    return [
        _tx_push(
            ctx,
            kind="lower",
            old=float(ctx.limit.limit_a or 0),
            target=float(ctx.limit.requested_a or 0),
            now=now,
            active=True,
        )
        for ctx in stuck
    ]


def _summarise(run: BalancingRun, built: BuiltProblem, result: dict[str, Any], site: Site) -> None:
    """Site-level totals of the run: drawn, allocated and allowed, in kW and per phase."""
    phases = ["L1", "L2", "L3"][: site.phases]
    voltage = float(site.voltage_v)
    measured = [0.0] * len(phases)
    for evse in built.problem["evses"]:
        for phase in evse["phases"]:
            measured[phases.index(phase)] += float(evse.get("measured_a") or 0.0)
    root = next(n for n in built.problem["nodes"] if n["parent"] is None)
    allocated = list(result.get("node_load_a", {}).get(root["id"], [0.0] * len(phases)))
    run.phase_measured_a = [round(x, 2) for x in measured]
    run.phase_allocated_a = [round(float(x), 2) for x in allocated]
    run.phase_limit_a = [round(x, 2) for x in built.limits.limit_a]
    run.measured_kw = round(sum(measured) * voltage / 1000, 3)
    # Offline chargers' reserved currents are in the engine's loads (they are fixed EVSEs).
    run.allocated_kw = round(float(result.get("node_load_kw", {}).get(root["id"], 0.0)), 3)
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


def site_balance_run(*, site: Site, reason: str, pusher: Pusher, now: datetime | None = None) -> BalancingRun:
    """Balance one site now and push the result. The caller holds the site's lock."""
    now = now or timezone.now()
    built = build_problem(site, now)
    _track_resumes(built, now)
    stuck = _stuck(built)
    _pin_stuck(built, stuck)
    run = BalancingRun.objects.create(
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
        },
    )
    started = time.perf_counter()
    try:
        result = solve(built.problem)
        run.solve_ms = (time.perf_counter() - started) * 1000
        run.result = result
        violations = check(built.problem, result)
        if violations:
            raise RuntimeError("engine result violates limits: " + "; ".join(violations[:5]))
    except Exception as exc:
        run.status = BalancingRun.Status.FAILED
        run.error = f"{type(exc).__name__}: {exc}"
        run.finished_at = timezone.now()
        run.save()
        logger.exception("balancing run for site %s failed", site.slug)
        raise

    _summarise(run, built, result, site)
    allocations = {k: float(v) for k, v in result["allocations_a"].items()}
    stuck_ids = {id(ctx) for ctx in stuck}
    plans = [p for p in _plan(site, built, allocations, now) if id(p.context) not in stuck_ids]
    plans += _retries(stuck, now)
    first = [p for p in plans if p.kind in ("lower", "failsafe", "renew")]
    raises = [p for p in plans if p.kind == "raise"]
    first_ok = _send(run, first, pusher, now)
    if all(first_ok):
        raises_ok = _send(run, raises, pusher, now)
    else:
        raises_ok = []
        run.error = f"{first_ok.count(False)} lowering(s) not accepted; raises held back until the next run"
    all_ok = all(first_ok) and all(raises_ok)
    run.status = BalancingRun.Status.OK if all_ok else BalancingRun.Status.PARTIAL
    run.finished_at = timezone.now()
    run.save()
    return run
