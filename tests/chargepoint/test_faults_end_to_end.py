"""The site limit holds when chargers misbehave: simulated chargers over a real gateway and worker.

Asserts on the SITE TOTAL the simulators really draw (sampled every 0.1 s; for the car plugging
in, also after every change of any charger's draw), never on what the platform reports. A
single-phase 230 V site with a 20 kW cap and four 32 A chargers, as in issue 11: (a) a charger
that answers Accepted but ignores every profile, (b) one that rejects every profile from boot
(OCPP 2.0.1), (c) a car plugging in on a site that is already full.
Meter values every second, so detection is bounded by the platform, not by the simulator.
"""

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from balancing.models import SiteAlert
from balancing.services import site_create_or_update
from chargepoint.services import charger_register
from chargepoint.simulator.charger import ChargerSpec, SimulatedCharger
from chargepoint.simulator.fleet import CAP_TOLERANCE_KW, TruthSample, site_truth
from chargepoint.simulator.model import IGNORE_PROFILES, REJECT_PROFILES, Fault
from evplatform.redis import get_redis
from tenants.models import ChargePointIdentity
from tests.chargepoint.conftest import PASSWORD, _delete_fleet, wait_until

pytestmark = pytest.mark.django_db

CAP_KW = 20.0
RATING_A = 32
CAR_KW = (7.2, 7.0, 7.36, 6.9)  # any three of them want more than the cap
DETECT_S = 30.0  # issue 11: after detection, and never more than 30 s in all, the limit holds
HOLD_S = 8.0  # and keeps holding (seconds of samples that must all be within it)
SAMPLE_S = 0.1
SITES = {"ft-ignore": "FTI", "ft-reject": "FTR", "ft-plugin": "FTP"}


@dataclass
class FaultSites:
    site_ids: dict[str, int]

    @staticmethod
    def chargers(slug: str) -> list[str]:
        return [f"{SITES[slug]}-{n}" for n in range(1, len(CAR_KW) + 1)]


@pytest.fixture(scope="module")
def fault_sites(tenant, django_db_blocker) -> Iterator[FaultSites]:
    """Committed sites and chargers (onboarding services), removed after the module."""
    ids: dict[str, int] = {}
    with django_db_blocker.unblock():
        with tenant_context(tenant):
            for slug in SITES:
                site = site_create_or_update(
                    slug=slug,
                    name=slug,
                    limit_a=Decimal("100"),
                    phases=1,
                    demand_cap_kw=Decimal(str(CAP_KW)),
                    actor="system:test",
                ).obj
                ids[slug] = site.pk
                for key in get_redis().scan_iter(match=f"evp*:{tenant.schema_name}:*:{site.pk}"):
                    get_redis().delete(key)
        for slug in SITES:
            for cp in FaultSites.chargers(slug):
                charger_register(
                    tenant=tenant,
                    site_slug=slug,
                    charge_point_id=cp,
                    password=PASSWORD,
                    max_current_a=Decimal(RATING_A),
                    phases=1,
                )
        connection.set_schema_to_public()
    yield FaultSites(ids)
    with django_db_blocker.unblock():
        with tenant_context(tenant):
            _delete_fleet(list(ids.values()))
        with schema_context(get_public_schema_name()):
            ChargePointIdentity.objects.filter(site_slug__in=list(SITES)).delete()
        connection.set_schema_to_public()


class SiteFleet:
    """A site's simulated chargers on the gateway's background loop; each can be stopped alone."""

    def __init__(self, bg, url: str, specs: list[ChargerSpec]) -> None:
        self.bg = bg
        self.chargers = [SimulatedCharger(spec, url, meter_interval_s=1.0) for spec in specs]
        self.stop = asyncio.Event()
        self.futures = [bg.spawn(c.run(self.stop)) for c in self.chargers]
        self.started = time.monotonic()

    def by_id(self, cp: str) -> SimulatedCharger:
        return next(c for c in self.chargers if c.spec.charge_point_id == cp)

    def truth(self, misbehaving: tuple[str, ...] = ()) -> TruthSample:
        return site_truth(self.chargers, t_s=time.monotonic() - self.started, misbehaving=misbehaving)

    def record_every_change(self) -> list[float]:
        """From now on, the site total (kW) right after every change of a charger's draw.

        A charger's draw changes only in ``ChargerState.step`` (its physics tick) and
        ``ChargerState.install`` (a profile applied at once), both on the fleet's loop: wrapped,
        they see every total the site really reached, however briefly, which sampling cannot.
        """
        totals: list[float] = []

        def recording(method: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                result = method(*args, **kwargs)
                totals.append(sum(c.state.power_kw for c in self.chargers))
                return result

            return wrapper

        for charger in self.chargers:
            charger.state.step = recording(charger.state.step)
            charger.state.install = recording(charger.state.install)
        return totals

    def close(self) -> None:
        self.bg.loop.call_soon_threadsafe(self.stop.set)
        for future in self.futures:
            future.result(30)


def specs(slug: str, *, ocpp: str = "1.6", faults: dict[int, Fault] | None = None, plug: bool = True):
    faults = faults or {}
    return [
        ChargerSpec(
            cp,
            PASSWORD,
            car_kw,
            ocpp_version=ocpp,
            rating_a=RATING_A,
            phases=1,
            plug_in_after_s=0.5 + 0.3 * i if plug else None,
            fault=faults.get(i, Fault()),
            model=("Sim-" + faults[i].mode)[:20] if i in faults else "SimCharger",
        )
        for i, (cp, car_kw) in enumerate(zip(FaultSites.chargers(slug), CAR_KW, strict=True))
    ]


def holds_for_good(
    fleet: SiteFleet, *, since: float, misbehaving: tuple[str, ...] = (), behaving_share: float | None = None
) -> tuple[float, list[TruthSample]]:
    """Sample until the site total (and the behaving share) held for ``HOLD_S``; when that began.

    Fails when it has not begun within ``DETECT_S`` of ``since`` (monotonic time of the fault).
    """
    samples: list[TruthSample] = []
    good_since: float | None = None
    deadline = since + DETECT_S + HOLD_S
    while time.monotonic() < deadline:
        now = time.monotonic()
        sample = fleet.truth(misbehaving)
        samples.append(sample)
        ok = sample.total_kw <= CAP_KW + CAP_TOLERANCE_KW
        if ok and behaving_share is not None:
            room = min(CAP_KW - sample.misbehaving_kw, sample.behaving_demand_kw)
            ok = sample.behaving_kw >= behaving_share * room
        if not ok:
            good_since = None
        elif good_since is None:
            good_since = now
        if good_since is not None and now - good_since >= HOLD_S:
            return good_since - since, samples
        time.sleep(SAMPLE_S)
    last = samples[-12:]
    raise AssertionError(
        f"the site did not hold for {HOLD_S:g}s within {DETECT_S:g}s of the fault; last samples (kW): "
        + ", ".join(f"{s.total_kw:.2f} (behaving {s.behaving_kw:.2f}, other {s.misbehaving_kw:.2f})" for s in last)
    )


def plugged_and_charging(fleet: SiteFleet, cps: list[str]) -> bool:
    return all(fleet.by_id(cp).state.transaction_id is not None for cp in cps)


def test_a_charger_that_ignores_its_profiles_is_detected_and_the_site_total_holds_within_30_s(
    gateway, celery_worker, fault_sites, bg
) -> None:
    slug = "ft-ignore"
    ids = FaultSites.chargers(slug)
    started = timezone.now()
    fleet = SiteFleet(bg, gateway.url, specs(slug, faults={0: Fault(IGNORE_PROFILES)}))
    try:
        wait_until(lambda: plugged_and_charging(fleet, ids[:1]), timeout=30, what="the ignoring charger's session")
        fault_at = time.monotonic()
        wait_until(lambda: plugged_and_charging(fleet, ids), timeout=30, what="every session")
        held_after_s, _ = holds_for_good(fleet, since=fault_at, misbehaving=(ids[0],))
        ignorer = fleet.by_id(ids[0]).state
    finally:
        fleet.close()

    assert ignorer.profiles_received >= 1  # it did answer Accepted ...
    assert ignorer.power_kw == pytest.approx(CAR_KW[0])  # ... and kept drawing its car's full rate
    assert held_after_s <= DETECT_S
    detected = SiteAlert.objects.filter(
        station__charge_point_id=ids[0], kind=SiteAlert.Kind.OVERDRAW, opened_at__gte=started
    )
    assert detected.exists(), "no overdraw alert named the charger that ignores its profiles"


def test_a_charger_that_rejects_every_profile_from_boot_neither_breaks_the_limit_nor_holds_back_the_others(
    gateway, celery_worker, fault_sites, bg
) -> None:
    slug = "ft-reject"
    ids = FaultSites.chargers(slug)
    fleet = SiteFleet(bg, gateway.url, specs(slug, ocpp="2.0.1", faults={0: Fault(REJECT_PROFILES)}))
    try:
        wait_until(lambda: plugged_and_charging(fleet, ids[:1]), timeout=30, what="the rejecting charger's session")
        fault_at = time.monotonic()
        wait_until(lambda: plugged_and_charging(fleet, ids), timeout=30, what="every session")
        held_after_s, samples = holds_for_good(fleet, since=fault_at, misbehaving=(ids[0],), behaving_share=0.8)
        rejecter = fleet.by_id(ids[0]).state
    finally:
        fleet.close()

    assert rejecter.profiles_received == 0  # nothing was ever accepted ...
    assert rejecter.power_kw == pytest.approx(CAR_KW[0])  # ... so its car draws its full rate
    assert held_after_s <= DETECT_S
    last = samples[-1]
    # The other three cars share what the cap leaves, far above their 6 A fail-safe (3 x 1.38 kW).
    assert last.behaving_kw >= 0.8 * (CAP_KW - last.misbehaving_kw) > 3 * 6 * 230 / 1000


def test_a_car_plugging_in_on_a_full_site_never_lifts_the_site_total_over_the_limit(
    gateway, celery_worker, fault_sites, bg
) -> None:
    slug = "ft-plugin"
    ids = FaultSites.chargers(slug)
    fleet = SiteFleet(bg, gateway.url, specs(slug, plug=False))
    try:
        wait_until(
            lambda: all(fleet.by_id(cp).state.profiles.profiles for cp in ids),
            timeout=30,
            what="every charger booted and holding its fail-safe default",
        )
        for cp in ids[:3]:
            fleet.by_id(cp).state.plugged = True
        wait_until(lambda: plugged_and_charging(fleet, ids[:3]), timeout=30, what="three sessions")
        holds_for_good(fleet, since=time.monotonic())  # balanced: the site is as full as its plan allows
        before = fleet.truth()
        assert before.behaving_kw < before.behaving_demand_kw - 1  # the three cars are held back
        newcomer = fleet.by_id(ids[3]).state
        totals = fleet.record_every_change()
        newcomer.plugged = True
        plugged_at = time.monotonic()
        drawing_since: float | None = None
        samples: list[TruthSample] = []
        # 12 s at least, and until the newcomer has drawn for HOLD_S (it may get current late).
        while (elapsed := time.monotonic() - plugged_at) < 12 or (
            elapsed < 30 and (drawing_since is None or elapsed - drawing_since < HOLD_S)
        ):
            samples.append(fleet.truth())
            if drawing_since is None and newcomer.power_kw > 0:
                drawing_since = elapsed
            time.sleep(SAMPLE_S / 2)
    finally:
        fleet.close()

    peak = max(s.total_kw for s in samples)
    assert peak <= CAP_KW + CAP_TOLERANCE_KW, f"the newcomer lifted the site to {peak:.2f} kW"
    assert max(totals) <= CAP_KW + CAP_TOLERANCE_KW, f"for a moment the site drew {max(totals):.2f} kW"
    assert newcomer.power_kw > 0, "the newcomer was never given current"
    assert samples[-1].total_kw > 0.9 * CAP_KW
