"""Creating and hashing API tokens. Schema: tenant."""

import hashlib
import secrets
from datetime import datetime

from django.core.exceptions import ValidationError

from evplatform.permissions import CHANGE_LIMITS, has_role
from tenants.accounts.models import ApiToken, User

TOKEN_BYTES = 32


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_token_create(
    *, user: User, name: str, expires_at: datetime | None = None, scope: str = ApiToken.Scope.FULL
) -> tuple[ApiToken, str]:
    """A new token for ``user``; returns the row and the raw token, which is never stored.

    ``scope`` (``ApiToken.Scope``) narrows the token below the user's role. A meter-write token
    posts readings that steer balancing, so only a user who may change limits can make one.
    """
    if scope not in ApiToken.Scope.values:
        raise ValidationError({"scope": f"{scope!r} is not one of {', '.join(ApiToken.Scope.values)}"})
    if scope == ApiToken.Scope.METER_WRITE and not has_role(user, CHANGE_LIMITS):
        raise ValidationError({"scope": "a meter-write token needs the energy manager or admin role"})
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
