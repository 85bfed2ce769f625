"""OCPP charging profiles for an allocation, in each protocol version's own shape.

Pure functions: values in, OCPP JSON payloads (camelCase, as the wire carries them) out.

- TxProfile: the limit of a running transaction. It carries a limited validity (``validTo``) and
  is renewed while the platform is alive, so a charger that stops hearing from us falls back to
  its stored default by itself.
- TxDefaultProfile on connector/EVSE 0: the fail-safe, safe on its own, stored in the charger's
  flash and changed rarely; it limits every session the platform cannot reach.
- ChargePointMaxProfile (1.6) / ChargingStationMaxProfile (2.0.1) on connector/EVSE 0: a limit
  on the whole station, for charger models that accept TxProfiles but do not follow them.
"""

from datetime import datetime
from decimal import Decimal

# Profile ids and stack levels are fixed per purpose, so each new profile replaces the last
# one of its kind on the charger instead of piling up.
TX_PROFILE_ID_BASE = 1000
TX_STACK_LEVEL = 1
DEFAULT_PROFILE_ID = 1
DEFAULT_STACK_LEVEL = 0
STATION_MAX_PROFILE_ID = 2
STATION_MAX_STACK_LEVEL = 0
OCPP16 = "1.6"
OCPP201 = "2.0.1"


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _limit(limit_a: Decimal | float) -> float:
    return float(Decimal(str(limit_a)).quantize(Decimal("0.1")))


def tx_profile(
    *,
    ocpp_version: str,
    connector_id: int,
    transaction_id: str,
    limit_a: Decimal | float,
    number_phases: int,
    now: datetime,
    valid_to: datetime,
) -> dict[str, object]:
    """SetChargingProfile payload limiting one running transaction to ``limit_a`` per phase."""
    period = {"startPeriod": 0, "limit": _limit(limit_a), "numberPhases": number_phases}
    if ocpp_version == OCPP201:
        return {
            "evseId": connector_id,
            "chargingProfile": {
                "id": TX_PROFILE_ID_BASE + connector_id,
                "stackLevel": TX_STACK_LEVEL,
                "chargingProfilePurpose": "TxProfile",
                "chargingProfileKind": "Absolute",
                "transactionId": transaction_id,
                "validFrom": _iso(now),
                "validTo": _iso(valid_to),
                "chargingSchedule": [
                    {
                        "id": TX_PROFILE_ID_BASE + connector_id,
                        "startSchedule": _iso(now),
                        "chargingRateUnit": "A",
                        "chargingSchedulePeriod": [period],
                    }
                ],
            },
        }
    profile: dict[str, object] = {
        "chargingProfileId": TX_PROFILE_ID_BASE + connector_id,
        "stackLevel": TX_STACK_LEVEL,
        "chargingProfilePurpose": "TxProfile",
        "chargingProfileKind": "Absolute",
        "validFrom": _iso(now),
        "validTo": _iso(valid_to),
        "chargingSchedule": {
            "startSchedule": _iso(now),
            "chargingRateUnit": "A",
            "chargingSchedulePeriod": [period],
        },
    }
    if transaction_id.isdigit():  # OCPP 1.6 transaction ids are integers
        profile["transactionId"] = int(transaction_id)
    return {"connectorId": connector_id, "csChargingProfiles": profile}


def failsafe_profile(*, ocpp_version: str, limit_a: Decimal | float, number_phases: int) -> dict[str, object]:
    """SetChargingProfile payload for the fail-safe default on every connector (no expiry)."""
    period = {"startPeriod": 0, "limit": _limit(limit_a), "numberPhases": number_phases}
    if ocpp_version == OCPP201:
        return {
            "evseId": 0,
            "chargingProfile": {
                "id": DEFAULT_PROFILE_ID,
                "stackLevel": DEFAULT_STACK_LEVEL,
                "chargingProfilePurpose": "TxDefaultProfile",
                "chargingProfileKind": "Relative",
                "chargingSchedule": [
                    {"id": DEFAULT_PROFILE_ID, "chargingRateUnit": "A", "chargingSchedulePeriod": [period]}
                ],
            },
        }
    return {
        "connectorId": 0,
        "csChargingProfiles": {
            "chargingProfileId": DEFAULT_PROFILE_ID,
            "stackLevel": DEFAULT_STACK_LEVEL,
            "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [period]},
        },
    }


def station_max_profile(
    *, ocpp_version: str, limit_a: Decimal | float, number_phases: int, now: datetime | None = None
) -> dict[str, object]:
    """SetChargingProfile payload limiting the whole station to ``limit_a`` per phase (no expiry).

    ``limit_a`` is the station's total: the sum of what its connectors may draw on a phase.
    Absolute from ``now`` when given (``startSchedule``), else from when the charger receives it.
    It replaces the previous one (fixed id and stack level); a charger applies the lowest of it
    and any TxProfile or default. Raises ``ValueError`` for a negative limit.
    """
    if Decimal(str(limit_a)) < 0:
        raise ValueError(f"limit_a: {limit_a} A is negative")
    period = {"startPeriod": 0, "limit": _limit(limit_a), "numberPhases": number_phases}
    schedule: dict[str, object] = {"chargingRateUnit": "A", "chargingSchedulePeriod": [period]}
    if now is not None:
        schedule["startSchedule"] = _iso(now)
    if ocpp_version == OCPP201:
        return {
            "evseId": 0,
            "chargingProfile": {
                "id": STATION_MAX_PROFILE_ID,
                "stackLevel": STATION_MAX_STACK_LEVEL,
                "chargingProfilePurpose": "ChargingStationMaxProfile",
                "chargingProfileKind": "Absolute",
                "chargingSchedule": [{"id": STATION_MAX_PROFILE_ID, **schedule}],
            },
        }
    return {
        "connectorId": 0,
        "csChargingProfiles": {
            "chargingProfileId": STATION_MAX_PROFILE_ID,
            "stackLevel": STATION_MAX_STACK_LEVEL,
            "chargingProfilePurpose": "ChargePointMaxProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": schedule,
        },
    }
