"""The physics of a simulated charger: charging profiles as OCPP stacks them, and a car.

Pure Python, no I/O. Profiles follow the OCPP smart-charging rules: on a connector a
TxProfile (of the running transaction) wins over a TxDefaultProfile; among profiles of one
purpose the highest stack level in force wins; the result is capped by the station-wide
maximum profile (ChargePointMaxProfile / ChargingStationMaxProfile). A limit under 6 A pauses
charging (IEC 61851: no lower pilot current).

Fault modes (``Fault``) make a charger or its car misbehave the way real ones do, for the fault
benchmark and tests: ``ignore_profiles`` answers Accepted to every SetChargingProfile and lets
the car draw up to the charger's rating; ``ignore_tx_profiles`` the same, but it obeys a
station-wide maximum profile (as many real chargers that "ignore" TxProfiles do);
``reject_profiles`` answers Rejected to every profile, the fail-safe default included;
``drop_reconnect`` drops its connection every ``drop_every_s`` and comes back after
``reconnect_after_s`` with its transaction and stored profiles; ``sleeping_car``: once its offered
current went to 0 after it had drawn (or ``sleep_after_s`` into its session) the car stops drawing
and does not resume by itself. What the charger reports (Current.Offered, GetCompositeSchedule)
is what it really applies.
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MIN_CURRENT_A = 6.0
TX = "TxProfile"
TX_DEFAULT = "TxDefaultProfile"
STATION_MAX = ("ChargePointMaxProfile", "ChargingStationMaxProfile")

IGNORE_PROFILES = "ignore_profiles"
IGNORE_TX_PROFILES = "ignore_tx_profiles"
REJECT_PROFILES = "reject_profiles"
DROP_RECONNECT = "drop_reconnect"
SLEEPING_CAR = "sleeping_car"
FAULT_MODES = (IGNORE_PROFILES, IGNORE_TX_PROFILES, REJECT_PROFILES, DROP_RECONNECT, SLEEPING_CAR)
DEFAULT_DROP_EVERY_S = 60.0
DEFAULT_RECONNECT_AFTER_S = 5.0


@dataclass(frozen=True)
class Fault:
    """How a simulated charger (or its car) misbehaves; ``mode`` "" is a charger that behaves."""

    mode: str = ""
    drop_every_s: float = DEFAULT_DROP_EVERY_S
    reconnect_after_s: float = DEFAULT_RECONNECT_AFTER_S
    sleep_after_s: float | None = None

    def __post_init__(self) -> None:
        if self.mode and self.mode not in FAULT_MODES:
            raise ValueError(f"fault mode: {self.mode!r} is not one of {', '.join(FAULT_MODES)}")
        if self.drop_every_s <= 0:
            raise ValueError(f"drop_every_s: {self.drop_every_s:g} must be above 0 s")
        if self.reconnect_after_s < 0:
            raise ValueError(f"reconnect_after_s: {self.reconnect_after_s:g} must not be negative")
        if self.sleep_after_s is not None and self.sleep_after_s < 0:
            raise ValueError(f"sleep_after_s: {self.sleep_after_s:g} must not be negative")


NO_FAULT = Fault()


def parse_fault(text: str) -> Fault:
    """``mode[:a[:b]]``: ``drop_reconnect:EVERY_S:AFTER_S``, ``sleeping_car[:AFTER_S]``, or a bare mode.

    Raises ``ValueError`` naming what is wrong.
    """
    mode, *args = text.strip().split(":")
    if mode not in FAULT_MODES:
        raise ValueError(f"fault mode: {mode!r} is not one of {', '.join(FAULT_MODES)}")
    try:
        numbers = [float(a) for a in args]
    except ValueError:
        raise ValueError(f"fault {mode}: {':'.join(args)!r} are not numbers of seconds") from None
    if mode == DROP_RECONNECT:
        if len(numbers) > 2:
            raise ValueError("fault drop_reconnect: at most EVERY_S:AFTER_S")
        every = numbers[0] if numbers else DEFAULT_DROP_EVERY_S
        after = numbers[1] if len(numbers) > 1 else DEFAULT_RECONNECT_AFTER_S
        return Fault(mode, drop_every_s=every, reconnect_after_s=after)
    if mode == SLEEPING_CAR:
        if len(numbers) > 1:
            raise ValueError("fault sleeping_car: at most one AFTER_S")
        return Fault(mode, sleep_after_s=numbers[0] if numbers else None)
    if numbers:
        raise ValueError(f"fault {mode}: takes no arguments")
    return Fault(mode)


def profile_answer(*, fault: Fault, store: "ProfileStore", profile: "Profile") -> str:
    """Install ``profile`` as a charger with ``fault`` would, and its answer to SetChargingProfile.

    An ``ignore_*`` charger stores what it accepts (so it can list it) but does not apply it;
    a ``reject_profiles`` charger stores nothing.
    """
    if fault.mode == REJECT_PROFILES:
        return "Rejected"
    return store.install(profile)


@dataclass
class Profile:
    id: int
    connector_id: int
    stack_level: int
    purpose: str
    kind: str
    periods: list[tuple[float, float]]  # (start s, limit A), ascending
    start: datetime  # when period 0 begins
    transaction_id: str | None = None
    valid_to: datetime | None = None

    def limit_at(self, now: datetime) -> float | None:
        if self.valid_to is not None and now >= self.valid_to:
            return None
        elapsed = (now - self.start).total_seconds()
        current = None
        for start_s, limit in self.periods:
            if start_s <= elapsed:
                current = limit
        return current


def _parse_time(value: Any, default: datetime) -> datetime:
    if not value:
        return default
    return datetime.fromisoformat(str(value))


def profile_from_ocpp(
    *, connector_id: int, raw: dict[str, Any], now: datetime, voltage_v: float, phases: int, tx_started: datetime | None
) -> Profile:
    """A 1.6 ``csChargingProfiles`` or 2.0.1 ``chargingProfile`` (camelCase), limits in A."""
    schedule = raw["chargingSchedule"]
    if isinstance(schedule, list):  # 2.0.1: a list of schedules; the first applies
        schedule = schedule[0]
    kind = raw.get("chargingProfileKind", "Absolute")
    start = now
    if kind == "Relative" and tx_started is not None:
        start = tx_started
    elif schedule.get("startSchedule"):
        start = _parse_time(schedule["startSchedule"], now)
    in_watts = schedule.get("chargingRateUnit") == "W"
    periods = []
    for period in schedule["chargingSchedulePeriod"]:
        limit = float(period["limit"])
        if in_watts:
            limit = limit / (voltage_v * int(period.get("numberPhases") or phases))
        periods.append((float(period["startPeriod"]), limit))
    periods.sort()
    valid_to = raw.get("validTo")
    transaction_id = raw.get("transactionId")
    return Profile(
        id=int(raw.get("chargingProfileId", raw.get("id", 0))),
        connector_id=connector_id,
        stack_level=int(raw["stackLevel"]),
        purpose=str(raw["chargingProfilePurpose"]),
        kind=kind,
        periods=periods,
        start=start,
        transaction_id=None if transaction_id is None else str(transaction_id),
        valid_to=_parse_time(valid_to, now) if valid_to else None,
    )


@dataclass
class ProfileStore:
    profiles: list[Profile] = field(default_factory=list)

    def install(self, profile: Profile) -> str:
        if profile.purpose in STATION_MAX and profile.connector_id != 0:
            return "Rejected"
        if profile.purpose == TX and profile.connector_id == 0:
            return "Rejected"
        self.profiles = [
            p
            for p in self.profiles
            if p.id != profile.id
            and not (
                p.connector_id == profile.connector_id
                and p.purpose == profile.purpose
                and p.stack_level == profile.stack_level
            )
        ]
        self.profiles.append(profile)
        return "Accepted"

    def clear(
        self,
        *,
        profile_id: int | None = None,
        connector_id: int | None = None,
        purpose: str | None = None,
        stack_level: int | None = None,
    ) -> str:
        def matches(p: Profile) -> bool:
            if profile_id is not None:
                return p.id == profile_id
            return (
                (connector_id is None or p.connector_id == connector_id)
                and (purpose is None or p.purpose == purpose)
                and (stack_level is None or p.stack_level == stack_level)
            )

        kept = [p for p in self.profiles if not matches(p)]
        cleared = len(kept) != len(self.profiles)
        self.profiles = kept
        return "Accepted" if cleared else "Unknown"

    def _top(self, candidates: list[Profile], now: datetime) -> float | None:
        for profile in sorted(candidates, key=lambda p: -p.stack_level):
            limit = profile.limit_at(now)
            if limit is not None:
                return limit
        return None

    def limit_a(
        self,
        *,
        connector_id: int,
        now: datetime,
        transaction_id: str | None,
        rating_a: float,
        fault: Fault = NO_FAULT,
    ) -> float:
        """The current (A per phase) the connector really offers now, with ``fault``'s quirks."""
        if fault.mode in (IGNORE_PROFILES, REJECT_PROFILES):
            return rating_a
        station_limit = self._top([p for p in self.profiles if p.purpose in STATION_MAX], now)
        if fault.mode == IGNORE_TX_PROFILES:
            limit = rating_a if station_limit is None else min(rating_a, station_limit)
            return limit if limit >= MIN_CURRENT_A else 0.0
        tx_limit = None
        if transaction_id is not None:
            tx_limit = self._top(
                [
                    p
                    for p in self.profiles
                    if p.purpose == TX
                    and p.connector_id == connector_id
                    and (p.transaction_id is None or p.transaction_id == transaction_id)
                ],
                now,
            )
        if tx_limit is None:
            own = [p for p in self.profiles if p.purpose == TX_DEFAULT and p.connector_id == connector_id]
            tx_limit = self._top(own, now)
            if tx_limit is None:
                tx_limit = self._top([p for p in self.profiles if p.purpose == TX_DEFAULT and p.connector_id == 0], now)
        limit = rating_a
        for cap in (tx_limit, station_limit):
            if cap is not None:
                limit = min(limit, cap)
        return limit if limit >= MIN_CURRENT_A else 0.0


@dataclass
class Car:
    """A car whose acceptance rate tapers near full (constant current, then constant voltage).

    ``sleeps``: a car that, once its offered current went to 0 after it had drawn, or
    ``sleep_after_s`` of charging into its session, stops drawing for good (it "fell asleep"
    and does not wake up when current is offered again).
    """

    max_power_kw: float
    battery_kwh: float = 60.0
    soc: float = 0.3
    taper_from: float = 0.8
    sleeps: bool = False
    sleep_after_s: float | None = None
    asleep: bool = False
    has_drawn: bool = False

    def observe(self, *, offered_a: float, session_s: float) -> bool:
        """Let a sleeping car see its offer ``session_s`` into its session; True when it just fell asleep."""
        if not self.sleeps or self.asleep:
            return False
        paused_after_drawing = self.has_drawn and offered_a < MIN_CURRENT_A
        timed_out = self.sleep_after_s is not None and session_s >= self.sleep_after_s
        if paused_after_drawing or timed_out:
            self.asleep = True
            return True
        return False

    def acceptance_kw(self) -> float:
        if self.soc >= 1.0:
            return 0.0
        if self.soc <= self.taper_from:
            return self.max_power_kw
        remaining = (1.0 - self.soc) / (1.0 - self.taper_from)
        return self.max_power_kw * max(0.1, remaining)

    def draw_kw(self, *, offered_a: float, voltage_v: float, phases: int) -> float:
        if offered_a < MIN_CURRENT_A or self.asleep:
            return 0.0
        return min(self.acceptance_kw(), offered_a * voltage_v * phases / 1000.0)

    def charge(self, *, power_kw: float, seconds: float) -> float:
        """Energy taken (kWh) in ``seconds`` at ``power_kw``."""
        energy = power_kw * seconds / 3600.0
        if power_kw > 0:
            self.has_drawn = True
        self.soc = min(1.0, self.soc + energy / self.battery_kwh)
        return energy
