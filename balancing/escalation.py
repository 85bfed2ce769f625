"""Opt-in escalation for a charger that keeps drawing more than it was offered. Schema: tenant.

Booking an overdrawing charger at its measured draw keeps the site under its limit at the others'
expense; a site that must never trip, or whose other drivers must not pay for one bad charger,
can also act on it (``Site.overdraw_escalation``) once the overdraw has lasted
``Site.overdraw_escalation_after_s``:

- ``stop``: RemoteStopTransaction (OCPP 1.6) / RequestStopTransaction (2.0.1) of its session;
- ``unavailable``: ChangeAvailability Inoperative for that connector; with a session running the
  charger answers Scheduled and applies it when the session ends, so the car is not cut off but
  the connector takes no new car until an operator makes it available again.

Each episode of overdraw is acted on once: the open ``escalated`` alert of the connector is the
marker (opened after the episode began). The balancing run calls ``site_escalations_apply`` every
run with the connectors overdrawing now (an empty list included), which also closes the markers
of episodes that ended, so a later episode is acted on again.
"""

from datetime import datetime, timedelta

from django.core.exceptions import ValidationError

from balancing.alerts import ACTOR, alert_clear, alert_raise
from balancing.models import ConnectorLimit, Site, SiteAlert
from chargepoint.actions import charger_action
from chargepoint.models import ChargingSession, Connector
from evplatform.services import require_tenant_schema

ESCALATED = SiteAlert.Kind.ESCALATED


def _ocpp_action(connector: Connector, escalation: str) -> tuple[str, str]:
    """The operator action to send and the OCPP call it becomes, for the alert's text."""
    v201 = connector.station.ocpp_version == "2.0.1"
    if escalation == Site.Escalation.STOP:
        return "remote_stop", "RequestStopTransaction" if v201 else "RemoteStopTransaction"
    return "make_unavailable", "ChangeAvailability Inoperative"


def _overdraw_text(connector: Connector, since: datetime, now: datetime) -> str:
    limit = ConnectorLimit.objects.filter(connector=connector).first()
    seconds = int((now - since).total_seconds())
    if limit is not None and limit.overdraw_a is not None and limit.limit_a is not None:
        return f"{connector} drew {limit.overdraw_a} A over its {limit.limit_a} A limit for {seconds} s"
    return f"{connector} drew more than it was offered for {seconds} s"


def site_escalations_apply(
    *,
    site: Site,
    overdrawing: list[tuple[Connector, ChargingSession | None, datetime]],
    now: datetime,
) -> list[str]:
    """Act on the connectors that have overdrawn for the site's escalation delay; once each.

    ``overdrawing``: every connector of the site drawing more than it was offered now, with its
    session and when its overdraw began. Returns one line per action taken (what was sent to
    which charger and its answer), each also an ``escalated`` alert and an audit entry.
    """
    require_tenant_schema("site_escalations_apply")
    markers = {
        alert.connector_id: alert
        for alert in SiteAlert.objects.filter(
            site=site, kind=ESCALATED, cleared_at__isnull=True, connector__isnull=False
        ).select_related("connector", "station")
    }
    now_overdrawing = {connector.pk for connector, _session, _since in overdrawing}
    for connector_id, alert in markers.items():
        if connector_id not in now_overdrawing:
            alert_clear(site=site, kind=ESCALATED, now=now, connector=alert.connector, why="overdraw ended")
    if site.overdraw_escalation == Site.Escalation.NONE:
        return []
    delay = timedelta(seconds=site.overdraw_escalation_after_s)
    lines: list[str] = []
    for connector, session, since in overdrawing:
        if now - since < delay:
            continue
        marker = markers.get(connector.pk)
        if marker is not None:
            if marker.opened_at >= since:
                continue  # this episode was acted on already
            alert_clear(site=site, kind=ESCALATED, now=now, connector=connector, why="a new overdraw episode")
        if site.overdraw_escalation == Site.Escalation.STOP and session is None:
            continue  # nothing to stop; the overdraw is booked and alerted by the run
        action, call = _ocpp_action(connector, site.overdraw_escalation)
        try:
            outcome = charger_action(
                station=connector.station, action=action, connector_id=connector.connector_id, actor=ACTOR
            )
            answer = outcome.result.status + (f" ({outcome.result.error})" if outcome.result.error else "")
        except ValidationError as exc:
            answer = "not sent: " + " ".join(exc.messages)
        if answer == "Scheduled":
            answer += ": the connector becomes unavailable when the session ends"
        detail = f"{_overdraw_text(connector, since, now)}: {call} sent, answer {answer}"
        alert_raise(site=site, kind=ESCALATED, detail=detail, now=now, connector=connector)
        lines.append(detail)
    return lines
