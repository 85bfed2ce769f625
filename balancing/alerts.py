"""Site alerts and what each charger model does with our profiles. Schema: tenant.

An alert is one open row per condition (site, charger, connector, kind): raising it again only
refreshes ``last_seen_at`` and its text, so a condition that lasts an hour is one alert, not
sixty; it is audited when it opens and when it clears, and told (email, webhooks:
``balancing.notifications``) once when it opens and once when it clears, never on a refresh.
The compliance record per charger model (vendor, model, firmware from BootNotification) is
learnt from every site of the organisation.
"""

import logging
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F

from balancing.models import ChargerModelCompliance, Site, SiteAlert
from chargepoint.models import ChargingStation, Connector
from evplatform.services import require_tenant_schema
from tenants.accounts.services import audit_record

ACTOR = "system:balancing"
logger = logging.getLogger(__name__)


def _notify(alert: SiteAlert, *, opened: bool) -> None:
    """Tell subscribers; a fault in telling never costs the alert (or the caller's batch) itself."""
    from balancing.notifications.services import alert_notify

    try:
        with transaction.atomic():
            alert_notify(alert=alert, opened=opened)
    except Exception:
        logger.exception("alert %s (%s): could not queue its notifications", alert.pk, alert.kind)


def _label(site: Site, station: ChargingStation | None, connector: Connector | None) -> str:
    where = str(connector) if connector is not None else (station.charge_point_id if station is not None else "")
    return f"{site.name} / {where}" if where else site.name


def alert_raise(
    *,
    site: Site,
    kind: str,
    detail: str,
    now: datetime,
    station: ChargingStation | None = None,
    connector: Connector | None = None,
) -> SiteAlert:
    """Open the alert for this condition, or refresh the one already open."""
    require_tenant_schema("alert_raise")
    if connector is not None and station is None:
        station = connector.station
    filters = {"site": site, "station": station, "connector": connector, "kind": kind, "cleared_at__isnull": True}
    updated = SiteAlert.objects.filter(**filters).update(last_seen_at=now, detail=detail)
    if updated:
        return SiteAlert.objects.get(**filters)
    alert = SiteAlert(
        site=site,
        station=station,
        connector=connector,
        kind=kind,
        detail=detail,
        vendor=station.vendor if station else "",
        model=station.model if station else "",
        firmware_version=station.firmware_version if station else "",
        opened_at=now,
        last_seen_at=now,
    )
    try:
        with transaction.atomic():
            alert.save()
    except IntegrityError:  # raised meanwhile by another run: refresh that one
        SiteAlert.objects.filter(**filters).update(last_seen_at=now, detail=detail)
        return SiteAlert.objects.get(**filters)
    charger = " ".join(x for x in (alert.vendor, alert.model, alert.firmware_version) if x)
    audit_record(
        actor=ACTOR,
        action="alert",
        object_type="alert",
        object_id=alert.pk,
        label=_label(site, station, connector),
        changes=[(kind, None, detail + (f" [{charger}]" if charger else ""))],
    )
    _notify(alert, opened=True)
    return alert


def alert_clear(
    *,
    site: Site,
    kind: str,
    now: datetime,
    station: ChargingStation | None = None,
    connector: Connector | None = None,
    why: str = "cleared",
) -> bool:
    """Close the open alert for this condition, if there is one; True if one was closed."""
    require_tenant_schema("alert_clear")
    if connector is not None and station is None:
        station = connector.station
    alert = SiteAlert.objects.filter(
        site=site, station=station, connector=connector, kind=kind, cleared_at__isnull=True
    ).first()
    if alert is None:
        return False
    alert.cleared_at = now
    alert.save(update_fields=["cleared_at"])
    audit_record(
        actor=ACTOR,
        action="alert-cleared",
        object_type="alert",
        object_id=alert.pk,
        label=_label(site, station, connector),
        changes=[(kind, alert.detail, why)],
    )
    _notify(alert, opened=False)
    return True


def compliance_get(*, station: ChargingStation) -> ChargerModelCompliance:
    """The record of the station's model, created empty on first use."""
    require_tenant_schema("compliance_get")
    record, _ = ChargerModelCompliance.objects.get_or_create(
        vendor=station.vendor[:50], model=station.model[:50], firmware_version=station.firmware_version[:50]
    )
    return record


def compliance_note(
    *,
    station: ChargingStation,
    accepted: int = 0,
    rejected: int = 0,
    ignored: int = 0,
    reaction_s: float | None = None,
) -> ChargerModelCompliance:
    """Add what one charger of this model just did: answers, an ignored limit, a reaction time."""
    record = compliance_get(station=station)
    changes = {
        "profiles_accepted": F("profiles_accepted") + accepted,
        "profiles_rejected": F("profiles_rejected") + rejected,
        "accepted_ignored": F("accepted_ignored") + ignored,
    }
    if reaction_s is not None:
        changes["reactions"] = F("reactions") + 1
        changes["reaction_s_total"] = F("reaction_s_total") + max(0.0, reaction_s)
    ChargerModelCompliance.objects.filter(pk=record.pk).update(**changes)
    record.refresh_from_db()
    return record
