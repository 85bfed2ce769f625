"""Operator actions on a charger from the portal or the API: stop, availability, reset.

Schema: tenant. Each becomes one OCPP call in the charger's own protocol version, goes through
the gateway's command path (recorded as a ``ChargerCommand``) and is audited with who asked.
"""

from dataclasses import dataclass

from django.core.exceptions import ValidationError

from chargepoint.commands import Command, CommandResult, command_send
from chargepoint.models import ChargingSession, ChargingStation
from tenants.accounts.services import audit_record

ACTION_TIMEOUT_S = 15.0
ACTIONS = ("remote_stop", "make_available", "make_unavailable", "soft_reset", "hard_reset")


@dataclass(frozen=True)
class ActionOutcome:
    action: str
    result: CommandResult


def _command(station: ChargingStation, action: str, connector_id: int) -> Command:
    v201 = station.ocpp_version == "2.0.1"
    if action == "remote_stop":
        session = (
            ChargingSession.objects.filter(
                station=station, connector__connector_id=connector_id, stopped_at__isnull=True
            )
            .order_by("-started_at")
            .first()
        )
        if session is None:
            raise ValidationError({"connector_id": f"no charging session is open on connector {connector_id}"})
        if v201:
            return Command(station.charge_point_id, "RequestStopTransaction", {"transactionId": session.transaction_id})
        if not session.transaction_id.isdigit():
            raise ValidationError({"connector_id": "this session's transaction id is not an OCPP 1.6 integer"})
        return Command(station.charge_point_id, "RemoteStopTransaction", {"transactionId": int(session.transaction_id)})
    if action in ("make_available", "make_unavailable"):
        available = action == "make_available"
        if v201:
            payload: dict[str, object] = {"operationalStatus": "Operative" if available else "Inoperative"}
            if connector_id:
                payload["evse"] = {"id": connector_id}
            return Command(station.charge_point_id, "ChangeAvailability", payload)
        return Command(
            station.charge_point_id,
            "ChangeAvailability",
            {"connectorId": connector_id, "type": "Operative" if available else "Inoperative"},
        )
    if action in ("soft_reset", "hard_reset"):
        if v201:
            return Command(
                station.charge_point_id, "Reset", {"type": "OnIdle" if action == "soft_reset" else "Immediate"}
            )
        return Command(station.charge_point_id, "Reset", {"type": "Soft" if action == "soft_reset" else "Hard"})
    raise ValidationError({"action": f"unknown action {action!r}; use one of {', '.join(ACTIONS)}"})


def charger_action(*, station: ChargingStation, action: str, connector_id: int, actor: str) -> ActionOutcome:
    """Send an operator action to a charger and wait for its answer. Raises ValidationError."""
    if connector_id < 0 or (connector_id and not station.connectors.filter(connector_id=connector_id).exists()):
        raise ValidationError({"connector_id": f"{station.charge_point_id} has no connector {connector_id}"})
    command = _command(station, action, connector_id)
    result = command_send(command=command, timeout_s=ACTION_TIMEOUT_S)
    audit_record(
        actor=actor,
        action=action,
        object_type="charger",
        object_id=station.pk,
        label=station.charge_point_id,
        changes=[("result", "", result.status + (f": {result.error}" if result.error else ""))],
    )
    return ActionOutcome(action, result)
