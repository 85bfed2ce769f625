"""The REST API side of the site-scoped access model (``balancing.access``). Schema: tenant.

One mixin for every view whose rows belong to a site: its queryset reaches only the request's
sites (anything else is a 404, as if absent), reads need a role on some site in reach, and a
write needs one of the view's ``write_roles`` on the row's own site (a 403 there). A site named
in a request body (``ReachableSiteField``) is looked up among the sites in reach and, for a write,
must be one the request may change: a site out of reach is a 400 "does not exist" naming the
field, as an unknown one is (the URL exists; the body is what names nothing), one in reach without
the role a 403. Every write endpoint taking a site in its body follows this rule.
"""

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.models import QuerySet
from django.http import Http404
from rest_framework.exceptions import PermissionDenied
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from balancing.access import access_of
from balancing.models import Site
from evplatform.api_plumbing import StrictSlugRelatedField
from tenants.accounts.models import Role


class SiteRoleForWrites(BasePermission):
    """Reads: a role on at least one site in reach; writes: one of ``write_roles`` somewhere
    (the request), then on the object's own site (each object); outside reach: 404."""

    message = "Your role on this site may not change this."

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        access = access_of(request)
        if request.method in SAFE_METHODS:
            return access.can_anywhere(getattr(view, "read_roles", Role.values))
        return not access.read_only and access.can_anywhere(getattr(view, "write_roles", ()))

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        access = access_of(request)
        site_id = view.site_id_of(obj)
        if not access.sees(site_id):
            raise Http404("Not found.")
        if request.method in SAFE_METHODS:
            return access.can(getattr(view, "read_roles", Role.values), site_id, write=False)
        return access.can(getattr(view, "write_roles", ()), site_id)


def site_write_check(request: Request, site_id: int | None, roles: Any) -> None:
    """A row of site ``site_id`` that a view found by itself (an upsert's stored row) may be
    changed by this request: else 404 (site out of reach) or 403 (no role there), as
    ``SiteRoleForWrites`` answers for the rows a ``SiteScopedMixin`` view looks up."""
    access = access_of(request)
    if not access.sees(site_id):
        raise Http404("Not found.")
    if not access.can(roles, site_id):
        raise PermissionDenied("Your role on this site may not change this.")


class SiteScopedMixin(GenericAPIView):
    """A DRF view over rows of sites. ``site_field``: the ORM path from a row to its ``Site``
    (``"pk"`` for sites themselves). Every queryset the view filters (list and object lookups)
    is narrowed to the sites of the request, so an endpoint cannot forget it."""

    site_field: str = "site"
    permission_classes = [SiteRoleForWrites]

    def filter_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return self.reachable(super().filter_queryset(queryset))

    def reachable(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return access_of(self.request).filter(queryset, self.site_field)

    def site_id_of(self, obj: Any) -> int | None:
        if self.site_field == "pk":
            return int(obj.pk)
        *path, last = self.site_field.split("__")
        for name in path:
            obj = getattr(obj, name, None)
        return getattr(obj, f"{last}_id", None)

    def require_role_on(self, site: Site, roles: Any = None) -> None:
        """403 unless the request holds one of ``roles`` (the view's ``write_roles``) on ``site``."""
        wanted = getattr(self, "write_roles", ()) if roles is None else roles
        if not access_of(self.request).can(wanted, site.pk):
            raise PermissionDenied("Your role on this site may not change this.")


class ReachableSiteField(StrictSlugRelatedField):
    """A site named by its slug in a request body: only sites in reach exist (a 400 "does not exist"
    otherwise, the same as for an unknown slug); on a write, the request must hold one of
    ``write_roles`` on it (403). The serializer needs the request in its context
    (``get_serializer`` passes it; ``Serializer(data=..., context={"request": request})`` else)."""

    def __init__(self, *, write_roles: Any, **kwargs: Any) -> None:
        self.write_roles = frozenset(write_roles)
        kwargs.setdefault("slug_field", "slug")
        if not kwargs.get("read_only"):
            kwargs.setdefault("queryset", Site.objects.all())
        super().__init__(**kwargs)

    def get_queryset(self) -> QuerySet[Site]:
        request = self.context.get("request")
        queryset = Site.objects.all()
        return access_of(request).sites(queryset) if request is not None else queryset.none()

    def to_internal_value(self, data: Any) -> Site:
        request = self.context.get("request")
        if request is None:  # without it no site is in reach: say so rather than "does not exist"
            raise ImproperlyConfigured("ReachableSiteField needs the request in the serializer's context")
        site: Site = super().to_internal_value(data)
        if request.method not in SAFE_METHODS and not access_of(request).can(self.write_roles, site.pk):
            raise PermissionDenied(f"Your role on site {site.slug!r} may not change this.")
        return site
