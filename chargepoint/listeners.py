"""What the charger app reports to the apps that act on it: named events and their listeners.

Schema: whichever the sender runs in (the events carry rows of the tenant's schema).

The charger app registers chargers and applies their telemetry; what follows from that (a
balancing run, a fail-safe sized again, a site alert, a site meter reading, a resync) is the
balancing app's business, and balancing imports the charger app everywhere. So the charger app
does not call balancing: it sends one of the events below, and balancing connects its functions
to them when Django starts (``balancing.apps.BalancingConfig.ready``). Without a listener an
event does nothing.

Listeners are called at once, in the sender's transaction and in the order they were connected;
an exception in one reaches the sender (a fail-safe that refuses a charger refuses its
registration). What must wait for the commit (a rebalance request) defers itself.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, ParamSpec

from balancing.models import Site
from chargepoint.models import ChargingStation, Connector

P = ParamSpec("P")


class Event(Generic[P]):
    """One named event: the callbacks connected to it take the event's keyword arguments."""

    def __init__(self, name: str, doc: str | None = None) -> None:
        self.name = name
        self.__doc__ = doc
        self._callbacks: list[Callable[P, object]] = []

    def __repr__(self) -> str:
        return f"<Event {self.name}: {len(self._callbacks)} listener(s)>"

    @property
    def callbacks(self) -> tuple[Callable[P, object], ...]:
        return tuple(self._callbacks)

    def connect(self, callback: Callable[P, object]) -> None:
        """Call ``callback`` on every send from now on; connecting it again changes nothing."""
        if callback not in self._callbacks:
            self._callbacks.append(callback)

    def disconnect(self, callback: Callable[P, object]) -> None:
        """Stop calling ``callback``; a callback that was not connected is ignored."""
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def send(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Call every connected callback with these arguments, in the order they were connected."""
        for callback in list(self._callbacks):
            callback(*args, **kwargs)


def event(signature: Callable[P, None]) -> Event[P]:
    """Declare an event by a function without a body: its name, docstring and keyword arguments."""
    return Event(signature.__name__, signature.__doc__)


@event
def site_inputs_changed(*, site_id: int, reason: str) -> None:
    """Something a site's balancing run reads changed (a charger online, a session, a state, a limit).

    ``reason`` says what, for the run's record. Sent inside the change's transaction (or after
    it committed); a rebalance is asked for once it commits.
    """


@event
def site_chargers_changed(*, site: Site, actor: str, strict: bool) -> None:
    """A charger was added to the site, moved away from it, re-rated, or reported a new connector.

    ``strict``: the change may still be refused (a listener raises ``ValidationError``, and the
    registration is rolled back); False for a change nobody can refuse (a connector a charger
    reported), which is then only alerted on.
    """


@event
def station_fault_raised(*, station: ChargingStation, connector: Connector | None, detail: str, now: datetime) -> None:
    """A connector (or, with ``connector`` None, the whole station) reports Faulted; ``detail`` says what."""


@event
def station_fault_cleared(*, station: ChargingStation, connector: Connector | None, why: str, now: datetime) -> None:
    """A connector (or the station) reports something other than Faulted; ``why`` names its state."""


@event
def meter_samples_arrived(*, site: Site, samples: list[dict[str, Any]], now: datetime) -> None:
    """A site meter's MeterValues (connector 0): the gateway's normalised samples, not stored as charger readings."""


@event
def station_reconnected(*, station_id: int) -> None:
    """A charger is back on a new connection after an earlier one (not its first connection)."""
