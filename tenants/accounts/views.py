"""Sign-in, and portal pages for a person's role on the organisation, API tokens and the audit
log. Schema: tenant.

A person's role and the audit log are for a role on the whole organisation; everyone manages
their own tokens, limited to the site groups within their reach (``tenants.accounts.hooks``).
The people page itself, with the roles on site groups and sites, is the domain's
(``balancing.group_views``).
"""

from datetime import timedelta
from typing import Any, cast
from urllib.parse import urlsplit

from allauth.account.internal.flows.login import record_authentication
from allauth.account.utils import perform_login
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from evplatform.permissions import MANAGE_USERS, READ_AUDIT, actor_of, role_required
from tenants.accounts.forms import SignInForm, TokenForm, UserRoleForm
from tenants.accounts.hooks import account_hooks
from tenants.accounts.models import ApiToken, AuditEvent, IdentityProvider, User
from tenants.accounts.policy import active_providers
from tenants.accounts.services import user_update
from tenants.accounts.tokens import api_token_create, token_max_days

AUDIT_PAGE_SIZE = 50


def allow_forms_to(response: HttpResponseBase, providers: list[IdentityProvider]) -> HttpResponseBase:
    """Let the page's "Sign in with" forms continue to the identity providers.

    Those forms post here and are redirected to the provider, and browsers hold such redirects
    to the Content-Security-Policy's form-action too.
    """
    origins = sorted({f"{u.scheme}://{u.netloc}" for u in (urlsplit(p.server_url) for p in providers) if u.netloc})
    if origins:
        response._csp_update = {"form-action": origins}  # type: ignore[attr-defined]
    return response


def not_offered(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    raise Http404("This page is not offered.")


class SignInView(LoginView):
    """Email and password (Django's form, django-axes' lockout), plus a button per identity provider.

    A password that checks out goes on through allauth's login stages, so a person with a second
    factor is asked for it before they are signed in.
    """

    authentication_form = SignInForm

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        return super().get_context_data(**kwargs, sso_providers=self.providers)

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        self.providers = active_providers()
        return allow_forms_to(super().dispatch(request, *args, **kwargs), self.providers)

    def form_valid(self, form: SignInForm) -> HttpResponse:  # type: ignore[override]
        user = form.get_user()
        record_authentication(self.request, user, method="password", email=user.email)
        return perform_login(self.request, user, email_verification="none", redirect_url=self.get_success_url())


@require_POST
@role_required(MANAGE_USERS)
def user_change(request: HttpRequest, pk: int) -> HttpResponse:
    person = get_object_or_404(User, pk=pk)
    form = UserRoleForm(request.POST)
    if form.is_valid():
        try:
            changed = user_update(
                user=person,
                role=form.cleaned_data["role"],
                is_active=form.cleaned_data["is_active"],
                actor=actor_of(request),
            )
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(request, f"{person.email}: {', '.join(changed) or 'nothing'} changed.")
    return redirect("portal:users")


@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    user = cast(User, request.user)
    max_days = token_max_days(user)
    reach = account_hooks().token_reach(user, request)
    reachable_groups = reach.site_groups
    form_options: dict[str, Any] = {
        "max_days": max_days,
        "site_groups": reachable_groups,
        "groups_required": not reach.whole_org,
    }
    form = TokenForm(request.POST or None, **form_options)
    raw = None
    if request.method == "POST" and form.is_valid():
        try:
            _, raw = api_token_create(
                user=user,
                name=form.cleaned_data["name"],
                expires_at=timezone.now() + timedelta(days=form.cleaned_data["expires_in_days"]),
                scope=form.cleaned_data["scope"] or ApiToken.Scope.FULL,
                site_groups=form.cleaned_data.get("site_groups", ()),
            )
        except ValidationError as exc:
            for field, errors in exc.message_dict.items():
                field = "expires_in_days" if field == "expires_at" else field
                form.add_error(field if field in form.fields else None, errors)
        else:
            form = TokenForm(**form_options)
    context = {
        "tokens": ApiToken.objects.filter(user=user).prefetch_related("site_groups").order_by("-created_at"),
        "form": form,
        "raw": raw,
        "nav": "tokens",
        "no_groups": not reach.whole_org and not (reachable_groups is not None and reachable_groups.exists()),
    }
    return render(request, "portal/tokens.html", context)


@require_POST
@login_required
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user=cast(User, request.user))
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        messages.success(request, f"Token '{token.name}' revoked.")
    return redirect("portal:tokens")


@role_required(READ_AUDIT)
def audit(request: HttpRequest) -> HttpResponse:
    events = AuditEvent.objects.order_by("-at")
    kind = request.GET.get("type", "")
    if kind:
        events = events.filter(object_type=kind)
    page = Paginator(events, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    types = AuditEvent.objects.order_by().values_list("object_type", flat=True).distinct()
    return render(request, "portal/audit.html", {"page": page, "type": kind, "types": types, "nav": "audit"})
