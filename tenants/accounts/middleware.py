"""Second factor before anything else, where the organisation requires one. Schema: tenant.

A signed-in person whom ``SignInPolicy.require_mfa`` covers and who has neither a TOTP app
nor a WebAuthn key is sent to the page that sets one up; the API answers 403 until then. Past
the first minutes after signing in (allauth's re-authentication window) they sign in afresh first.
"""

from collections.abc import Callable

from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse

from tenants.accounts.models import User
from tenants.accounts.policy import (
    current_policy,
    has_second_factor,
    in_tenant_schema,
    second_factor_required,
    signed_in_recently,
)

# What a person without their second factor may still reach: setting one up (allauth's MFA and
# re-authentication pages), signing out, and static files.
ALLOWED_PREFIXES = ("/accounts/2fa/", "/accounts/reauthenticate/", "/accounts/logout/", "/static/")
MESSAGE = "Your organisation requires a second factor: set up an authenticator app or a security key to continue."


class SecondFactorRequiredMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if (
            isinstance(user, User)
            and in_tenant_schema()
            and not request.path.startswith(ALLOWED_PREFIXES)
            and second_factor_required(user, current_policy())
            and not has_second_factor(user)
        ):
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": MESSAGE}, status=403)
            if not signed_in_recently(request, user):
                # Setting one up needs a fresh sign-in (an SSO account has no password to re-enter).
                logout(request)
                messages.warning(request, f"{MESSAGE} Sign in again to start.")
                return redirect_to_login(reverse("mfa_index"))
            messages.warning(request, MESSAGE)
            return redirect("mfa_index")
        return self.get_response(request)
