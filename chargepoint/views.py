"""Portal page of one charger: status, connectors, sessions, meter history, profiles, actions.

A charger whose site is outside the user's reach is a 404; acting on it needs the role on its
site (403). The fleet import needs the role on the whole organisation. Schema: tenant.
"""

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from balancing.access import access_of
from balancing.selectors import compliance_find, station_alerts, station_limit_checks, station_pushes
from chargepoint.actions import ACTIONS, charger_action
from chargepoint.models import ChargingStation
from chargepoint.selectors import station_connectors, station_current_series, station_in_reach, station_sessions
from evplatform.charts import chart_spec
from evplatform.csp import chart_page
from evplatform.permissions import CHARGER_ACTIONS, IMPORT_FLEET, actor_of, role_required

HISTORY = timedelta(hours=6)


def station_for(request: HttpRequest, charge_point_id: str, roles: frozenset[str] | None = None) -> ChargingStation:
    """The charger if its site is in the user's reach (else 404), holding one of ``roles`` there (else 403)."""
    access = access_of(request)
    station = station_in_reach(access=access, charge_point_id=charge_point_id)
    if station is None:
        raise Http404("No such charger.")
    if roles is not None and not access.can(roles, station.site_id):
        raise PermissionDenied("Your role on this charger's site may not do this.")
    return station


@chart_page
@login_required
def charger_detail(request: HttpRequest, charge_point_id: str) -> HttpResponse:
    station = station_for(request, charge_point_id)
    context = {
        "station": station,
        "connectors": station_connectors(station=station),
        "sessions": station_sessions(station=station),
        "pushes": station_pushes(station=station),
        "alerts": station_alerts(station=station),
        "compliance": compliance_find(station=station),
        "checks": station_limit_checks(station=station),
        "can_act": access_of(request).can(CHARGER_ACTIONS, station.site_id),
        "actions": ACTIONS,
        "nav": "sites",
    }
    return render(request, "portal/charger.html", context)


@login_required
def charger_chart(request: HttpRequest, charge_point_id: str) -> JsonResponse:
    """Vega-Lite spec (``portal/charger_chart.json``): the charger's current per phase over the last hours.

    The highest current per minute, phase and connector (``station_current_series``): at most
    360 points a series however often the charger reports.
    """
    station = station_for(request, charge_point_id)
    rows = station_current_series(station=station, since=timezone.now() - HISTORY)
    return JsonResponse(chart_spec("portal/charger_chart.json", rows=rows))


@require_POST
@login_required
def charger_act(request: HttpRequest, charge_point_id: str) -> HttpResponse:
    station = station_for(request, charge_point_id, CHARGER_ACTIONS)
    action = request.POST.get("action", "")
    try:
        connector_id = int(request.POST.get("connector_id", "0"))
        outcome = charger_action(
            station=station,
            action=action,
            connector_id=connector_id,
            actor=actor_of(request),
        )
    except (ValueError, ValidationError) as exc:
        text = " ".join(exc.messages) if isinstance(exc, ValidationError) else "connector must be a number"
        messages.error(request, f"Not sent: {text}")
    else:
        level = messages.SUCCESS if outcome.result.accepted else messages.ERROR
        messages.add_message(
            request,
            level,
            f"{action.replace('_', ' ')}: the charger answered {outcome.result.status}"
            + (f" ({outcome.result.error})" if outcome.result.error else ""),
        )
    return redirect("portal:charger", charge_point_id=station.charge_point_id)


class FleetImportForm(forms.Form):
    file = forms.FileField(label="CSV or XLSX file", help_text="one row per site, circuit or charger")
    dry_run = forms.BooleanField(label="Dry run: check every row, write nothing", required=False, initial=True)


@role_required(IMPORT_FLEET)
def fleet_import_page(request: HttpRequest) -> HttpResponse:
    """Sites, circuits and chargers from a file (chargepoint.onboarding): every row's errors, or all written."""
    from chargepoint.onboarding import ImportFileError, fleet_import, fleet_rows_read

    form = FleetImportForm(request.POST or None, request.FILES or None)
    context: dict[str, Any] = {"form": form, "nav": "import"}
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            rows = fleet_rows_read(filename=upload.name, content=upload.read())
        except ImportFileError as exc:
            form.add_error("file", str(exc))
        else:
            tenant = request.tenant  # type: ignore[attr-defined]  # set by django-tenants' TenantMainMiddleware
            context["result"] = fleet_import(
                tenant=tenant, rows=rows, dry_run=form.cleaned_data["dry_run"], actor=actor_of(request)
            )
            context["filename"] = upload.name
    status = 400 if form.errors or (context.get("result") and context["result"].errors) else 200
    return render(request, "portal/import.html", context, status=status)
