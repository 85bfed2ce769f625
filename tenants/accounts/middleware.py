"""Second factor before anything else, where the organisation requires one. Schema: tenant.

A signed-in person whom ``SignInPolicy.require_mfa`` covers and who has neither a TOTP app
nor a WebAuthn key is sent to the page that sets one up; the API answers 403 until then.
"""

from collections.abc import Callable

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect

from tenants.accounts.models import User
from tenants.accounts.policy import current_policy, has_second_factor, in_tenant_schema, second_factor_required

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
            messages.warning(request, MESSAGE)
            return redirect("mfa_index")
        return self.get_response(request)
