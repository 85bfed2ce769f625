"""Template context every portal page needs: the organisation's name and what the user may do."""

from typing import Any

from django.db import connection
from django.http import HttpRequest

from evplatform.permissions import (
    CHANGE_LIMITS,
    CHARGER_ACTIONS,
    MANAGE_REPORTS,
    MANAGE_USERS,
    READ_AUDIT,
    READ_REPORTS,
    has_role,
)


def portal(request: HttpRequest) -> dict[str, Any]:
    tenant = getattr(connection, "tenant", None)
    user = getattr(request, "user", None)
    return {
        "tenant_name": getattr(tenant, "name", "")
        if getattr(tenant, "schema_name", "public") != "public"
        else "Platform",
        "perms_ui": {
            "change_limits": has_role(user, CHANGE_LIMITS),
            "charger_actions": has_role(user, CHARGER_ACTIONS),
            "read_reports": has_role(user, READ_REPORTS),
            "manage_reports": has_role(user, MANAGE_REPORTS),
            "manage_users": has_role(user, MANAGE_USERS),
            "read_audit": has_role(user, READ_AUDIT),
        },
    }
