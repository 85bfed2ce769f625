"""Portal pages: everyone's Notifications page; the organisation admins' Webhooks and deliveries log. Schema: tenant."""

from typing import Any, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.forms import BaseForm
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from balancing.access import access_of
from balancing.notifications import services
from balancing.notifications.forms import PreferenceForm, WebhookEndpointForm
from balancing.notifications.models import DeliveryStatus
from balancing.notifications.routing import default_kinds
from balancing.notifications.selectors import (
    email_deliveries,
    endpoint_find,
    endpoint_list,
    preference_find,
    preference_groups,
    preference_sites,
    webhook_deliveries,
)
from evplatform.permissions import MANAGE_USERS, actor_of
from tenants.accounts.models import User

DELIVERIES_PAGE_SIZE = 50


def _errors_to_form(form: BaseForm, exc: ValidationError) -> None:
    for field, errors in exc.message_dict.items():
        form.add_error(field if field in form.fields else None, errors)


@login_required
def notifications(request: HttpRequest) -> HttpResponse:
    """What the signed-in person gets by email, for which of their sites."""
    access = access_of(request)
    user = cast(User, request.user)
    preference = preference_find(user=user)
    if preference is None:
        initial: dict[str, Any] = {"email_kinds": default_kinds(access), "all_sites": "1", "email_cleared": False}
    else:
        initial = {
            "email_kinds": preference.email_kinds,
            "email_cleared": preference.email_cleared,
            "all_sites": "1" if preference.all_sites else "0",
            "groups": list(preference.groups.all()),
            "sites": list(preference.sites.all()),
        }
    form = PreferenceForm(
        request.POST or None,
        initial=initial,
        sites=preference_sites(access=access),
        groups=preference_groups(access=access),
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            services.preference_save(
                user=user,
                email_kinds=data["email_kinds"],
                email_cleared=data["email_cleared"],
                all_sites=data["all_sites"],
                group_ids=[g.pk for g in data["groups"]],
                site_ids=[s.pk for s in data["sites"]],
                actor=actor_of(request),
            )
        except ValidationError as exc:
            _errors_to_form(form, exc)
        else:
            messages.success(request, "Notification settings saved.")
            return redirect("portal:notifications")
    context = {"form": form, "is_default": preference is None, "nav": "notifications"}
    return render(request, "portal/notifications.html", context, status=400 if form.errors else 200)


def _admin_only(request: HttpRequest) -> None:
    if not access_of(request).has_org_role(MANAGE_USERS):
        raise PermissionDenied("Only the organisation's admins manage webhooks.")


def _webhooks_page(
    request: HttpRequest, form: WebhookEndpointForm, secret: tuple[str, str] | None = None
) -> HttpResponse:
    context = {"form": form, "endpoints": endpoint_list(with_groups=True), "secret": secret, "nav": "webhooks"}
    return render(request, "portal/webhooks.html", context, status=400 if form.errors else 200)


@login_required
def webhooks(request: HttpRequest) -> HttpResponse:
    """The organisation's endpoints; adding one shows its signing secret once."""
    _admin_only(request)
    form = WebhookEndpointForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            endpoint, secret = services.webhook_endpoint_create(
                name=data["name"],
                url=data["url"],
                kinds=data["kinds"],
                send_cleared=data["send_cleared"],
                group_ids=[g.pk for g in data["groups"]],
                actor=actor_of(request),
            )
        except ValidationError as exc:
            _errors_to_form(form, exc)
        else:
            return _webhooks_page(request, WebhookEndpointForm(), secret=(endpoint.name, secret))
    return _webhooks_page(request, form)


@require_POST
@login_required
def webhook_act(request: HttpRequest, pk: int) -> HttpResponse:
    """Send a test event, rotate the secret (shown once), pause or resume."""
    _admin_only(request)
    endpoint = endpoint_find(pk=pk)
    if endpoint is None:
        raise Http404("No such endpoint.")
    action = request.POST.get("action", "")
    actor = actor_of(request)
    if action == "test":
        services.webhook_test_send(endpoint=endpoint, actor=actor)
        messages.success(request, f"Test event queued for {endpoint.name}: see the deliveries below.")
        return redirect(f"{reverse('portal:webhook-deliveries')}?endpoint={endpoint.pk}")
    if action == "rotate":
        secret = services.webhook_endpoint_rotate(endpoint=endpoint, actor=actor)
        return _webhooks_page(request, WebhookEndpointForm(), secret=(endpoint.name, secret))
    if action in ("pause", "resume"):
        services.webhook_endpoint_set_active(endpoint=endpoint, is_active=action == "resume", actor=actor)
        messages.success(request, f"{endpoint.name} {'resumed' if action == 'resume' else 'paused'}.")
        return redirect("portal:webhooks")
    return HttpResponse("action: expected test, rotate, pause or resume", status=400, content_type="text/plain")


@login_required
def deliveries(request: HttpRequest) -> HttpResponse:
    """Every webhook POST and notification email, newest first, with its attempts and last answer."""
    _admin_only(request)
    endpoint_id = request.GET.get("endpoint", "")
    status = request.GET.get("status", "")
    posts = webhook_deliveries(endpoint_id=int(endpoint_id) if endpoint_id.isdigit() else None, status=status)
    context = {
        "posts": Paginator(posts, DELIVERIES_PAGE_SIZE).get_page(request.GET.get("page")),
        "emails": email_deliveries(status=status, limit=DELIVERIES_PAGE_SIZE),
        "endpoints": endpoint_list(),
        "endpoint_id": endpoint_id,
        "status": status,
        "statuses": DeliveryStatus.choices,
        "nav": "webhooks",
    }
    return render(request, "portal/webhook_deliveries.html", context)
