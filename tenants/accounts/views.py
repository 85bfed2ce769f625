"""Sign-in, and portal pages for people, their roles (on the organisation, site groups and
sites), API tokens and the audit log. Schema: tenant.

People, groups, grants and the audit log are for a role on the whole organisation; everyone
manages their own tokens, limited to the site groups within their reach.
"""

from datetime import timedelta
from typing import Any, cast
from urllib.parse import urlsplit

from allauth.account.internal.flows.login import record_authentication
from allauth.account.utils import perform_login
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import PasswordResetForm
from django.contrib.auth.views import LoginView
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from balancing.access import access_of
from balancing.forms import SiteGrantForm, SiteGroupForm
from balancing.groups import (
    grants_of_users,
    groups_within,
    site_grant_create,
    site_grant_delete,
    site_group_create,
    site_group_delete,
    site_group_update,
)
from balancing.models import Site, SiteGrant, SiteGroup
from evplatform.permissions import MANAGE_USERS, READ_AUDIT, actor_of, role_required
from tenants.accounts.forms import SignInForm, TokenForm, UserInviteForm, UserRoleForm
from tenants.accounts.models import ApiToken, AuditEvent, IdentityProvider, User
from tenants.accounts.policy import active_providers
from tenants.accounts.services import user_invite, user_update
from tenants.accounts.tokens import api_token_create, token_max_days

AUDIT_PAGE_SIZE = 50


def _refusal(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
    return " ".join(exc.messages)


def _form_errors(form: SiteGroupForm | SiteGrantForm) -> str:
    return "; ".join(f"{field}: {' '.join(str(e) for e in errors)}" for field, errors in form.errors.items())


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


@role_required(MANAGE_USERS)
def users(request: HttpRequest) -> HttpResponse:
    form = UserInviteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user, created = user_invite(actor=actor_of(request), **form.cleaned_data)
        if created:
            reset = PasswordResetForm({"email": user.email})
            if reset.is_valid():
                reset.save(request=request, use_https=request.is_secure())
            messages.success(request, f"{user.email} added; they were sent a link to set their password.")
        else:
            messages.info(request, f"{user.email} already has an account.")
        return redirect("portal:users")
    people = list(User.objects.order_by("email"))
    grants = grants_of_users()
    context = {
        "users": [(person, grants.get(person.pk, [])) for person in people],
        "form": form,
        "nav": "users",
        "roles": UserRoleForm(),
        "groups": SiteGroup.objects.prefetch_related("sites").order_by("name"),
        "sites": Site.objects.order_by("name"),
        # Ids of their own: three forms on the page have a "role" or "name" field.
        "group_form": SiteGroupForm(auto_id="group-%s"),
        "grant_form": SiteGrantForm(auto_id="grant-%s"),
    }
    return render(request, "portal/users.html", context)


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


@require_POST
@role_required(MANAGE_USERS)
def group_create(request: HttpRequest) -> HttpResponse:
    form = SiteGroupForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Group not created: " + _form_errors(form))
        return redirect("portal:users")
    try:
        group = site_group_create(
            name=form.cleaned_data["name"], sites=form.cleaned_data["sites"], actor=actor_of(request)
        )
    except ValidationError as exc:
        messages.error(request, "Group not created: " + _refusal(exc))
    else:
        messages.success(request, f"Group '{group.name}' created with {group.sites.count()} sites.")
    return redirect("portal:users")


@require_POST
@role_required(MANAGE_USERS)
def group_change(request: HttpRequest, pk: int) -> HttpResponse:
    """Rename the group and set its sites (add or remove them)."""
    group = get_object_or_404(SiteGroup, pk=pk)
    form = SiteGroupForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Group '{group.name}' not changed: " + _form_errors(form))
        return redirect("portal:users")
    try:
        changed = site_group_update(
            group=group, name=form.cleaned_data["name"], sites=form.cleaned_data["sites"], actor=actor_of(request)
        )
    except ValidationError as exc:
        messages.error(request, f"Group '{group.name}' not changed: " + _refusal(exc))
    else:
        messages.success(request, f"Group '{group.name}': {', '.join(changed) or 'nothing'} changed.")
    return redirect("portal:users")


@require_POST
@role_required(MANAGE_USERS)
def group_delete(request: HttpRequest, pk: int) -> HttpResponse:
    group = get_object_or_404(SiteGroup, pk=pk)
    site_group_delete(group=group, actor=actor_of(request))
    messages.success(request, f"Group '{group.name}' removed, with the roles granted on it.")
    return redirect("portal:users")


@require_POST
@role_required(MANAGE_USERS)
def grant_create(request: HttpRequest) -> HttpResponse:
    """A role on the whole organisation (the person's own role), a site group or a site."""
    form = SiteGrantForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Role not granted: " + _form_errors(form))
        return redirect("portal:users")
    person, role = form.cleaned_data["user"], form.cleaned_data["role"]
    group, site = form.target_objects()
    try:
        if group is None and site is None:
            user_update(user=person, role=role, is_active=person.is_active, actor=actor_of(request))
            where = "the whole organisation"
        else:
            site_grant_create(user=person, role=role, group=group, site=site, actor=actor_of(request))
            where = f"group {group.name}" if group is not None else f"site {site.name if site else ''}"
    except ValidationError as exc:
        messages.error(request, "Role not granted: " + _refusal(exc))
    else:
        messages.success(request, f"{person.email} is {role.replace('_', ' ')} on {where}.")
    return redirect("portal:users")


@require_POST
@role_required(MANAGE_USERS)
def grant_delete(request: HttpRequest, pk: int) -> HttpResponse:
    grant = get_object_or_404(SiteGrant.objects.select_related("user", "group", "site"), pk=pk)
    site_grant_delete(grant=grant, actor=actor_of(request))
    messages.success(request, f"{grant.user.email} no longer holds {grant.role} on {grant.group or grant.site}.")
    return redirect("portal:users")


@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    user = cast(User, request.user)
    max_days = token_max_days(user)
    access = access_of(request)
    reachable_groups = groups_within(access)
    form_options: dict[str, Any] = {
        "max_days": max_days,
        "site_groups": reachable_groups,
        "groups_required": not access.whole_org,
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
                site_groups=form.cleaned_data["site_groups"],
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
        "no_groups": not access.whole_org and not reachable_groups.exists(),
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
