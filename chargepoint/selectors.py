"""Reads of chargers, allowed idTags and command records. Schema: tenant.

``gateway_instances_live`` and ``gateway_instances_gone`` read the gateway registry in Redis (no schema).
"""

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Max, Q, QuerySet

from balancing.access import Access
from balancing.models import Site
from balancing.selectors import DateBin
from chargepoint.gateway import keys
from chargepoint.models import ChargerCommand, ChargingSession, ChargingStation, Connector, IdTag, MeterReading
from evplatform.redis import REDIS_ERRORS, get_redis, redis_outage

logger = logging.getLogger(__name__)

ACCEPTED = "Accepted"
BLOCKED = "Blocked"
EXPIRED = "Expired"
INVALID = "Invalid"


def idtag_status(*, site_slug: str, id_tag: str, now: datetime) -> str:
    """OCPP authorization status of ``id_tag`` at a site: Accepted, Blocked, Expired or Invalid.

    A free-vend site accepts any tag (shared workplace and residential chargers); otherwise
    the tag must be on the organisation's list, for this site or for every site.
    """
    site = Site.objects.filter(slug=site_slug).only("id", "free_vend").first()
    if site is None:
        return INVALID
    if site.free_vend:
        return ACCEPTED
    tags = list(IdTag.objects.filter(Q(site=site) | Q(site__isnull=True), id_tag=id_tag))
    if not tags:
        return INVALID
    # A site-specific entry wins over an organisation-wide one.
    tag = sorted(tags, key=lambda t: t.site_id is None)[0]
    if not tag.is_active:
        return BLOCKED
    if tag.expires_at is not None and tag.expires_at <= now:
        return EXPIRED
    return ACCEPTED


def station_find(*, charge_point_id: str) -> ChargingStation | None:
    return ChargingStation.objects.filter(charge_point_id__iexact=charge_point_id).first()


def stations_by_id(*, charge_point_ids: list[str]) -> dict[str, ChargingStation]:
    """Stations by their exact charge point id (what the gateway sends is the registered id)."""
    return {s.charge_point_id: s for s in ChargingStation.objects.filter(charge_point_id__in=charge_point_ids)}


def station_in_reach(*, access: Access, charge_point_id: str) -> ChargingStation | None:
    """The charger (with its site and circuit) if its site is in ``access``'s reach."""
    stations = access.filter(ChargingStation.objects.select_related("site", "circuit"), "site")
    return stations.filter(charge_point_id=charge_point_id).first()


def station_connectors(*, station: ChargingStation) -> QuerySet[Connector]:
    return station.connectors.all()


def station_sessions(*, station: ChargingStation, limit: int = 20) -> QuerySet[ChargingSession]:
    """The charger's latest sessions, newest first."""
    return ChargingSession.objects.filter(station=station).order_by("-started_at")[:limit]


CURRENT_STEP = timedelta(minutes=1)


def station_current_series(*, station: ChargingStation, since: datetime) -> list[dict[str, Any]]:
    """The charger's current since ``since`` as chart rows (``time``, ``phase``, ``A``), oldest first:
    the highest total and per-phase current per minute and connector (the main meter aside).

    Aggregated in PostgreSQL over the station's key range (station, time): at most one point a
    minute a series however often the charger reports. The connector is named in the series
    (``1 L2``) only where the charger has several; an empty series is left out.
    """
    buckets = (
        MeterReading.objects.filter(station=station, sampled_at__gte=since, connector_no__gt=0)
        .annotate(at=DateBin(CURRENT_STEP, "sampled_at"))
        .values("connector_no", "at")
        .annotate(total=Max("current_a"), l1=Max("current_l1_a"), l2=Max("current_l2_a"), l3=Max("current_l3_a"))
        .order_by("at", "connector_no")
    )
    points: list[dict[str, Any]] = [dict(point) for point in buckets]
    several = len({point["connector_no"] for point in points}) > 1
    rows = []
    for point in points:
        for phase, key in (("total", "total"), ("L1", "l1"), ("L2", "l2"), ("L3", "l3")):
            if point[key] is not None:
                series = f"{point['connector_no']} {phase}" if several else phase
                rows.append({"time": point["at"].isoformat(), "phase": series, "A": round(point[key], 2)})
    return rows


def command_list(*, charge_point_id: str, limit: int = 50) -> list[ChargerCommand]:
    return list(ChargerCommand.objects.filter(charge_point_id=charge_point_id)[:limit])


def station_gateway_ids_online() -> set[str]:
    """The gateway instances holding this tenant's online chargers (as their last connection said)."""
    return set(
        ChargingStation.objects.filter(is_online=True)
        .exclude(gateway_id="")
        .values_list("gateway_id", flat=True)
        .distinct()
    )


def gateway_instances_live(*, redis: Any, instance_ids: set[str]) -> set[str]:
    """Those of ``instance_ids`` whose heartbeat key (``keys.instance_key``) exists; Redis's errors pass."""
    if not instance_ids:
        return set()
    ordered = sorted(instance_ids)
    with redis.pipeline(transaction=False) as pipe:
        for instance_id in ordered:
            pipe.exists(keys.instance_key(instance_id))
        alive = pipe.execute()
    return {i for i, ok in zip(ordered, alive, strict=True) if ok}


def gateway_instances_gone(*, instance_ids: set[str]) -> set[str] | None:
    """Those of ``instance_ids`` whose heartbeat key (``keys.instance_key``) has expired.

    None when Redis cannot tell: it did not answer (which says nothing about the gateways),
    or it restarted, or came back to this process, less than a registry TTL ago (the live
    instances may not have announced themselves again yet).
    """
    if not instance_ids:
        return set()
    redis = get_redis()
    ttl_s = settings.GATEWAY_REGISTRY_TTL_S
    try:
        uptime_s = int(redis.info("server").get("uptime_in_seconds", 0))
        live = gateway_instances_live(redis=redis, instance_ids=instance_ids)
    except REDIS_ERRORS as exc:
        redis_outage.failed(exc, "gateway liveness is not judged")
        return None
    redis_outage.answered()
    if uptime_s < ttl_s or redis_outage.recovered_within(ttl_s):
        logger.info("Redis was away less than %d s ago: gateway liveness not judged yet", ttl_s)
        return None
    return instance_ids - live
