"""The fail-safe current sized to the site, so chargers that lose the platform stay within its limits.

Schema: tenant. Every charger falls back to its TxDefaultProfile (the site's ``failsafe_a`` per
phase) at boot, after its TxProfile's validity and while the platform is unreachable, possibly
all at once and for any length of time. So the fail-safe ``f`` (whole amperes) is the largest
with which EVERY connector of the site drawing ``min(f, its rating)`` on each of its phases at
the same time stays within every limit that may apply at any time:

- the grid connection's ``limit_a``, per site phase (the stations' phase wiring decides which
  connectors load which phase);
- every circuit's ``limit_a`` (per phase) and ``limit_kw``, over all connectors below it;
- the demand cap (kW) less ``Site.building_allowance_kw`` (room left for the building's load);
- every active limit schedule's ``limit_a`` and ``limit_kw`` (less the allowance), whether or not
  its window is open now: the fallback must hold whenever it is in force.

Power is ``phases x current x site voltage / 1000`` (kW). Below 6 A (IEC 61851's lowest pilot
current) a charger cannot charge, so a sized value under 6 A becomes 0 A: a car then waits for
its first profile. A site without chargers yet is sized for a single charger of any rating.

The value set is at most ``BALANCING_FAILSAFE_TARGET_A`` (6 A, the lowest pilot current) even
where more would fit. The fail-safe is also what the plan keeps free for every idle connector (a
car that plugs in starts at it before its first profile), so a large one would hold back the cars
that are charging whenever connectors stand idle: at the demo garage a lone car would get 8 A
per phase next to three idle connectors at a 7 A fail-safe, but its full 10.4 A at 6 A. A site
that prefers a faster fallback sets a larger value by hand (checked against every limit).
"""

import math
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from balancing.alerts import alert_clear, alert_raise
from balancing.dispatch import site_rebalance_request
from balancing.models import Circuit, Site, SiteAlert, SiteLimitSchedule
from chargepoint.models import ChargingStation, Connector
from evplatform.services import require_tenant_schema
from tenants.accounts.services import audit_record

MIN_CHARGING_A = 6  # IEC 61851 / SAE J1772 lowest pilot current
SEARCH_MAX_A = 1000  # the highest station rating onboarding accepts
PHASE_NAMES = ("L1", "L2", "L3")
# Float sums of Decimal limits: a need equal to the limit fits.
TOLERANCE = 1e-6


@dataclass(frozen=True)
class _Draw:
    """One connector: the site phases it loads and its rating (A per phase)."""

    phases: tuple[str, ...]
    rating_a: float
    station_id: int = 0


@dataclass(frozen=True)
class _Limit:
    """One limit that may apply: per-phase amperes (``phase`` set) or kilowatts."""

    label: str
    unit: str  # "A" or "kW"
    allowed: float
    draws: tuple[_Draw, ...]
    phase: str | None = None

    def need(self, current_a: float, voltage_v: float) -> float:
        """What every connector under this limit at ``current_a`` draws, in the limit's unit."""
        if self.unit == "A":
            return sum(min(current_a, d.rating_a) for d in self.draws)
        return sum(len(d.phases) * min(current_a, d.rating_a) for d in self.draws) * voltage_v / 1000.0

    def fits(self, current_a: float, voltage_v: float) -> bool:
        return self.need(current_a, voltage_v) <= self.allowed + TOLERANCE

    def largest_a(self, voltage_v: float) -> int:
        """The largest whole current within this limit (``need`` rises with the current)."""
        low, high = 0, SEARCH_MAX_A
        if self.fits(high, voltage_v):
            return high
        while high - low > 1:
            middle = (low + high) // 2
            if self.fits(middle, voltage_v):
                low = middle
            else:
                high = middle
        return low


@dataclass(frozen=True)
class FailsafeSizing:
    """The sized fail-safe: ``value_a`` to set (``max_a``, or 0 below 6 A) and what bound it."""

    value_a: Decimal
    max_a: int
    bound: str
    connectors: int


def _fmt(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def _count(draws: tuple[_Draw, ...]) -> str:
    """'20 chargers', or '5 connectors on 4 chargers' where a charger has several."""
    stations = len({d.station_id for d in draws})
    chargers = f"{stations} charger{'' if stations == 1 else 's'}"
    return chargers if stations == len(draws) else f"{len(draws)} connectors on {chargers}"


def _draws(site: Site) -> tuple[list[_Draw], dict[int | None, list[_Draw]]]:
    """Every connector of the site's chargers (not its meters), and which circuit feeds each."""
    connectors = Connector.objects.filter(station__site=site, station__is_site_meter=False).select_related("station")
    site_phases = set(PHASE_NAMES[: site.phases])
    draws: list[_Draw] = []
    by_circuit: dict[int | None, list[_Draw]] = {}
    for connector in connectors:
        station = connector.station
        ratings = [station.max_current_a]
        if connector.max_current_a is not None:
            ratings.append(connector.max_current_a)
        draw = _Draw(tuple(p for p in station.site_phases if p in site_phases), float(min(ratings)), station.pk)
        draws.append(draw)
        by_circuit.setdefault(station.circuit_id, []).append(draw)
    return draws, by_circuit


def _limits(site: Site, draws: list[_Draw], by_circuit: dict[int | None, list[_Draw]]) -> list[_Limit]:
    phases = PHASE_NAMES[: site.phases]
    allowance = float(site.building_allowance_kw)
    less = f" less the {_fmt(allowance)} kW building allowance" if allowance else ""

    def per_phase(label: str, limit_a: Decimal, members: list[_Draw]) -> list[_Limit]:
        return [_Limit(label, "A", float(limit_a), tuple(d for d in members if p in d.phases), phase=p) for p in phases]

    limits = per_phase("the grid connection", site.limit_a, draws)
    circuits = list(Circuit.objects.filter(site=site).order_by("name"))
    children: dict[int | None, list[Circuit]] = {}
    for circuit in circuits:
        children.setdefault(circuit.parent_id, []).append(circuit)
    for circuit in circuits:
        below: list[_Draw] = []
        todo = [circuit]
        while todo:  # the circuit and every circuit nested below it
            node = todo.pop()
            below.extend(by_circuit.get(node.pk, []))
            todo.extend(children.get(node.pk, []))
        label = f"circuit {circuit.name!r}"
        limits += per_phase(label, circuit.limit_a, below)
        if circuit.limit_kw is not None:
            limits.append(_Limit(label, "kW", float(circuit.limit_kw), tuple(below)))
    if site.demand_cap_kw is not None:
        limits.append(_Limit("the demand cap" + less, "kW", float(site.demand_cap_kw) - allowance, tuple(draws)))
    for schedule in SiteLimitSchedule.objects.filter(site=site, is_active=True).order_by("name"):
        label = f"schedule {schedule.name!r}"
        if schedule.limit_a is not None:
            limits += per_phase(label, schedule.limit_a, draws)
        if schedule.limit_kw is not None:
            limits.append(_Limit(label + less, "kW", float(schedule.limit_kw) - allowance, tuple(draws)))
    return limits


def _site_model(site: Site) -> tuple[list[_Limit], float, int, int]:
    """The limits, the voltage, the rating cap (A) and the number of connectors."""
    draws, by_circuit = _draws(site)
    count = len(draws)
    if not draws:  # no chargers yet: at least one charger, of any rating, must fit
        draws = [_Draw(PHASE_NAMES[: site.phases], float(SEARCH_MAX_A))]
        by_circuit = {None: draws}
    # Above the highest rating nothing changes: no charger draws more than its rating.
    cap = min(SEARCH_MAX_A, math.floor(max(d.rating_a for d in draws)))
    return _limits(site, draws, by_circuit), float(site.voltage_v), cap, count


def _explain(limit: _Limit, current_a: float, voltage_v: float) -> str:
    where = f" on {limit.phase}" if limit.phase else ""
    return (
        f"{_count(limit.draws)} at {_fmt(current_a)} A need {_fmt(limit.need(current_a, voltage_v))} "
        f"{limit.unit}{where}; {limit.label} allows {_fmt(limit.allowed)} {limit.unit}"
    )


def site_failsafe_size(*, site: Site) -> FailsafeSizing:
    """The largest whole fail-safe current (A) all the site's chargers may draw at once, and why."""
    require_tenant_schema("site_failsafe_size")
    limits, voltage_v, cap, count = _site_model(site)
    best, bound = cap, f"the chargers' rating ({cap} A)"
    for limit in limits:
        largest = limit.largest_a(voltage_v)
        if largest < best:
            best, bound = largest, _explain(limit, largest, voltage_v)
    if count == 0:
        bound = f"no chargers yet, sized for one: {bound}"
    target = int(settings.BALANCING_FAILSAFE_TARGET_A)
    if best > target:
        value = target
        bound = f"the fail-safe target ({target} A; up to {best} A would fit: {bound})"
    else:
        value = best
    if value < MIN_CHARGING_A:
        if value:
            bound += f" (so 0: below {MIN_CHARGING_A} A)"
        value = 0
    return FailsafeSizing(Decimal(value), best, bound, count)


def site_failsafe_breach(*, site: Site, failsafe_a: Decimal) -> str | None:
    """Why ``failsafe_a`` breaks a limit of the site (the tightest one), or None if it fits."""
    require_tenant_schema("site_failsafe_breach")
    limits, voltage_v, _cap, _connectors = _site_model(site)
    current = float(failsafe_a)
    broken = [limit for limit in limits if not limit.fits(current, voltage_v)]
    if not broken:
        return None
    limit = min(broken, key=lambda item: item.largest_a(voltage_v))
    largest = min(item.largest_a(voltage_v) for item in limits)
    where = f" on {limit.phase}" if limit.phase else ""
    text = (
        f"a fail-safe of {_fmt(current)} A on {_count(limit.draws)} needs "
        f"{_fmt(limit.need(current, voltage_v))} {limit.unit}{where}; {limit.label} allows "
        f"{_fmt(limit.allowed)} {limit.unit}: at most {largest} A"
    )
    if largest < MIN_CHARGING_A:
        text += f" (so 0: below {MIN_CHARGING_A} A)"
    return text


@transaction.atomic
def site_failsafe_refresh(*, site: Site, actor: str, strict: bool = True) -> FailsafeSizing:
    """Size the site's fail-safe again after its limits or its chargers changed.

    With ``failsafe_auto`` the sized value is stored (audited with ``actor``) and, if a charger
    of the site is online, a balancing run is requested, which pushes the new default profiles
    (an offline charger gets it from the run its boot asks for); a site without chargers keeps its
    value unless one charger could not draw it. Without it, the value set by hand is checked and
    a ``ValidationError`` on ``failsafe_a`` names the limit it breaks and the sized maximum;
    with ``strict`` false (a change nobody can be refused, e.g. a connector a charger reported)
    a ``failsafe`` site alert says so instead. Refreshes of one site run one at a time (the
    site's row is locked), so chargers added at once are all counted.
    """
    require_tenant_schema("site_failsafe_refresh")
    locked = Site.objects.select_for_update().get(pk=site.pk)
    site.failsafe_a, site.failsafe_auto = locked.failsafe_a, locked.failsafe_auto
    sizing = site_failsafe_size(site=site)
    if not site.failsafe_auto:
        breach = site_failsafe_breach(site=site, failsafe_a=site.failsafe_a)
        if breach and strict:
            raise ValidationError({"failsafe_a": breach})
        if breach:
            detail = f"{breach}; lower the fail-safe or let the platform size it"
            alert_raise(site=site, kind=SiteAlert.Kind.FAILSAFE, detail=detail, now=timezone.now())
            return sizing
    alert_clear(site=site, kind=SiteAlert.Kind.FAILSAFE, now=timezone.now(), why="the fail-safe fits the site")
    if not site.failsafe_auto:
        return sizing
    new = sizing.value_a if sizing.connectors else min(site.failsafe_a, sizing.value_a)
    if new != site.failsafe_a:
        old = site.failsafe_a
        Site.objects.filter(pk=site.pk).update(failsafe_a=new)
        site.failsafe_a = new
        audit_record(
            actor=actor,
            action="update",
            object_type="site",
            object_id=site.pk,
            label=site.name,
            changes=[("failsafe_a", old, new)],
        )
        if ChargingStation.objects.filter(site=site, is_online=True).exists():
            site_rebalance_request(site_id=site.pk, reason="fail-safe resized")
    return sizing
