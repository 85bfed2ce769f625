"""What balancing does when the charger app reports something (``chargepoint.listeners``). Schema: tenant.

The charger app registers chargers and applies their telemetry, but balancing imports it
everywhere, so it cannot call balancing back: it sends events, and ``receivers_connect``
(called by ``balancing.apps.BalancingConfig.ready``) connects balancing's answers to them:

- ``site_inputs_changed``: a rebalance request (``site_rebalance_request``, after the commit);
- ``site_chargers_changed``: the site's fail-safe sized again (``site_failsafe_refresh``);
- ``station_fault_raised`` / ``station_fault_cleared``: the charger's ``faulted`` site alert;
- ``meter_samples_arrived``: a site meter reading from OCPP (``site_meter_record_samples``);
- ``station_reconnected``: a resync of the charger (``station_resync_request``).
"""

from datetime import datetime

from balancing.alerts import alert_clear, alert_raise
from balancing.dispatch import site_rebalance_request
from balancing.failsafe import site_failsafe_refresh
from balancing.meter import site_meter_record_samples
from balancing.models import SiteAlert
from balancing.resync import station_resync_request
from chargepoint import listeners
from chargepoint.models import ChargingStation, Connector


def station_fault_raise(*, station: ChargingStation, connector: Connector | None, detail: str, now: datetime) -> None:
    """Open the charger's (or connector's) ``faulted`` alert, or refresh the one already open."""
    alert_raise(
        site=station.site, kind=SiteAlert.Kind.FAULTED, detail=detail, now=now, station=station, connector=connector
    )


def station_fault_clear(*, station: ChargingStation, connector: Connector | None, why: str, now: datetime) -> None:
    """Close the charger's (or connector's) open ``faulted`` alert, if there is one."""
    alert_clear(site=station.site, kind=SiteAlert.Kind.FAULTED, now=now, station=station, connector=connector, why=why)


def station_reconnected_resync(*, station_id: int) -> None:
    """A charger back after an earlier connection is asked what it does (at most once a minute)."""
    station_resync_request(station_id=station_id, reason="reconnected")


def receivers_connect() -> None:
    """Connect balancing to the charger app's events (connecting twice changes nothing)."""
    listeners.site_inputs_changed.connect(site_rebalance_request)
    listeners.site_chargers_changed.connect(site_failsafe_refresh)
    listeners.station_fault_raised.connect(station_fault_raise)
    listeners.station_fault_cleared.connect(station_fault_clear)
    listeners.meter_samples_arrived.connect(site_meter_record_samples)
    listeners.station_reconnected.connect(station_reconnected_resync)
