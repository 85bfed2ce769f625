"""Reads of chargers, allowed idTags and command records. Schema: tenant."""

from datetime import datetime

from django.db.models import Q

from balancing.models import Site
from chargepoint.models import ChargerCommand, ChargingStation, IdTag

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


def command_list(*, charge_point_id: str, limit: int = 50) -> list[ChargerCommand]:
    return list(ChargerCommand.objects.filter(charge_point_id=charge_point_id)[:limit])
