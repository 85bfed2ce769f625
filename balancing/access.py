"""Which sites a person (or an API token) may see, and which roles they hold on each. Schema: tenant.

A role is held on the whole organisation (the user's own ``role``) or on a site group or a
single site (``SiteGrant``). What someone may do on a site is the union of the three. Pages and
the API treat a site outside someone's reach as absent (404), never as forbidden (403): a
building manager learns nothing of the buildings next door. A token can be narrower than its
user (read-only, one site group), never wider.

Organisation-wide work (users, tokens, the audit trail, bulk imports) needs a role on the whole
organisation: ``Access.has_org_role``.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest

from balancing.models import Site, SiteGrant, SiteGroup

_REQUEST_CACHE_ATTR = "_evp_access"


@dataclass(frozen=True)
class Access:
    """What one request may reach: every site (``whole_org``) or the sites in ``site_roles``."""

    whole_org: bool = False
    org_role: str = ""
    site_roles: dict[int, frozenset[str]] = field(default_factory=dict)
    read_only: bool = False
    # A token limited to one group: the sites it may reach, whatever its user's reach.
    token_site_ids: frozenset[int] | None = None

    def site_ids(self) -> set[int] | None:
        """The ids of the sites in reach, or None for every site of the organisation."""
        if self.whole_org and self.token_site_ids is None:
            return None
        if self.whole_org:
            return set(self.token_site_ids or ())
        ids = set(self.site_roles)
        if self.token_site_ids is not None:
            ids &= self.token_site_ids
        return ids

    def sites(self, queryset: QuerySet[Site] | None = None) -> QuerySet[Site]:
        qs = Site.objects.all() if queryset is None else queryset
        ids = self.site_ids()
        return qs if ids is None else qs.filter(pk__in=ids)

    def filter(self, queryset: QuerySet[Any], site_field: str = "site") -> QuerySet[Any]:
        """``queryset`` narrowed to rows whose ``site_field`` (a path to a Site) is in reach."""
        ids = self.site_ids()
        return queryset if ids is None else queryset.filter(**{f"{site_field}__in": ids})

    def sees(self, site_id: int | None) -> bool:
        if site_id is None:
            return False
        ids = self.site_ids()
        return ids is None or site_id in ids

    def roles_on(self, site_id: int) -> frozenset[str]:
        if not self.sees(site_id):
            return frozenset()
        held = set(self.site_roles.get(site_id, ()))
        if self.whole_org and self.org_role:
            held.add(self.org_role)
        return frozenset(held)

    def can(self, roles: Iterable[str], site_id: int | None, *, write: bool = True) -> bool:
        """Holds one of ``roles`` on the site (a read-only token never writes)."""
        if site_id is None or (write and self.read_only):
            return False
        return bool(self.roles_on(site_id) & frozenset(roles))

    def can_anywhere(self, roles: Iterable[str]) -> bool:
        wanted = frozenset(roles)
        if self.whole_org and self.org_role in wanted:
            return True
        ids = self.site_ids()
        return any(held & wanted for site_id, held in self.site_roles.items() if ids is None or site_id in ids)

    def has_org_role(self, roles: Iterable[str]) -> bool:
        """A role on the whole organisation, with no token narrowing it to some sites."""
        return self.whole_org and self.token_site_ids is None and self.org_role in frozenset(roles)


NO_ACCESS = Access()


def _grants_by_site(user_id: int) -> dict[int, frozenset[str]]:
    roles: dict[int, set[str]] = {}
    grants = SiteGrant.objects.filter(user_id=user_id).values_list("role", "site_id", "group_id")
    group_roles: dict[int, set[str]] = {}
    for role, site_id, group_id in grants:
        if site_id is not None:
            roles.setdefault(site_id, set()).add(role)
        else:
            group_roles.setdefault(group_id, set()).add(role)
    if group_roles:
        members = SiteGroup.sites.through.objects.filter(sitegroup_id__in=group_roles)
        for group_id, site_id in members.values_list("sitegroup_id", "site_id"):
            roles.setdefault(site_id, set()).update(group_roles[group_id])
    return {site_id: frozenset(held) for site_id, held in roles.items()}


def access_for_user(user: Any) -> Access:
    """The reach of a signed-in person (no token): their organisation role plus their grants."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return NO_ACCESS
    return Access(whole_org=bool(user.role), org_role=user.role or "", site_roles=_grants_by_site(user.pk))


def access_of(request: HttpRequest) -> Access:
    """The reach of this request (cached on it), narrowed by its API token's scope and group."""
    cached = getattr(request, _REQUEST_CACHE_ATTR, None)
    if cached is not None:
        return cached
    access = access_for_user(getattr(request, "user", None))
    token = getattr(request, "auth", None)
    if access is not NO_ACCESS and token is not None and hasattr(token, "scope"):
        read_only = token.scope == "read"
        token_sites = None
        group_ids = list(
            SiteGroup.api_tokens.through.objects.filter(apitoken_id=token.pk).values_list("sitegroup_id", flat=True)
        )
        if group_ids:
            token_sites = frozenset(
                SiteGroup.sites.through.objects.filter(sitegroup_id__in=group_ids).values_list("site_id", flat=True)
            )
        access = Access(
            whole_org=access.whole_org,
            org_role=access.org_role,
            site_roles=access.site_roles,
            read_only=read_only,
            token_site_ids=token_sites,
        )
    setattr(request, _REQUEST_CACHE_ATTR, access)
    return access


def site_ids_of_user(user: Any) -> set[int] | None:
    return access_for_user(user).site_ids()


def site_for(request: HttpRequest, slug: str, roles: Iterable[str] | None = None, *, write: bool = True) -> Site:
    """The site ``slug`` if this request may see it (else 404), holding one of ``roles`` (else 403)."""
    access = access_of(request)
    site = access.sites().filter(slug=slug).first()
    if site is None:
        raise Http404("No such site.")
    if roles is not None and not access.can(roles, site.pk, write=write):
        raise PermissionDenied("Your role on this site may not do this.")
    return site


def users_with_role(site_ids: Iterable[int], roles: Iterable[str]) -> QuerySet[Any]:
    """Active people holding one of ``roles`` on at least one of the sites: on the whole
    organisation, on a group holding the site, or on the site itself."""
    wanted = list(roles)
    ids = list(site_ids)
    user_model = get_user_model()
    reach = Q(role__in=wanted)
    if ids:
        reach |= Q(site_grants__role__in=wanted, site_grants__site_id__in=ids)
        reach |= Q(site_grants__role__in=wanted, site_grants__group__sites__in=ids)
    return user_model.objects.filter(reach, is_active=True).distinct().order_by("email")
