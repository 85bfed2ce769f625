"""The one interface through which balancing reaches chargers. Schema: tenant (callers).

``GatewayPusher`` sends through the gateway's command path (``chargepoint.commands``): the
Redis registry finds the gateway instance holding each charger's socket. Tests may stand in
another ``Pusher`` (a charger double); everything else in a run is real.

A batch waits at most ``BALANCING_PUSH_TIMEOUT_S`` (default 10 s) for the chargers' answers,
read when it is sent; an answer that does not come (a charger that is slow, or a reply lost
on its way through Redis) is a ``Timeout``, which the run books as not accepted.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings

from chargepoint.commands import Command, command_send_many


def push_timeout_s() -> float:
    """Seconds a batch of pushes waits for its answers (``BALANCING_PUSH_TIMEOUT_S``)."""
    return float(settings.BALANCING_PUSH_TIMEOUT_S)


@dataclass(frozen=True)
class PushRequest:
    charge_point_id: str
    action: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class PushAnswer:
    status: str  # "Accepted", "Rejected", "CallError", "Timeout", "Offline", ...
    error: str = ""

    @property
    def accepted(self) -> bool:
        return self.status == "Accepted"


class Pusher(Protocol):
    def send_many(self, requests: Sequence[PushRequest]) -> list[PushAnswer]:
        """Send all requests at once; answers in the same order."""
        ...


class GatewayPusher:
    """Pushes through the OCPP gateway's command path (``timeout_s``: the setting unless given)."""

    def __init__(self, timeout_s: float | None = None) -> None:
        self.timeout_s = timeout_s

    def send_many(self, requests: Sequence[PushRequest]) -> list[PushAnswer]:
        if not requests:
            return []
        results = command_send_many(
            commands=[Command(r.charge_point_id, r.action, r.payload) for r in requests],
            timeout_s=push_timeout_s() if self.timeout_s is None else self.timeout_s,
        )
        return [PushAnswer(result.status, result.error) for result in results]
