"""Telling people and systems what happened: events, deliveries, preferences, endpoints. Schema: tenant.

``notification_emit`` is the one way in: an alert opening or clearing (``alert_notify``, called
by ``balancing.alerts``) and a stored monthly report (billing) go through it. It writes the
event and one delivery row per recipient and endpoint in the caller's transaction, and sends
them to the ``notifications`` queue once that transaction commits; the tasks try each delivery
with Celery's retries and back-off, counting every attempt on its row.
"""

import json
import logging
import smtplib
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from balancing.models import Site, SiteAlert, SiteGroup
from balancing.notifications import webhooks
from balancing.notifications.models import (
    EVENT_KIND_VALUES,
    DeliveryStatus,
    EmailDelivery,
    EventType,
    NotificationEvent,
    NotificationPreference,
    WebhookDelivery,
    WebhookEndpoint,
)
from balancing.notifications.routing import email_recipients, webhook_endpoints
from evplatform.services import active_schema, require_tenant_schema
from tenants.accounts.services import audit_record
from tenants.models import Tenant

logger = logging.getLogger(__name__)
MAX_SUBJECT_CHARS = 200
MAX_NAME_CHARS = 100


def _tenant() -> Tenant:
    return Tenant.objects.get(schema_name=active_schema())


def portal_link(path: str, *, tenant: Tenant | None = None) -> str:
    """An absolute link to a portal page of the active organisation (``PORTAL_URL`` on its primary domain)."""
    tenant = tenant or _tenant()
    domain = tenant.get_primary_domain()
    host = domain.domain if domain is not None else f"{tenant.slug}.localhost"
    return settings.PORTAL_URL.format(domain=host).rstrip("/") + path


def _site_ref(site: Site) -> dict[str, str]:
    return {"slug": site.slug, "name": site.name}


def notification_emit(
    *,
    kind: str,
    event_type: str,
    site_ids: Sequence[int],
    subject: str,
    body: str,
    data: dict[str, Any],
    link: str = "",
    alert: SiteAlert | None = None,
    endpoint: WebhookEndpoint | None = None,
    email: bool = True,
    now: datetime | None = None,
) -> NotificationEvent | None:
    """Tell everyone subscribed to ``kind`` at these sites: an email to each person, a POST to each endpoint.

    ``kind``: an alert kind (``SiteAlert.Kind``) or ``"report_ready"``; people and endpoints
    subscribe by kind. ``event_type``: ``EventType`` (``alert.opened``, ``alert.cleared``,
    ``report.ready``), the webhook's ``type``. ``site_ids``: the sites it is about (a person
    hears only of sites they may see; an endpoint with site groups only of those groups'
    sites). ``subject`` and ``body``: the email's subject and plain text (the site page link is
    part of the body). ``data``: what the webhook body carries besides the envelope (``id``,
    ``type``, ``created_at``, ``organisation``, ``site`` when it is about one site, ``sites``),
    e.g. ``{"alert": {...}}`` or ``{"report": {...}}``; JSON-serialisable (Decimals and dates
    are turned to strings). ``endpoint``: only this endpoint and nobody else (a test event).
    ``email`` False: webhooks only (the monthly report mails itself, with its files attached,
    to the same people ``email_recipients`` names).

    Runs in the caller's transaction: the event and its deliveries are written with what the
    caller writes and sent after it commits (nothing is sent for a rolled-back transaction).
    Returns the event, or None when nobody is to be told (then nothing is written).

    Billing, once a month's report is stored (``billing.report_mail.report_ready_notify``)::

        notification_emit(kind="report_ready", event_type="report.ready", site_ids=[...],
            subject="Savings report for May 2026 is ready", body="...", link=url, email=False,
            data={"report": {"month": "2026-05", "version": 1, "url": url}})
    """
    require_tenant_schema("notification_emit")
    if kind not in EVENT_KIND_VALUES and event_type != EventType.TEST:
        raise ValueError(f"unknown event kind {kind!r}; expected one of {', '.join(EVENT_KIND_VALUES)}")
    if event_type not in EventType.values:
        raise ValueError(f"unknown event type {event_type!r}; expected one of {', '.join(EventType.values)}")
    cleared = event_type == EventType.ALERT_CLEARED
    if endpoint is not None:
        recipients, endpoints = [], [endpoint]
    else:
        recipients = email_recipients(kind=kind, site_ids=site_ids, cleared=cleared) if email else []
        endpoints = webhook_endpoints(kind=kind, site_ids=site_ids, cleared=cleared)
    if not recipients and not endpoints:
        return None
    now = now or timezone.now()
    tenant = _tenant()
    sites = list(Site.objects.filter(pk__in=site_ids).order_by("name"))
    event_id = uuid.uuid4()
    payload = {
        "id": str(event_id),
        "type": event_type,
        "created_at": now.isoformat(),
        "organisation": tenant.slug,
        "site": _site_ref(sites[0]) if len(sites) == 1 else None,
        "sites": [_site_ref(site) for site in sites],
        **data,
    }
    event = NotificationEvent.objects.create(
        id=event_id,
        type=event_type,
        kind=kind,
        site=sites[0] if len(sites) == 1 else None,
        alert=alert,
        subject=subject[:MAX_SUBJECT_CHARS],
        body=body,
        link=link,
        payload=json.loads(json.dumps(payload, cls=DjangoJSONEncoder)),
        created_at=now,
    )
    emails = EmailDelivery.objects.bulk_create(
        [EmailDelivery(event=event, user=user, email=user.email, created_at=now) for user in recipients]
    )
    posts = WebhookDelivery.objects.bulk_create(
        [WebhookDelivery(event=event, endpoint=target, created_at=now) for target in endpoints]
    )
    email_ids = [str(d.pk) for d in emails]
    webhook_ids = [str(d.pk) for d in posts]
    transaction.on_commit(lambda: deliveries_send(email_ids=email_ids, webhook_ids=webhook_ids))
    return event


def deliveries_send(*, email_ids: Iterable[str], webhook_ids: Iterable[str]) -> None:
    """Queue one task per delivery (the ``notifications`` queue)."""
    from balancing.notifications.tasks import email_deliver, webhook_deliver  # the tasks call this module

    for delivery_id in email_ids:
        email_deliver.delay(delivery_id=delivery_id)
    for delivery_id in webhook_ids:
        webhook_deliver.delay(delivery_id=delivery_id)


# --- Alerts ----------------------------------------------------------------------------------


def _where(alert: SiteAlert) -> str:
    if alert.connector is not None:
        return f"{alert.connector.station.charge_point_id} connector {alert.connector.connector_id}"
    if alert.station is not None:
        return alert.station.charge_point_id
    return "the site"


def alert_notify(*, alert: SiteAlert, opened: bool) -> NotificationEvent | None:
    """Tell of an alert that just opened (a new condition) or cleared; never of a repeat of an open one."""
    site = alert.site
    title = alert.get_kind_display()
    where = _where(alert)
    link = portal_link(reverse("portal:site", args=[site.slug]))
    subject = f"{site.name}: {title} ({where})" if opened else f"{site.name}: resolved: {title} ({where})"
    when = alert.opened_at if opened else (alert.cleared_at or alert.last_seen_at)
    lines = [
        f"{title} at {site.name}." if opened else f"Resolved: {title} at {site.name}.",
        "",
        alert.detail,
        "",
        f"Where: {where}",
        f"{'Opened' if opened else 'Cleared'}: {when:%Y-%m-%d %H:%M:%S %Z}",
        f"Site page: {link}",
        "",
        f"You get this email because of your notification settings: {portal_link(reverse('portal:notifications'))}",
    ]
    data = {
        "alert": {
            "id": alert.pk,
            "kind": alert.kind,
            "title": title,
            "detail": alert.detail,
            "charger": alert.station.charge_point_id if alert.station is not None else None,
            "connector": alert.connector.connector_id if alert.connector is not None else None,
            "opened_at": alert.opened_at,
            "cleared_at": alert.cleared_at,
            "url": link,
        }
    }
    return notification_emit(
        kind=alert.kind,
        event_type=EventType.ALERT_OPENED if opened else EventType.ALERT_CLEARED,
        site_ids=[site.pk],
        subject=subject,
        body="\n".join(lines) + "\n",
        data=data,
        link=link,
        alert=alert,
    )


# --- Attempts (run by the tasks) -------------------------------------------------------------


def _attempt_record(
    delivery: EmailDelivery | WebhookDelivery, *, ok: bool, error: str, final: bool, now: datetime
) -> None:
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.last_error = error
    delivery.next_attempt_at = None
    if ok:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = now
    elif final:
        delivery.status = DeliveryStatus.FAILED
    delivery.save()


def email_delivery_attempt(*, delivery_id: str, final: bool) -> bool:
    """Send one email delivery once; True if it is done (sent now, or before, or gone)."""
    require_tenant_schema("email_delivery_attempt")
    delivery = EmailDelivery.objects.select_related("event").filter(pk=delivery_id).first()
    if delivery is None:
        logger.warning("email delivery %s: not found (deleted with its event?); nothing sent", delivery_id)
        return True
    if delivery.status != DeliveryStatus.PENDING:
        return True
    event = delivery.event
    message = EmailMessage(subject=event.subject, body=event.body, to=[delivery.email])
    message.extra_headers = {"X-EVP-Event": event.type, "X-EVP-Event-Id": str(event.pk)}
    error = ""
    try:
        message.send(fail_silently=False)
    except (smtplib.SMTPException, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}"[: webhooks.MAX_ERROR_CHARS]
    _attempt_record(delivery, ok=not error, error=error, final=final, now=timezone.now())
    return not error


def webhook_body(event: NotificationEvent) -> bytes:
    return json.dumps(event.payload, separators=(",", ":")).encode()


def webhook_delivery_attempt(*, delivery_id: str, final: bool) -> bool:
    """POST one webhook delivery once; True if it is done (a 2xx now, or before, or gone)."""
    require_tenant_schema("webhook_delivery_attempt")
    delivery = WebhookDelivery.objects.select_related("event", "endpoint").filter(pk=delivery_id).first()
    if delivery is None:
        logger.warning("webhook delivery %s: not found (deleted with its endpoint?); nothing sent", delivery_id)
        return True
    if delivery.status != DeliveryStatus.PENDING:
        return True
    endpoint = delivery.endpoint
    result = webhooks.webhook_post(
        url=endpoint.url,
        secret=webhooks.endpoint_secret(endpoint.secret_salt),
        body=webhook_body(delivery.event),
        event_type=delivery.event.type,
        delivery_id=str(delivery.pk),
    )
    delivery.response_code = result.status_code
    _attempt_record(delivery, ok=result.delivered, error=result.error, final=final, now=timezone.now())
    return result.delivered


def delivery_retry_note(*, webhook: bool, delivery_id: str, countdown_s: float) -> None:
    """Write when the next attempt of a delivery is due (the task's retry was just scheduled)."""
    model = WebhookDelivery if webhook else EmailDelivery
    due = timezone.now() + timedelta(seconds=countdown_s)
    model.objects.filter(pk=delivery_id, status=DeliveryStatus.PENDING).update(next_attempt_at=due)


# --- Preferences and endpoints (portal pages; audited) ---------------------------------------


def _kinds_clean(kinds: Iterable[str], field: str) -> list[str]:
    chosen = list(dict.fromkeys(kinds))
    unknown = [kind for kind in chosen if kind not in EVENT_KIND_VALUES]
    if unknown:
        raise ValidationError({field: f"unknown kind(s) {', '.join(unknown)}; expected {', '.join(EVENT_KIND_VALUES)}"})
    return [kind for kind in EVENT_KIND_VALUES if kind in chosen]


def _names(objects: Iterable[Any]) -> str:
    return ", ".join(sorted(str(o.slug) for o in objects)) or "none"


def preference_save(
    *,
    user: Any,
    email_kinds: Iterable[str],
    email_cleared: bool,
    all_sites: bool,
    group_ids: Iterable[int],
    site_ids: Iterable[int],
    actor: str,
) -> NotificationPreference:
    """Store a person's choice of kinds and sites; groups and sites outside their reach are refused by name."""
    require_tenant_schema("preference_save")
    from balancing.access import access_for_user

    kinds = _kinds_clean(email_kinds, "email_kinds")
    access = access_for_user(user)
    reach = access.site_ids()
    sites = list(access.sites().filter(pk__in=list(site_ids)))
    wanted_site_ids = set(site_ids)
    if len(sites) != len(wanted_site_ids):
        raise ValidationError({"sites": "a chosen site does not exist or is not one you may see"})
    groups = list(SiteGroup.objects.filter(pk__in=list(group_ids)).prefetch_related("sites"))
    if len(groups) != len(set(group_ids)) or (
        reach is not None and any(not {s.pk for s in g.sites.all()} & reach for g in groups)
    ):
        raise ValidationError({"groups": "a chosen group does not exist or holds none of the sites you may see"})
    if not all_sites and not sites and not groups and kinds:
        raise ValidationError({"sites": "choose at least one site or group, or every site"})
    with transaction.atomic():
        preference, created = NotificationPreference.objects.select_for_update().get_or_create(user=user)
        before = (
            None
            if created
            else {
                "email_kinds": ", ".join(preference.email_kinds) or "none",
                "email_cleared": preference.email_cleared,
                "all_sites": preference.all_sites,
                "groups": _names(preference.groups.all()),
                "sites": _names(preference.sites.all()),
            }
        )
        preference.email_kinds = kinds
        preference.email_cleared = email_cleared
        preference.all_sites = all_sites
        preference.save()
        preference.groups.set([] if all_sites else groups)
        preference.sites.set([] if all_sites else sites)
        after = {
            "email_kinds": ", ".join(kinds) or "none",
            "email_cleared": email_cleared,
            "all_sites": all_sites,
            "groups": _names([] if all_sites else groups),
            "sites": _names([] if all_sites else sites),
        }
        changes = [(k, None if before is None else before[k], v) for k, v in after.items()]
        changes = [c for c in changes if before is None or str(c[1]) != str(c[2])]
        if changes:
            audit_record(
                actor=actor,
                action="create" if created else "update",
                object_type="notification-preference",
                object_id=preference.pk,
                label=user.email,
                changes=changes,
            )
    return preference


def _groups_get(group_ids: Iterable[int]) -> list[SiteGroup]:
    ids = set(group_ids)
    groups = list(SiteGroup.objects.filter(pk__in=ids))
    if len(groups) != len(ids):
        raise ValidationError({"groups": "a chosen site group does not exist"})
    return groups


def webhook_endpoint_create(
    *,
    name: str,
    url: str,
    kinds: Iterable[str],
    send_cleared: bool,
    group_ids: Iterable[int],
    actor: str,
    now: datetime | None = None,
) -> tuple[WebhookEndpoint, str]:
    """Add an endpoint; returns it and its signing secret, which is shown once and never stored."""
    require_tenant_schema("webhook_endpoint_create")
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS:
        raise ValidationError({"name": f"give a name of 1 to {MAX_NAME_CHARS} characters"})
    url = webhooks.webhook_url_check(url)
    chosen = _kinds_clean(kinds, "kinds")
    groups = _groups_get(group_ids)
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(
            name=name,
            url=url,
            kinds=chosen,
            send_cleared=send_cleared,
            secret_salt=webhooks.secret_salt_new(),
            secret_rotated_at=now or timezone.now(),
            created_by=actor,
        )
        endpoint.groups.set(groups)
        audit_record(
            actor=actor,
            action="create",
            object_type="webhook",
            object_id=endpoint.pk,
            label=name,
            changes=[
                ("url", None, url),
                ("kinds", None, ", ".join(chosen) or "all"),
                ("send_cleared", None, send_cleared),
                ("groups", None, _names(groups) if groups else "all sites"),
            ],
        )
    return endpoint, webhooks.endpoint_secret(endpoint.secret_salt)


def webhook_endpoint_rotate(*, endpoint: WebhookEndpoint, actor: str, now: datetime | None = None) -> str:
    """A new signing secret (a new salt): the old one stops working at once. Returns the new secret, shown once."""
    require_tenant_schema("webhook_endpoint_rotate")
    endpoint.secret_salt = webhooks.secret_salt_new()
    endpoint.secret_rotated_at = now or timezone.now()
    endpoint.save(update_fields=["secret_salt", "secret_rotated_at"])
    audit_record(
        actor=actor,
        action="update",
        object_type="webhook",
        object_id=endpoint.pk,
        label=endpoint.name,
        changes=[("secret", "(previous)", f"rotated {endpoint.secret_rotated_at:%Y-%m-%d %H:%M:%S %Z}")],
    )
    return webhooks.endpoint_secret(endpoint.secret_salt)


def webhook_endpoint_set_active(*, endpoint: WebhookEndpoint, is_active: bool, actor: str) -> bool:
    """Pause or resume an endpoint; True if that changed anything."""
    require_tenant_schema("webhook_endpoint_set_active")
    if endpoint.is_active == is_active:
        return False
    endpoint.is_active = is_active
    endpoint.save(update_fields=["is_active"])
    audit_record(
        actor=actor,
        action="update",
        object_type="webhook",
        object_id=endpoint.pk,
        label=endpoint.name,
        changes=[("is_active", not is_active, is_active)],
    )
    return True


def webhook_test_send(*, endpoint: WebhookEndpoint, actor: str) -> NotificationEvent:
    """A ``test`` event to this endpoint alone, delivered like any other (see the deliveries log)."""
    require_tenant_schema("webhook_test_send")
    event = notification_emit(
        kind="test",
        event_type=EventType.TEST,
        site_ids=[],
        subject=f"Test event for {endpoint.name}",
        body="",
        data={"test": {"endpoint": endpoint.name, "requested_by": actor}},
        endpoint=endpoint,
    )
    if event is None:
        raise RuntimeError("a test event always has its endpoint to go to")
    return event
