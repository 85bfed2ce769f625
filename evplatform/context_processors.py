"""Template context every portal page needs: the organisation's name and what the user may do.

Links to site pages show for a role on any site in reach (the pages then check the site's own
role); the reports page shows for a report role on any site (each report is narrowed to the sites
the reader reaches); organisation-wide pages (users, import, audit, regenerating reports) need
the role on the whole organisation, as their views do.
"""

from typing import Any

from django.db import connection
from django.http import HttpRequest

from evplatform.permissions import (
    CHANGE_LIMITS,
    CHARGER_ACTIONS,
    IMPORT_FLEET,
    MANAGE_REPORTS,
    MANAGE_USERS,
    READ_AUDIT,
    READ_REPORTS,
    has_role,
)

NOTHING = {
    "change_limits": False,
    "charger_actions": False,
    "read_reports": False,
    "manage_reports": False,
    "manage_users": False,
    "import_fleet": False,
    "read_audit": False,
}


def _perms(request: HttpRequest) -> dict[str, bool]:
    from balancing.access import access_of

    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return NOTHING
    access = access_of(request)
    return {
        "change_limits": access.can_anywhere(CHANGE_LIMITS),
        "charger_actions": access.can_anywhere(CHARGER_ACTIONS),
        "read_reports": access.can_anywhere(READ_REPORTS),
        "manage_reports": has_role(user, MANAGE_REPORTS),
        "manage_users": access.has_org_role(MANAGE_USERS),
        "import_fleet": access.has_org_role(IMPORT_FLEET),
        "read_audit": access.has_org_role(READ_AUDIT),
    }


def portal(request: HttpRequest) -> dict[str, Any]:
    tenant = getattr(connection, "tenant", None)
    in_tenant = getattr(tenant, "schema_name", "public") != "public"
    return {
        "tenant_name": getattr(tenant, "name", "") if in_tenant else "Platform",
        # The public schema has no sites (nor grants): the platform console shows no portal links.
        "perms_ui": _perms(request) if in_tenant else NOTHING,
    }
