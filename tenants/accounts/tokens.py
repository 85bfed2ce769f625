"""Creating and hashing API tokens. Schema: tenant."""

import hashlib
import secrets
from datetime import datetime

from tenants.accounts.models import ApiToken, User

TOKEN_BYTES = 32


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_token_create(*, user: User, name: str, expires_at: datetime | None = None) -> tuple[ApiToken, str]:
    """A new token for ``user``; returns the row and the raw token, which is never stored."""
    raw = "evp_" + secrets.token_urlsafe(TOKEN_BYTES)
    token = ApiToken.objects.create(
        user=user,
        name=name.strip()[:100] or "API token",
        prefix=raw[:8],
        key_hash=token_hash(raw),
        expires_at=expires_at,
    )
    return token, raw
