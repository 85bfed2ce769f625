"""A fleet of simulated chargers and the site total it draws over time.

Scenario ``seed`` is the brochure's picture: four cars taking about 7.2, 6.6, 11.5 and 7.7 kW
on a site capped at 20 kW (DEMO-CP-1..4 of ``seed_demo``). Scenario ``random`` draws cars
between 3.7 and 22 kW. The report says whether the site stayed under the cap once the first
rebalance had reached every charging charger.

``fault_metrics`` turns a site's true total over time (what its simulated chargers really drew)
into the fault benchmark's figures: seconds, kW and kWh above the cap, the share of the cap the
chargers that behave used, and the time to recover.
"""

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from chargepoint.simulator.charger import ChargerSpec, SimulatedCharger

SEED_CAR_KW = (7.2, 6.6, 11.5, 7.7)
SEED_CAP_KW = 20.0
CAP_TOLERANCE_KW = 0.05  # rounding of 0.1 A limits


@dataclass
class FleetReport:
    cap_kw: float | None
    samples: list[tuple[float, float]] = field(default_factory=list)  # (s since start, total kW)
    first_rebalance_s: float | None = None
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def max_after_rebalance_kw(self) -> float | None:
        if self.first_rebalance_s is None:
            return None
        after = [kw for t, kw in self.samples if t >= self.first_rebalance_s]
        return max(after) if after else None

    @property
    def stayed_under_cap(self) -> bool | None:
        peak = self.max_after_rebalance_kw
        if self.cap_kw is None or peak is None:
            return None
        return peak <= self.cap_kw + CAP_TOLERANCE_KW

    def summary(self) -> str:
        peak = self.max_after_rebalance_kw
        if self.first_rebalance_s is None:
            return "no charging profile reached every charging charger: the site was never rebalanced"
        verdict = {True: "stayed under the cap", False: "EXCEEDED the cap", None: "no cap"}[self.stayed_under_cap]
        cap = f"{self.cap_kw:g} kW" if self.cap_kw is not None else "none"
        return (
            f"first rebalance after {self.first_rebalance_s:.1f}s; peak after it {peak:.2f} kW (cap {cap}): {verdict}"
        )


def seed_specs(charge_point_ids: list[str], password: str, *, ocpp_version: str = "1.6") -> list[ChargerSpec]:
    return [
        ChargerSpec(cp, password, car_kw, ocpp_version=ocpp_version, plug_in_after_s=1.0 + 0.5 * i)
        for i, (cp, car_kw) in enumerate(zip(charge_point_ids, SEED_CAR_KW, strict=False))
    ]


def random_specs(
    charge_point_ids: list[str], password: str, *, seed: int = 1, ocpp_version: str = "1.6"
) -> list[ChargerSpec]:
    rng = random.Random(seed)  # noqa: S311 - a simulation, not a secret
    return [
        ChargerSpec(
            cp,
            password,
            rng.choice([3.7, 7.2, 7.4, 11.0, 11.5, 22.0]),
            ocpp_version=ocpp_version,
            plug_in_after_s=rng.uniform(1, 10),
            soc=rng.uniform(0.1, 0.9),
        )
        for cp in charge_point_ids
    ]


async def run_fleet(
    specs: list[ChargerSpec],
    *,
    url: str,
    duration_s: float,
    cap_kw: float | None,
    meter_interval_s: float = 10.0,
    report_every_s: float = 5.0,
    on_report: Callable[[float, float, int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> FleetReport:
    """Run the fleet for ``duration_s`` (or until ``stop``); sample the site total every second."""
    stop = stop or asyncio.Event()
    chargers = [SimulatedCharger(spec, url, meter_interval_s=meter_interval_s) for spec in specs]
    tasks = [asyncio.ensure_future(c.run(stop)) for c in chargers]
    report = FleetReport(cap_kw)
    loop = asyncio.get_running_loop()
    started = loop.time()
    next_report = started
    try:
        while not stop.is_set() and loop.time() - started < duration_s:
            await asyncio.sleep(1.0)
            now = loop.time()
            total = sum(c.state.power_kw for c in chargers)
            report.samples.append((now - started, total))
            charging = [c for c in chargers if c.state.transaction_id is not None]
            if (
                report.first_rebalance_s is None
                and charging
                and len(charging) == sum(1 for c in chargers if c.state.plugged)
                and all(c.state.profiles_received for c in charging)
            ):
                report.first_rebalance_s = now - started
            if on_report is not None and now >= next_report:
                next_report = now + report_every_s
                on_report(now - started, total, len(charging))
            if all(t.done() for t in tasks):
                break
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    report.refused = {c.spec.charge_point_id: c.state.refused for c in chargers if c.state.refused}
    return report


@dataclass(frozen=True)
class TruthSample:
    """One look at a site's simulated chargers (kW): what they really draw, not what was reported.

    ``behaving_demand_kw``: what the behaving cars would take if offered their charger's rating.
    """

    t_s: float
    total_kw: float
    behaving_kw: float = 0.0
    misbehaving_kw: float = 0.0
    behaving_demand_kw: float = 0.0


@dataclass(frozen=True)
class FaultMetrics:
    seconds_above: float
    max_kw_above: float
    kwh_above: float
    behaving_share: float | None  # behaving draw / min(cap - misbehaving draw, their demand), steady part
    recover_s: float | None  # fault start -> back under the cap for good; None: still above at the end
    samples: int


def fault_metrics(
    samples: Sequence[TruthSample],
    *,
    cap_kw: float,
    fault_at_s: float,
    steady_from_s: float | None = None,
    tolerance_kw: float = CAP_TOLERANCE_KW,
) -> FaultMetrics:
    """The fault figures of one site from ``fault_at_s`` on (samples in time order).

    Each sample stands for the time since the one before it. Above the cap means above
    ``cap_kw + tolerance_kw`` (rounding of 0.1 A limits); the kW and kWh above count from the cap.
    The share is over the samples from ``steady_from_s`` (default: the fault start) on.
    """
    seconds = kwh = peak = 0.0
    recovered_at: float | None = None
    last_was_above = False
    previous_t: float | None = None
    drawn = room = 0.0
    counted = 0
    steady_from = fault_at_s if steady_from_s is None else steady_from_s
    for sample in samples:
        dt = 0.0 if previous_t is None else sample.t_s - previous_t
        previous_t = sample.t_s
        if sample.t_s < fault_at_s:
            continue
        counted += 1
        above = sample.total_kw > cap_kw + tolerance_kw
        if last_was_above and not above:
            recovered_at = sample.t_s
        last_was_above = above
        if above:
            excess = sample.total_kw - cap_kw
            seconds += dt
            kwh += excess * dt / 3600.0
            peak = max(peak, excess)
        if sample.t_s >= steady_from:
            drawn += sample.behaving_kw
            room += max(0.0, min(cap_kw - sample.misbehaving_kw, sample.behaving_demand_kw))
    if last_was_above:
        recover: float | None = None
    elif recovered_at is None:  # never above
        recover = 0.0
    else:
        recover = recovered_at - fault_at_s
    share = drawn / room if room > 0 else None
    return FaultMetrics(seconds, peak, kwh, share, recover, counted)


def charger_demand_kw(charger: SimulatedCharger) -> float:
    """What the car would draw now if offered its charger's rating (0 without a session or asleep)."""
    state = charger.state
    if state.transaction_id is None or state.car.asleep:
        return 0.0
    spec = charger.spec
    return min(state.car.acceptance_kw(), spec.rating_a * spec.voltage_v * spec.phases / 1000.0)


def site_truth(chargers: Sequence[SimulatedCharger], *, t_s: float, misbehaving: Sequence[str] = ()) -> TruthSample:
    """A site's true draw now, split into the chargers that behave and those in ``misbehaving`` (ids)."""
    bad = set(misbehaving)
    behaving = [c for c in chargers if c.spec.charge_point_id not in bad]
    behaving_kw = sum(c.state.power_kw for c in behaving)
    misbehaving_kw = sum(c.state.power_kw for c in chargers if c.spec.charge_point_id in bad)
    return TruthSample(
        t_s=t_s,
        total_kw=behaving_kw + misbehaving_kw,
        behaving_kw=behaving_kw,
        misbehaving_kw=misbehaving_kw,
        behaving_demand_kw=sum(charger_demand_kw(c) for c in behaving),
    )
