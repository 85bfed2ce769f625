"""The people page: people with their roles on the organisation, site groups and sites; the site
groups; granting and removing roles on them. Schema: tenant.

These pages are the users' (``portal:users``, under ``/users/``), but what they mostly show and
change is this app's: site groups and the roles granted on them or on single sites
(``balancing.groups``). People themselves (inviting them, their role on the whole organisation)
are accounts' (``tenants.accounts.services``). All of it is for a role on the whole organisation.
"""

from django.contrib import messages
from django.contrib.auth.forms import PasswordResetForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from balancing.forms import SiteGrantForm, SiteGroupForm
from balancing.groups import (
    grants_of_users,
    site_grant_create,
    site_grant_delete,
    site_group_create,
    site_group_delete,
    site_group_update,
)
from balancing.models import Site, SiteGrant, SiteGroup
from evplatform.permissions import MANAGE_USERS, actor_of, role_required
from tenants.accounts.forms import UserInviteForm, UserRoleForm
from tenants.accounts.models import User
from tenants.accounts.services import user_invite, user_update


def _refusal(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
    return " ".join(exc.messages)


def _form_errors(form: SiteGroupForm | SiteGrantForm) -> str:
    return "; ".join(f"{field}: {' '.join(str(e) for e in errors)}" for field, errors in form.errors.items())


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
