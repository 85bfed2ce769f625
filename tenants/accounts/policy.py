"""The organisation's sign-in policy applied to one person (SignInPolicy). Schema: tenant.

Only tenant schemas have these tables: in ``public`` (platform staff) no policy applies.
"""

import time

from django.db import connection
from django.http import HttpRequest
from django_tenants.utils import get_public_schema_name

from tenants.accounts.models import Enforcement, IdentityProvider, SignInPolicy, User, applies_to


def in_tenant_schema() -> bool:
    return getattr(connection, "schema_name", get_public_schema_name()) != get_public_schema_name()


def tenant_name() -> str:
    """The active organisation's name ("" in public)."""
    return str(getattr(getattr(connection, "tenant", None), "name", "")) if in_tenant_schema() else ""


def current_policy() -> SignInPolicy:
    return SignInPolicy.current() if in_tenant_schema() else SignInPolicy()


def active_providers() -> list[IdentityProvider]:
    """The identity providers offered on the sign-in page (none in public)."""
    return list(IdentityProvider.objects.filter(is_active=True)) if in_tenant_schema() else []


def sso_message(providers: list[IdentityProvider]) -> str:
    names = " or ".join(f"'Sign in with {p.name}'" for p in providers) or "your organisation's identity provider"
    return f"This organisation signs in with single sign-on (SSO) only: use {names}."


def password_refused_for_everyone(policy: SignInPolicy) -> bool:
    """True when nobody may sign in with a password, so the password need not even be checked."""
    return policy.require_sso == Enforcement.EVERYONE


def password_refusal(user: User, policy: SignInPolicy) -> str | None:
    """Why this person may not sign in with a password, or None when they may."""
    if applies_to(policy.require_sso, user):
        return sso_message(active_providers())
    return None


def second_factor_required(user: User, policy: SignInPolicy) -> bool:
    """Whether this person must have a TOTP app or a WebAuthn key before using the portal."""
    return applies_to(policy.require_mfa, user)


def has_second_factor(user: User) -> bool:
    from allauth.mfa.models import Authenticator
    from allauth.mfa.utils import is_mfa_enabled

    return is_mfa_enabled(user, [Authenticator.Type.TOTP, Authenticator.Type.WEBAUTHN])


def signed_in_recently(request: HttpRequest, user: User) -> bool:
    """Whether this session signed the person in (password, SSO or second factor) within allauth's
    re-authentication window (ACCOUNT_REAUTHENTICATION_TIMEOUT, 5 minutes)."""
    from allauth.account import app_settings
    from allauth.account.internal.flows.login import get_authentication_records

    records = get_authentication_records(request, user)
    return bool(records) and time.time() - records[-1]["at"] < app_settings.REAUTHENTICATION_TIMEOUT
