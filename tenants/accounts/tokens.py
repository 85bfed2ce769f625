"""Creating and hashing API tokens. Schema: tenant.

A token reaches at most what its user reaches: the roles on the whole organisation or granted
on site groups and sites (the domain's, asked through ``tenants.accounts.hooks``). It may be
narrower: read only, meter readings only, or limited to site groups. A user whose roles are only
granted on groups or sites must limit each token to groups within its reach, so a later grant
never widens an old token.
"""

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from evplatform.permissions import CHANGE_LIMITS
from tenants.accounts.hooks import account_hooks
from tenants.accounts.models import ApiToken, Role, User

TOKEN_BYTES = 32
# The longest a token may last, by its user's role: a leaked token of a role that may change
# more is a greater risk, but an integration that changes limits needs a longer-lived one.
TOKEN_MAX_DAYS: dict[str, int] = {Role.ADMIN: 365, Role.ENERGY_MANAGER: 180, Role.FINANCE: 90, Role.SITE_VIEWER: 90}


def _roles_held(user: User) -> set[str]:
    """Every role ``user`` holds: on the whole organisation, on a site group or on a site."""
    held = {user.role} if user.role else set()
    return held | account_hooks().roles_granted(user)


def token_max_days(user: User) -> int:
    """Days a token of ``user`` may last at most: the longest of the roles it holds anywhere
    (the shortest cap when it holds none)."""
    days = [TOKEN_MAX_DAYS[role] for role in _roles_held(user) if role in TOKEN_MAX_DAYS]
    return max(days, default=min(TOKEN_MAX_DAYS.values()))


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_token_create(
    *,
    user: User,
    name: str,
    expires_at: datetime | None = None,
    scope: str = ApiToken.Scope.FULL,
    site_groups: Iterable[Any] = (),
) -> tuple[ApiToken, str]:
    """A new token for ``user``; returns the row and the raw token, which is never stored.

    ``expires_at`` is at most ``token_max_days`` ahead (that long if None). ``scope``
    (``ApiToken.Scope``) narrows the token below the user's roles. A meter-write token posts
    readings that steer balancing, so only a user who may change limits somewhere can make one.
    ``site_groups`` (``TokenReach.site_groups``) limit the token to their sites: each must be
    within the user's reach, and a user without a role on the whole organisation must give one.
    """
    if scope not in ApiToken.Scope.values:
        raise ValidationError({"scope": f"{scope!r} is not one of {', '.join(ApiToken.Scope.values)}"})
    reach = account_hooks().token_reach(user)
    if scope == ApiToken.Scope.METER_WRITE and not reach.can_anywhere(CHANGE_LIMITS):
        raise ValidationError({"scope": "a meter-write token needs the energy manager or admin role"})
    groups = list(site_groups)
    allowed = set() if reach.site_groups is None else set(reach.site_groups.values_list("pk", flat=True))
    outside = [group for group in groups if group.pk not in allowed]
    if outside:
        names = ", ".join(sorted(group.name for group in outside))
        raise ValidationError({"site_groups": f"not within your reach: {names}"})
    if not groups and not reach.whole_org:
        raise ValidationError({"site_groups": "limit the token to one or more of your site groups"})
    max_days = token_max_days(user)
    now = timezone.now()
    if expires_at is None:
        expires_at = now + timedelta(days=max_days)
    elif expires_at > now + timedelta(days=max_days, minutes=1):
        whose = f"the {dict(Role.choices).get(user.role, user.role)} role" if user.role else "your roles"
        raise ValidationError({"expires_at": f"a token of {whose} may last at most {max_days} days"})
    raw = "evp_" + secrets.token_urlsafe(TOKEN_BYTES)
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user,
            name=name.strip()[:100] or "API token",
            prefix=raw[:8],
            key_hash=token_hash(raw),
            expires_at=expires_at,
            scope=scope,
        )
        for group in groups:
            group.api_tokens.add(token)
    return token, raw
