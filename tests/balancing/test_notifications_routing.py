"""Who hears of an alert: preferences within each person's reach, endpoints by kind and group, once per condition."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.exceptions import ValidationError

from balancing.access import access_for_user
from balancing.alerts import alert_clear, alert_raise
from balancing.models import SiteAlert, SiteGrant
from balancing.notifications.models import (
    EmailDelivery,
    EventType,
    NotificationEvent,
    NotificationPreference,
    WebhookDelivery,
)
from balancing.notifications.routing import default_kinds, email_recipients
from balancing.notifications.services import notification_emit, preference_save, webhook_endpoint_create
from tenants.accounts.models import AuditEvent, Role
from tests.balancing.conftest import person

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
OVERDRAW = SiteAlert.Kind.OVERDRAW


def emailed(site_kind: str = OVERDRAW, **filters) -> set[str]:
    return set(EmailDelivery.objects.filter(event__kind=site_kind, **filters).values_list("email", flat=True))


def test_by_default_admins_and_energy_managers_of_the_site_get_alerts_and_finance_does_not(campus) -> None:
    group, north, _, library = campus
    person("em.org@x.test", Role.ENERGY_MANAGER)
    person("finance@x.test", Role.FINANCE)
    person("viewer@x.test", Role.SITE_VIEWER)
    scoped = person("em.engineering@x.test")
    SiteGrant.objects.create(user=scoped, role=Role.ENERGY_MANAGER, group=group)

    north_mails = {u.email for u in email_recipients(kind=OVERDRAW, site_ids=[north.pk])}
    library_mails = {u.email for u in email_recipients(kind=OVERDRAW, site_ids=[library.pk])}
    report_mails = {u.email for u in email_recipients(kind="report_ready", site_ids=[library.pk])}

    assert {"em.org@x.test", "em.engineering@x.test"} <= north_mails
    assert "finance@x.test" not in north_mails
    assert "viewer@x.test" not in north_mails
    assert "em.engineering@x.test" not in library_mails  # not its group
    assert "finance@x.test" in report_mails
    assert "em.org@x.test" not in report_mails


def test_a_preference_never_reaches_past_the_sites_the_person_may_see(campus) -> None:
    group, north, _, library = campus
    scoped = person("viewer.engineering@x.test")
    SiteGrant.objects.create(user=scoped, role=Role.SITE_VIEWER, group=group)
    preference = NotificationPreference.objects.create(user=scoped, email_kinds=[OVERDRAW], all_sites=False)
    preference.sites.add(library)  # written past the service, which refuses it: still never told
    preference.groups.add(group)

    assert scoped in email_recipients(kind=OVERDRAW, site_ids=[north.pk])
    assert scoped not in email_recipients(kind=OVERDRAW, site_ids=[library.pk])


def test_a_preference_for_chosen_sites_only_and_without_a_kind_is_respected(campus) -> None:
    _, north, south, _ = campus
    admin = person("admin.narrow@x.test", Role.ADMIN)
    preference_save(
        user=admin,
        email_kinds=[SiteAlert.Kind.OFFLINE],
        email_cleared=False,
        all_sites=False,
        group_ids=[],
        site_ids=[south.pk],
        actor="admin.narrow@x.test",
    )

    assert admin not in email_recipients(kind=SiteAlert.Kind.OFFLINE, site_ids=[north.pk])
    assert admin in email_recipients(kind=SiteAlert.Kind.OFFLINE, site_ids=[south.pk])
    assert admin not in email_recipients(kind=OVERDRAW, site_ids=[south.pk])  # kind not chosen: no default either


def test_saving_a_preference_refuses_a_site_out_of_reach_and_audits_what_changed(campus) -> None:
    group, north, _, library = campus
    scoped = person("em.audit@x.test")
    SiteGrant.objects.create(user=scoped, role=Role.ENERGY_MANAGER, group=group)
    kwargs = {"user": scoped, "email_cleared": True, "all_sites": False, "group_ids": [], "actor": "em.audit@x.test"}

    with pytest.raises(ValidationError) as refused:
        preference_save(email_kinds=[OVERDRAW], site_ids=[library.pk], **kwargs)
    assert "sites" in refused.value.message_dict
    with pytest.raises(ValidationError) as unknown:
        preference_save(email_kinds=["coffee"], site_ids=[north.pk], **kwargs)
    assert "email_kinds" in unknown.value.message_dict
    assert not NotificationPreference.objects.filter(user=scoped).exists()

    preference_save(email_kinds=[OVERDRAW], site_ids=[north.pk], **kwargs)
    rows = AuditEvent.objects.filter(object_type="notification-preference", object_label="em.audit@x.test")
    assert {r.field: r.new_value for r in rows}.items() >= {
        "email_kinds": "overdraw",
        "sites": "north",
        "all_sites": "False",
    }.items()


def test_the_preference_page_starts_from_the_role_defaults(campus) -> None:
    assert default_kinds(access_for_user(person("fin@x.test", Role.FINANCE))) == ["report_ready"]
    manager_kinds = default_kinds(access_for_user(person("em@x.test", Role.ENERGY_MANAGER)))
    assert "faulted" in manager_kinds
    assert "report_ready" not in manager_kinds


def test_a_repeated_raise_tells_nobody_again_until_the_alert_clears_and_reopens(campus) -> None:
    _, north, _, _ = campus
    person("em.flood@x.test", Role.ENERGY_MANAGER)
    raise_ = {"site": north, "kind": OVERDRAW, "detail": "CP-1 draws 20 A of 16 A"}

    for minute in range(5):
        alert_raise(now=NOW + timedelta(minutes=minute), **raise_)
    assert EmailDelivery.objects.filter(email="em.flood@x.test").count() == 1

    alert_clear(site=north, kind=OVERDRAW, now=NOW + timedelta(minutes=6))
    assert EmailDelivery.objects.filter(email="em.flood@x.test").count() == 1  # clearings: not by default

    alert_raise(now=NOW + timedelta(minutes=7), **raise_)
    alert_raise(now=NOW + timedelta(minutes=8), **raise_)
    opened = EmailDelivery.objects.filter(email="em.flood@x.test", event__type=EventType.ALERT_OPENED)
    assert opened.count() == 2
    assert opened.values("event__alert").distinct().count() == 2  # one per condition, each its own alert


def test_a_clearing_is_told_to_those_who_asked_for_it_and_to_endpoints_that_send_cleared(campus) -> None:
    _, north, _, _ = campus
    manager = person("em.cleared@x.test", Role.ENERGY_MANAGER)
    preference_save(
        user=manager,
        email_kinds=[OVERDRAW],
        email_cleared=True,
        all_sites=True,
        group_ids=[],
        site_ids=[],
        actor="em.cleared@x.test",
    )
    quiet, _ = webhook_endpoint_create(
        name="quiet", url="https://127.0.0.1/q", kinds=[], send_cleared=False, group_ids=[], actor="a"
    )
    loud, _ = webhook_endpoint_create(
        name="loud", url="https://127.0.0.1/l", kinds=[OVERDRAW], send_cleared=True, group_ids=[], actor="a"
    )

    alert_raise(site=north, kind=OVERDRAW, detail="x", now=NOW)
    alert_clear(site=north, kind=OVERDRAW, now=NOW + timedelta(minutes=1))

    cleared = NotificationEvent.objects.get(type=EventType.ALERT_CLEARED)
    assert set(cleared.emails.values_list("email", flat=True)) == {"em.cleared@x.test"}
    assert set(cleared.webhooks.values_list("endpoint__name", flat=True)) == {"loud"}
    assert cleared.subject.startswith(f"{north.name}: resolved:")
    assert WebhookDelivery.objects.filter(endpoint=quiet, event__type=EventType.ALERT_OPENED).count() == 1
    assert WebhookDelivery.objects.filter(endpoint=loud).count() == 2


def test_an_endpoint_hears_only_its_kinds_and_its_groups_sites(campus) -> None:
    group, north, _, library = campus
    endpoint, _ = webhook_endpoint_create(
        name="eng-offline",
        url="https://127.0.0.1/h",
        kinds=[SiteAlert.Kind.OFFLINE],
        send_cleared=True,
        group_ids=[group.pk],
        actor="a",
    )

    alert_raise(site=north, kind=SiteAlert.Kind.OFFLINE, detail="CP-1 silent", now=NOW)
    alert_raise(site=library, kind=SiteAlert.Kind.OFFLINE, detail="CP-9 silent", now=NOW)
    alert_raise(site=north, kind=OVERDRAW, detail="CP-2 over", now=NOW)

    [delivery] = WebhookDelivery.objects.filter(endpoint=endpoint)
    payload = delivery.event.payload
    assert payload["type"] == "alert.opened"
    assert payload["site"] == {"slug": "north", "name": north.name}
    assert payload["alert"]["kind"] == "offline"
    assert payload["alert"]["detail"] == "CP-1 silent"
    assert payload["organisation"] == "alpha"
    assert payload["id"] == str(delivery.event.pk)
    assert payload["alert"]["url"].endswith("/sites/north/")


def test_an_inactive_endpoint_and_a_deactivated_person_hear_nothing(campus) -> None:
    _, north, _, _ = campus
    gone = person("gone@x.test", Role.ENERGY_MANAGER)
    gone.is_active = False
    gone.save()
    endpoint, _ = webhook_endpoint_create(
        name="paused", url="https://127.0.0.1/p", kinds=[], send_cleared=True, group_ids=[], actor="a"
    )
    endpoint.is_active = False
    endpoint.save()

    alert_raise(site=north, kind=OVERDRAW, detail="x", now=NOW)

    assert "gone@x.test" not in emailed()
    assert not WebhookDelivery.objects.filter(endpoint=endpoint).exists()


def test_deliveries_are_queued_only_once_the_transaction_commits(campus, django_capture_on_commit_callbacks) -> None:
    _, north, _, _ = campus
    person("em.commit@x.test", Role.ENERGY_MANAGER)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        alert_raise(site=north, kind=OVERDRAW, detail="x", now=NOW)

    assert len(callbacks) == 1
    assert EmailDelivery.objects.filter(email="em.commit@x.test", status="pending").count() == 1


def test_report_ready_goes_to_finance_of_the_sites_with_its_report_in_the_payload(campus) -> None:
    _, north, south, _ = campus
    person("finance.report@x.test", Role.FINANCE)

    event = notification_emit(
        kind="report_ready",
        event_type=EventType.REPORT_READY,
        site_ids=[north.pk, south.pk],
        subject="Savings report for April 2026 is ready",
        body="Download it from the portal.",
        data={"report": {"month": "2026-04", "version": 1}},
    )

    assert event is not None
    assert "finance.report@x.test" in set(event.emails.values_list("email", flat=True))
    assert event.payload["site"] is None
    assert {s["slug"] for s in event.payload["sites"]} == {"north", "south"}
    assert event.payload["report"] == {"month": "2026-04", "version": 1}


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown event kind"):
        notification_emit(kind="coffee", event_type="alert.opened", site_ids=[], subject="", body="", data={})
