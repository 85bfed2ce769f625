"""The physics of a simulated charger: charging profiles as OCPP stacks them, and a car.

Pure Python, no I/O. Profiles follow the OCPP smart-charging rules: on a connector a
TxProfile (of the running transaction) wins over a TxDefaultProfile; among profiles of one
purpose the highest stack level in force wins; the result is capped by the station-wide
maximum profile (ChargePointMaxProfile / ChargingStationMaxProfile). A limit under 6 A pauses
charging (IEC 61851: no lower pilot current).
"""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

MIN_CURRENT_A = 6.0
TX = "TxProfile"
TX_DEFAULT = "TxDefaultProfile"
STATION_MAX = ("ChargePointMaxProfile", "ChargingStationMaxProfile")


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

    def limit_a(self, *, connector_id: int, now: datetime, transaction_id: str | None, rating_a: float) -> float:
        """The current (A per phase) the connector may offer now."""
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
        station_limit = self._top([p for p in self.profiles if p.purpose in STATION_MAX], now)
        limit = rating_a
        for cap in (tx_limit, station_limit):
            if cap is not None:
                limit = min(limit, cap)
        return limit if limit >= MIN_CURRENT_A else 0.0


@dataclass
class Car:
    """A car whose acceptance rate tapers near full (constant current, then constant voltage)."""

    max_power_kw: float
    battery_kwh: float = 60.0
    soc: float = 0.3
    taper_from: float = 0.8

    def acceptance_kw(self) -> float:
        if self.soc >= 1.0:
            return 0.0
        if self.soc <= self.taper_from:
            return self.max_power_kw
        remaining = (1.0 - self.soc) / (1.0 - self.taper_from)
        return self.max_power_kw * max(0.1, remaining)

    def draw_kw(self, *, offered_a: float, voltage_v: float, phases: int) -> float:
        if offered_a < MIN_CURRENT_A:
            return 0.0
        return min(self.acceptance_kw(), offered_a * voltage_v * phases / 1000.0)

    def charge(self, *, power_kw: float, seconds: float) -> float:
        """Energy taken (kWh) in ``seconds`` at ``power_kw``."""
        energy = power_kw * seconds / 3600.0
        self.soc = min(1.0, self.soc + energy / self.battery_kwh)
        return energy
