"""Portal pages: everyone's Notifications page; the organisation admins' Webhooks and deliveries log. Schema: tenant."""

from typing import Any, cast

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.forms import BaseForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from balancing.access import access_of
from balancing.models import SiteGroup
from balancing.notifications import services
from balancing.notifications.forms import PreferenceForm, WebhookEndpointForm
from balancing.notifications.models import (
    DeliveryStatus,
    EmailDelivery,
    NotificationPreference,
    WebhookDelivery,
    WebhookEndpoint,
)
from balancing.notifications.routing import default_kinds
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
    sites = access.sites().order_by("name")
    site_ids = access.site_ids()
    groups = SiteGroup.objects.order_by("name")
    if site_ids is not None:
        groups = groups.filter(sites__in=site_ids).distinct()
    user = cast(User, request.user)
    preference = NotificationPreference.objects.filter(user=user).first()
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
    form = PreferenceForm(request.POST or None, initial=initial, sites=sites, groups=groups)
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
    endpoints = WebhookEndpoint.objects.prefetch_related("groups").order_by("name")
    context = {"form": form, "endpoints": endpoints, "secret": secret, "nav": "webhooks"}
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
    endpoint = get_object_or_404(WebhookEndpoint, pk=pk)
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
    posts = WebhookDelivery.objects.select_related("event", "endpoint", "event__site").order_by("-created_at")
    endpoint_id = request.GET.get("endpoint", "")
    if endpoint_id.isdigit():
        posts = posts.filter(endpoint_id=int(endpoint_id))
    status = request.GET.get("status", "")
    if status in DeliveryStatus.values:
        posts = posts.filter(status=status)
    emails = EmailDelivery.objects.select_related("event", "event__site").order_by("-created_at")
    if status in DeliveryStatus.values:
        emails = emails.filter(status=status)
    context = {
        "posts": Paginator(posts, DELIVERIES_PAGE_SIZE).get_page(request.GET.get("page")),
        "emails": emails[:DELIVERIES_PAGE_SIZE],
        "endpoints": WebhookEndpoint.objects.order_by("name"),
        "endpoint_id": endpoint_id,
        "status": status,
        "statuses": DeliveryStatus.choices,
        "nav": "webhooks",
    }
    return render(request, "portal/webhook_deliveries.html", context)
