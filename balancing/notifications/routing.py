"""Who hears of an event: people by email and the organisation's webhook endpoints. Schema: tenant.

A person hears only of sites they may see (``balancing.access.access_for_user``), whatever
their preference says. Without a preference of their own they get the defaults: alerts of the
sites where they are an admin or energy manager, monthly reports where they are in finance; no
"cleared" mails.
"""

from collections.abc import Iterable
from typing import Any

from django.db.models import Q

from balancing.access import Access, access_for_user, users_with_role
from balancing.models import SiteGroup
from balancing.notifications.models import (
    EVENT_KIND_VALUES,
    REPORT_READY,
    NotificationPreference,
    WebhookEndpoint,
)
from tenants.accounts.models import Role

ALERT_ROLES = frozenset({Role.ADMIN, Role.ENERGY_MANAGER})
REPORT_ROLES = frozenset({Role.FINANCE})


def default_roles(kind: str) -> frozenset[str]:
    """The roles that get this kind by email when they have not chosen for themselves."""
    return REPORT_ROLES if kind == REPORT_READY else ALERT_ROLES


def default_kinds(access: Access) -> list[str]:
    """The kinds a person with this reach gets by default (what their preference page starts from)."""
    return [kind for kind in EVENT_KIND_VALUES if access.can_anywhere(default_roles(kind))]


def preference_site_ids(preference: NotificationPreference, access: Access) -> set[int] | None:
    """The sites a preference covers, within the person's reach; None = every site of the organisation."""
    reach = access.site_ids()
    if preference.all_sites:
        return reach
    chosen = set(preference.sites.values_list("pk", flat=True))
    chosen |= set(
        SiteGroup.sites.through.objects.filter(sitegroup__in=preference.groups.all()).values_list("site_id", flat=True)
    )
    return chosen if reach is None else chosen & reach


def email_recipients(*, kind: str, site_ids: Iterable[int], cleared: bool = False) -> list[Any]:
    """Active people to email about an event of ``kind`` at these sites, by email address."""
    sites = set(site_ids)
    if not sites:
        return []
    chosen: list[Any] = []
    with_preference = NotificationPreference.objects.filter(user__is_active=True).select_related("user")
    wanted = with_preference.filter(email_kinds__contains=[kind])
    if cleared:
        wanted = wanted.filter(email_cleared=True)
    for preference in wanted:
        covered = preference_site_ids(preference, access_for_user(preference.user))
        if covered is None or covered & sites:
            chosen.append(preference.user)
    if not cleared:
        defaults = users_with_role(sites, default_roles(kind)).exclude(
            pk__in=NotificationPreference.objects.values("user_id")
        )
        for user in defaults:
            access = access_for_user(user)
            if any(access.can(default_roles(kind), site_id, write=False) for site_id in sites):
                chosen.append(user)
    by_email = {user.email.lower(): user for user in chosen if user.email}
    return [by_email[email] for email in sorted(by_email)]


def webhook_endpoints(*, kind: str, site_ids: Iterable[int], cleared: bool = False) -> list[WebhookEndpoint]:
    """Active endpoints subscribed to ``kind`` (and to clearings, for a clearing) covering one of the sites."""
    sites = set(site_ids)
    endpoints = WebhookEndpoint.objects.filter(is_active=True).filter(Q(kinds=[]) | Q(kinds__contains=[kind]))
    if cleared:
        endpoints = endpoints.filter(send_cleared=True)
    chosen = []
    for endpoint in endpoints.prefetch_related("groups__sites"):
        groups = list(endpoint.groups.all())
        if not groups or any(site.pk in sites for group in groups for site in group.sites.all()):
            chosen.append(endpoint)
    return chosen
