"""django-allauth adapters: no public sign-up, SSO per organisation, second factors. Schema: tenant.

The social adapter serves each organisation's ``IdentityProvider`` rows as allauth apps, lets
only those create accounts (just in time, roles from the IdP's groups), matches an existing
person by the email the IdP vouches for, and re-syncs the roles (on the organisation, and on
site groups where the mapping names them) at every SSO sign-in.
"""

from typing import Any, cast

from allauth.account.adapter import DefaultAccountAdapter
from allauth.account.internal.flows.login import record_authentication
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.mfa.adapter import DefaultMFAAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.socialaccount.models import SocialLogin
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest
from django.shortcuts import render

from tenants.accounts.models import IdentityProvider, User
from tenants.accounts.policy import in_tenant_schema, signed_in_recently, tenant_name
from tenants.accounts.services import user_sso_created, user_sso_sync
from tenants.accounts.sso import (
    PROVIDER_TYPE,
    Assignment,
    assignment_for_groups,
    claims_of,
    manages_group_grants,
    social_app_of,
)

# The backend a person signed in by SSO or after a second factor is attached to (allauth keeps
# no backend across the second-factor step; the first configured one is django-axes', which
# cannot load users).
SESSION_BACKEND = "django.contrib.auth.backends.ModelBackend"


def sso_actor(provider_slug: str) -> str:
    return f"sso:{provider_slug}"


def refuse(request: HttpRequest, provider: IdentityProvider | None, reason: str) -> ImmediateHttpResponse:
    """A sign-in through an identity provider that this organisation does not let in, and why."""
    context = {"reason": reason, "provider": provider}
    return ImmediateHttpResponse(render(request, "registration/sso_refused.html", context, status=403))


def assignment_of(provider: IdentityProvider, sociallogin: SocialLogin) -> Assignment | None:
    claims = claims_of(sociallogin.account.extra_data, groups_claim=provider.groups_claim)
    return assignment_for_groups(
        group_roles=provider.group_roles, groups=claims.groups, default_role=provider.default_role
    )


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request: HttpRequest) -> bool:
        """People are invited by an admin or come through their organisation's identity provider."""
        return False

    def is_reauthentication_required(self, *, app: str, **kwargs: Any) -> bool:
        """Setting up a second factor right after signing in asks for nothing more; later it asks for
        the password, a mailed code or an existing factor again (allauth's own rule)."""
        request = self.request
        user = getattr(request, "user", None)
        if app == "allauth.mfa" and isinstance(user, User) and signed_in_recently(request, user):
            return False
        return super().is_reauthentication_required(app=app, **kwargs)

    def login(self, request: HttpRequest, user: AbstractBaseUser) -> None:
        if not hasattr(user, "backend"):
            user.backend = SESSION_BACKEND
        super().login(request, user)


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def list_apps(self, request: HttpRequest | None, provider: str | None = None, client_id: str | None = None) -> list:
        if not in_tenant_schema():
            return []
        providers = IdentityProvider.objects.filter(is_active=True)
        if provider and provider != PROVIDER_TYPE:
            providers = providers.filter(slug=provider)
        if client_id:
            providers = providers.filter(client_id=client_id)
        return [social_app_of(row) for row in providers]

    def is_open_for_signup(self, request: HttpRequest, sociallogin: SocialLogin) -> bool:
        return (
            in_tenant_schema()
            and IdentityProvider.objects.filter(slug=sociallogin.account.provider, is_active=True).exists()
        )

    def pre_social_login(self, request: HttpRequest, sociallogin: SocialLogin) -> None:
        """Refuse, or settle who this is and their role, before allauth signs them in or up."""
        provider = IdentityProvider.objects.filter(slug=sociallogin.account.provider, is_active=True).first()
        if provider is None:
            raise refuse(request, None, "This identity provider is not enabled for this organisation.")
        claims = claims_of(sociallogin.account.extra_data, groups_claim=provider.groups_claim)
        if not claims.email:
            raise refuse(request, provider, f"{provider.name} did not give an email address for your account.")
        if not (provider.trust_email or claims.email_verified):
            raise refuse(
                request, provider, f"{provider.name} did not confirm that {claims.email} is your email address."
            )
        assignment = assignment_of(provider, sociallogin)
        if assignment is None:
            raise refuse(
                request,
                provider,
                f"Your account at {provider.name} ({claims.email}) is in none of the groups that give a role "
                f"in {tenant_name() or 'this organisation'}. Ask your administrator for access.",
            )
        if not sociallogin.is_existing:
            same_email = User.objects.filter(email__iexact=claims.email).first()
            if same_email is not None:
                if not same_email.is_active:
                    raise refuse(request, provider, f"The account {claims.email} is deactivated here.")
                sociallogin.connect(request, same_email)
        user = cast(User, sociallogin.user)
        if user.pk is not None and not user.is_active:
            raise refuse(request, provider, f"The account {user.email} is deactivated here.")
        user_sso_sync(
            user=user,
            org_role=assignment.org_role,
            group_grants=assignment.group_grants if manages_group_grants(provider.group_roles) else None,
            actor=sso_actor(provider.slug),
        )

    def populate_user(self, request: HttpRequest, sociallogin: SocialLogin, data: dict[str, Any]) -> Any:
        user = super().populate_user(request, sociallogin, data)
        provider = IdentityProvider.objects.filter(slug=sociallogin.account.provider).first()
        claims = claims_of(sociallogin.account.extra_data, groups_claim=provider.groups_claim if provider else "groups")
        user.email = claims.email or user.email.lower()
        user.full_name = claims.name
        return user

    def save_user(self, request: HttpRequest, sociallogin: SocialLogin, form: Any = None) -> Any:
        user = super().save_user(request, sociallogin, form)
        # allauth records a sign-in through an IdP only for existing accounts; a new one counts too.
        record_authentication(
            request, user, "socialaccount", provider=sociallogin.account.provider, uid=sociallogin.account.uid
        )
        provider = IdentityProvider.objects.get(slug=sociallogin.account.provider)
        assignment = assignment_of(provider, sociallogin)
        user_sso_created(
            user=user, group_grants=assignment.group_grants if assignment else None, actor=sso_actor(provider.slug)
        )
        return user


class MfaAdapter(DefaultMFAAdapter):
    def get_totp_issuer(self) -> str:
        """The name an authenticator app lists the code under: the organisation's."""
        name = tenant_name()
        return f"{name} (EV load balancing)" if name else "EV load balancing"
