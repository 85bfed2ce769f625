"""Liveness sweeps: chargers whose gateway went away without saying so are taken offline. Schema: tenant.

A gateway that dies sends no ``disconnected`` event. ``stations_offline_sweep`` takes offline
the chargers silent for several heartbeat intervals; ``stations_gateway_sweep`` those held by a
gateway instance whose heartbeat key expired in Redis, within seconds. Each affected site's
inputs changed (``chargepoint.listeners.site_inputs_changed``, once the sweep commits), like
after a ``disconnected`` event of the telemetry.
"""

import logging
import time
from datetime import datetime, timedelta

from django.db import transaction

from chargepoint.models import ChargingStation
from chargepoint.selectors import gateway_instances_gone, station_gateway_ids_online
from chargepoint.telemetry import TelemetryOutcome, rebalances_request
from evplatform.services import require_tenant_schema

logger = logging.getLogger("chargepoint.telemetry")
# A missing gateway heartbeat key is looked at again after this (s): twice the gateway's
# retry after a failed heartbeat (``chargepoint.gateway.server.HEARTBEAT_RETRY_S``).
GATEWAY_RECHECK_S = 2.0


def stations_offline_sweep(*, now: datetime, stale_after: timedelta) -> TelemetryOutcome:
    """Chargers silent for ``stale_after`` (a gateway died without saying so) go offline."""
    require_tenant_schema("stations_offline_sweep")
    outcome = TelemetryOutcome()
    with transaction.atomic():
        stale = list(
            ChargingStation.objects.select_for_update(skip_locked=True).filter(
                is_online=True, last_seen_at__lt=now - stale_after
            )
        )
        for station in stale:
            station.is_online = False
            station.gateway_id = ""
            outcome.rebalance.setdefault(station.site_id, f"{station.charge_point_id}: silent, taken offline")
        ChargingStation.objects.bulk_update(stale, ["is_online", "gateway_id"])
        outcome.applied = len(stale)
        if outcome.rebalance:
            reasons = dict(outcome.rebalance)
            transaction.on_commit(lambda: rebalances_request(reasons))
    return outcome


def stations_gateway_sweep() -> TelemetryOutcome:
    """Online chargers whose gateway instance is gone (its heartbeat key expired) go offline.

    A killed gateway says nothing, and its chargers may stay silent for minutes (their
    heartbeat interval) before the stale sweep would notice; its registry key expires within
    ``GATEWAY_REGISTRY_TTL_S``. Nothing changes while Redis cannot tell (see
    ``gateway_instances_gone``). Each affected site is rebalanced ("gateway <id> gone"): its
    offline chargers keep their last limit booked. A charger that reconnects elsewhere comes
    back online with its new connection's ``connected`` event; a live instance that had lost
    its key announces its chargers again.
    """
    require_tenant_schema("stations_gateway_sweep")
    outcome = TelemetryOutcome()
    holders = station_gateway_ids_online()
    gone = gateway_instances_gone(instance_ids=holders) if holders else None
    if gone:
        # A live instance whose heartbeat failed while Redis was away writes its key again within
        # a second of Redis answering: only what is still missing a moment later is gone.
        time.sleep(GATEWAY_RECHECK_S)
        again = gateway_instances_gone(instance_ids=gone)
        gone = None if again is None else gone & again
    if not gone:
        return outcome
    with transaction.atomic():
        # Re-checked on the locked rows: a charger that reconnected through a live instance meanwhile stays.
        stations = list(
            ChargingStation.objects.select_for_update(skip_locked=True).filter(is_online=True, gateway_id__in=gone)
        )
        for station in stations:
            outcome.rebalance.setdefault(station.site_id, f"gateway {station.gateway_id} gone")
            station.is_online = False
            station.gateway_id = ""
        ChargingStation.objects.bulk_update(stations, ["is_online", "gateway_id"])
        outcome.applied = len(stations)
        if outcome.rebalance:
            reasons = dict(outcome.rebalance)
            transaction.on_commit(lambda: rebalances_request(reasons))
    if stations:
        logger.warning(
            "gateway instance(s) %s gone: %d charger(s) taken offline", ", ".join(sorted(gone)), len(stations)
        )
    return outcome
