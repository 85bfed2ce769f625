"""What an identity provider says about a person, and the role its groups give them. Schema: tenant.

Pure functions over the claims allauth stores (``SocialAccount.extra_data``: the ID token's and
the userinfo endpoint's claims) and over an ``IdentityProvider`` row; the allauth adapters
(``tenants.accounts.adapters``) call them and the services that write.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from tenants.accounts.models import IdentityProvider, Role

# A person in several mapped groups gets the first of these they qualify for.
ROLE_PRECEDENCE: tuple[str, ...] = (Role.ADMIN, Role.ENERGY_MANAGER, Role.FINANCE, Role.SITE_VIEWER)
PROVIDER_TYPE = "openid_connect"


@dataclass(frozen=True)
class Claims:
    email: str
    email_verified: bool
    name: str
    groups: frozenset[str]


def claims_of(extra_data: Mapping[str, Any], *, groups_claim: str) -> Claims:
    """The person's email, name and groups; userinfo wins over the ID token where both say.

    ``groups_claim`` may hold a list of names or one name (Keycloak, Okta, Entra ID send lists).
    """
    merged: dict[str, Any] = {}
    for part in ("id_token", "userinfo"):
        value = extra_data.get(part)
        if isinstance(value, Mapping):
            merged.update(value)
    if not merged:  # allauth before 65.11 stored the claims flat
        merged = dict(extra_data)
    raw_groups = merged.get(groups_claim) or []
    if isinstance(raw_groups, str):
        raw_groups = [raw_groups]
    verified = merged.get("email_verified")
    return Claims(
        email=str(merged.get("email") or "").strip().lower(),
        email_verified=verified is True or (isinstance(verified, str) and verified.lower() == "true"),
        name=str(merged.get("name") or "").strip()[:200],
        groups=frozenset(str(group) for group in raw_groups if isinstance(group, str | int)),
    )


@dataclass(frozen=True)
class Assignment:
    """What an IdP's groups give a person: a role on the whole organisation ("" for none) and
    roles on site groups, as (site group slug, role) pairs."""

    org_role: str
    group_grants: frozenset[tuple[str, str]]


def assignment_for_groups(
    *, group_roles: Mapping[str, Any], groups: Iterable[str], default_role: str
) -> Assignment | None:
    """The roles these IdP groups map to; ``default_role`` (organisation-wide) when they map to
    nothing; None (refuse) when that is blank too.

    A mapping's value is a role (on the whole organisation) or ``{"role": ..., "site_group": slug}``
    (on that site group's sites). Of several organisation-wide roles the strongest wins.
    """
    org_roles: set[str] = set()
    grants: set[tuple[str, str]] = set()
    for group in groups:
        target = group_roles.get(group)
        if isinstance(target, str):
            org_roles.add(target)
        elif isinstance(target, Mapping):
            grants.add((str(target["site_group"]), str(target["role"])))
    org_role = next((role for role in ROLE_PRECEDENCE if role in org_roles), "")
    if not org_role and not grants:
        org_role = default_role
    return Assignment(org_role=org_role, group_grants=frozenset(grants)) if org_role or grants else None


def manages_group_grants(group_roles: Mapping[str, Any]) -> bool:
    """Whether sign-ins through this IdP set a person's site-group roles (it maps some group to one);
    otherwise the grants an admin gave are left alone."""
    return any(isinstance(target, Mapping) for target in group_roles.values())


def group_roles_errors(mapping: object) -> list[str]:
    """What is wrong with a group -> role mapping, one message per bad entry (empty when valid)."""
    if not isinstance(mapping, dict):
        return ['Give a JSON object of group name to role, e.g. {"ev-admins": "admin"}.']
    errors = []
    for group, target in mapping.items():
        if isinstance(target, dict):
            role, site_group = target.get("role"), target.get("site_group")
            if set(target) != {"role", "site_group"} or not isinstance(site_group, str) or not site_group:
                errors.append(f'Group \'{group}\': give {{"role": ..., "site_group": "<slug>"}}.')
                continue
        else:
            role = target
        if role not in Role.values:
            errors.append(f"Group '{group}': '{role}' is not a role (one of {', '.join(Role.values)}).")
    return errors


def site_groups_named(mapping: Mapping[str, Any]) -> set[str]:
    """The site group slugs a mapping grants roles on."""
    return {str(t["site_group"]) for t in mapping.values() if isinstance(t, Mapping) and "site_group" in t}


def client_secret_of(provider: IdentityProvider) -> str:
    """The client secret: the named OIDC_SECRET_<NAME> environment variable, else the stored one."""
    if provider.client_secret_env:
        secret = settings.OIDC_CLIENT_SECRETS.get(provider.client_secret_env)
        if not secret:
            raise ImproperlyConfigured(
                f"identity provider '{provider.slug}': environment variable {provider.client_secret_env} is not set"
            )
        return str(secret)
    return provider.client_secret


def social_app_of(provider: IdentityProvider) -> Any:
    """The unsaved allauth ``SocialApp`` that makes allauth's OpenID Connect views use this provider."""
    from allauth.socialaccount.models import SocialApp

    return SocialApp(
        provider=PROVIDER_TYPE,
        provider_id=provider.slug,
        name=provider.name,
        client_id=provider.client_id,
        secret=client_secret_of(provider),
        settings={"server_url": provider.server_url, "oauth_pkce_enabled": True},
    )
