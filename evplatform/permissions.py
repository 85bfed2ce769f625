"""Who may do what inside an organisation: one table used by portal views and the API.

Roles (tenants.accounts.models.Role): everyone signed in may read; load-management settings
and charger actions need the energy manager or admin role (NEC 750.30: changeable only by
qualified people); reports are for finance (and admins, energy managers may read them); users,
tokens and roles are the admin's.

A role is held on the whole organisation (``User.role``) or on site groups and sites
(``balancing.access``). What belongs to one site (its page, settings, chargers, API rows) asks
``balancing.access.site_for`` / ``evplatform.api_access``; ``has_role``, ``role_required`` and
``RoleForWrites`` here are for organisation-wide work (people, tokens, the audit log, imports)
and need the role on the whole organisation.
"""

from collections.abc import Callable, Iterable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from tenants.accounts.models import Role

CHANGE_LIMITS = frozenset({Role.ADMIN, Role.ENERGY_MANAGER})
CHARGER_ACTIONS = frozenset({Role.ADMIN, Role.ENERGY_MANAGER})
READ_REPORTS = frozenset({Role.ADMIN, Role.FINANCE, Role.ENERGY_MANAGER})
MANAGE_REPORTS = frozenset({Role.ADMIN, Role.FINANCE})
MANAGE_USERS = frozenset({Role.ADMIN})
READ_AUDIT = frozenset({Role.ADMIN, Role.ENERGY_MANAGER})
# Adding sites, circuits and chargers in bulk (chargepoint.onboarding): an organisation's admins.
IMPORT_FLEET = frozenset({Role.ADMIN})


def has_role(user: Any, roles: Iterable[str]) -> bool:
    """``user`` holds one of ``roles`` on the whole organisation (site grants do not count)."""
    return bool(user and user.is_authenticated and user.is_active and user.role and user.role in roles)


def actor_of(request: Any) -> str:
    """The email recorded in the audit log for whoever made this request."""
    return str(getattr(request.user, "email", "") or "anonymous")


def role_required(roles: Iterable[str]) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Portal view decorator: sign-in first, then 403 without one of ``roles`` on the whole organisation."""
    allowed = frozenset(roles)

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, allowed):
                raise PermissionDenied("Your role may not do this.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


class RoleForWrites(BasePermission):
    """API views of organisation-wide data: reads need one of ``read_roles`` (any role), writes one
    of ``write_roles``, on the whole organisation and with a token not limited to site groups.
    Views over rows of sites use ``evplatform.api_access.SiteScopedMixin`` instead."""

    message = "Your role may not change this."

    def has_permission(self, request: Request, view: Any) -> bool:
        from balancing.access import access_of

        if not (request.user and request.user.is_authenticated):
            return False
        roles = getattr(view, "read_roles", Role.values) if request.method in SAFE_METHODS else None
        return access_of(request).has_org_role(roles if roles is not None else getattr(view, "write_roles", ()))
