"""Creating and hashing API tokens. Schema: tenant."""

import hashlib
import secrets
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.utils import timezone

from evplatform.permissions import CHANGE_LIMITS, has_role
from tenants.accounts.models import ApiToken, Role, User

TOKEN_BYTES = 32
# The longest a token may last, by its user's role: a leaked token of a role that may change
# more is a greater risk, but an integration that changes limits needs a longer-lived one.
TOKEN_MAX_DAYS: dict[str, int] = {Role.ADMIN: 365, Role.ENERGY_MANAGER: 180, Role.FINANCE: 90, Role.SITE_VIEWER: 90}


def token_max_days(user: User) -> int:
    """Days a token of ``user`` may last at most (the shortest cap for an unknown role)."""
    return TOKEN_MAX_DAYS.get(user.role, min(TOKEN_MAX_DAYS.values()))


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_token_create(
    *, user: User, name: str, expires_at: datetime | None = None, scope: str = ApiToken.Scope.FULL
) -> tuple[ApiToken, str]:
    """A new token for ``user``; returns the row and the raw token, which is never stored.

    ``expires_at`` is at most ``TOKEN_MAX_DAYS`` of the user's role ahead (that long if None).
    ``scope`` (``ApiToken.Scope``) narrows the token below the user's role. A meter-write token
    posts readings that steer balancing, so only a user who may change limits can make one.
    """
    if scope not in ApiToken.Scope.values:
        raise ValidationError({"scope": f"{scope!r} is not one of {', '.join(ApiToken.Scope.values)}"})
    if scope == ApiToken.Scope.METER_WRITE and not has_role(user, CHANGE_LIMITS):
        raise ValidationError({"scope": "a meter-write token needs the energy manager or admin role"})
    max_days = token_max_days(user)
    now = timezone.now()
    if expires_at is None:
        expires_at = now + timedelta(days=max_days)
    elif expires_at > now + timedelta(days=max_days, minutes=1):
        role = dict(Role.choices).get(user.role, user.role)
        raise ValidationError({"expires_at": f"a token of the {role} role may last at most {max_days} days"})
    raw = "evp_" + secrets.token_urlsafe(TOKEN_BYTES)
    token = ApiToken.objects.create(
        user=user,
        name=name.strip()[:100] or "API token",
        prefix=raw[:8],
        key_hash=token_hash(raw),
        expires_at=expires_at,
        scope=scope,
    )
    return token, raw
