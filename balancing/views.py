"""Portal pages for sites: the overview, a site's live page, its settings. Schema: tenant.

Thin edges: parse the request, call a selector or a service, render. A site outside the user's
reach (``balancing.access``) is a 404; any role on a site reads it; changing its load-management
settings needs the energy manager or admin role on that site, is confirmed on a second step,
audited and followed by a balancing run.
"""

from datetime import timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.forms import BaseForm
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from balancing import services
from balancing.access import access_of, site_for
from balancing.forms import CircuitForm, ScheduleForm, SiteLimitsForm, TariffUploadForm
from balancing.selectors import (
    run_result,
    site_alerts_cleared,
    site_alerts_open,
    site_cap_in_force,
    site_chargers,
    site_circuit_tree,
    site_circuits,
    site_load_chart,
    site_meter_latest,
    site_overview,
    site_runs,
    site_schedule_find,
    site_schedules,
    site_tariffs,
)
from evplatform.charts import chart_spec
from evplatform.csp import chart_page
from evplatform.permissions import CHANGE_LIMITS, actor_of

RANGES = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7), "month": timedelta(days=31)}
SORTS = ("name", "load", "share", "peak", "chargers", "alerts")


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    search = request.GET.get("q", "").strip()[:100]
    sort = request.GET.get("sort", "name")
    rows = site_overview(
        now=timezone.now(), search=search, sort=sort if sort in SORTS else "name", sites=access_of(request).sites()
    )
    context = {"rows": rows, "q": search, "sort": sort, "nav": "sites", "sorts": SORTS}
    template = "portal/_site_rows.html" if request.headers.get("HX-Request") else "portal/overview.html"
    return render(request, template, context)


@chart_page
@login_required
def site_detail(request: HttpRequest, slug: str) -> HttpResponse:
    site = site_for(request, slug)
    runs = site_runs(site=site, limit=10)
    last = runs[0] if runs else None
    node_load_a = run_result(last).get("node_load_a", {})
    range_name = request.GET.get("range", "hour")
    context = {
        "site": site,
        "runs": runs,
        "last": last,
        "chargers": site_chargers(site=site, run=last),
        "tree": site_circuit_tree(site=site, node_load_a=node_load_a),
        "root_load": node_load_a.get("site"),
        "range": range_name if range_name in RANGES else "hour",
        "ranges": list(RANGES),
        "can_change": access_of(request).can(CHANGE_LIMITS, site.pk),
        "open_alerts": site_alerts_open(site=site),
        "cleared_alerts": site_alerts_cleared(site=site, now=timezone.now()),
        "meter": site_meter_latest(site=site),
        "cap": site_cap_in_force(site=site),
        "nav": "sites",
    }
    template = "portal/_site_live.html" if request.headers.get("HX-Request") else "portal/site.html"
    return render(request, template, context)


@login_required
def site_chart(request: HttpRequest, slug: str) -> JsonResponse:
    """Vega-Lite spec with data (``portal/site_chart.json``): site load against its limit over the chosen range.

    One row per time bucket (``site_load_chart``: a minute up to a day, a quarter hour beyond)
    with every series as a field, unfolded into lines by the chart itself: the time is sent
    once per bucket, not once per series, so a month is a few hundred kB however many runs.
    """
    site = site_for(request, slug)
    window = RANGES.get(request.GET.get("range", "hour"), RANGES["hour"])
    per_phase = bool(request.GET.get("phases")) and site.phases == 3
    chart = site_load_chart(site=site, now=timezone.now(), window=window, phases=per_phase)
    spec = chart_spec(
        "portal/site_chart.json", site_name=site.name, rows=chart.rows, names=chart.series, per_phase=per_phase
    )
    return JsonResponse(spec)


@login_required
def site_settings(request: HttpRequest, slug: str) -> HttpResponse:
    site = site_for(request, slug, CHANGE_LIMITS)
    initial = {name: getattr(site, name) for name in services.SITE_LIMIT_FIELDS}
    form = SiteLimitsForm(request.POST or None, initial=initial)
    confirming = False
    changes: list[tuple[str, Any, Any]] = []
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        changes = [
            (str(form.fields[name].label or name), _shown(form, name, initial[name]), _shown(form, name, data[name]))
            for name in services.SITE_LIMIT_FIELDS
            if data[name] != initial[name]
        ]
        if not changes:
            messages.info(request, "Nothing changed.")
            return redirect("portal:site", slug=site.slug)
        if data.get("confirm"):
            try:
                services.site_limits_update(site=site, limits=data, actor=actor_of(request))
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                messages.success(request, "Limits saved; the site is being rebalanced with them.")
                return redirect("portal:site", slug=site.slug)
        else:
            confirming = True
    context = {
        "site": site,
        "form": form,
        "confirming": confirming,
        "changes": changes,
        "schedules": site_schedules(site=site),
        "schedule_form": ScheduleForm(),
        "circuits": site_circuits(site=site),
        "circuit_form": CircuitForm(),
        "tariffs": site_tariffs(site=site),
        "tariff_form": TariffUploadForm(),
        "nav": "sites",
    }
    return render(request, "portal/site_settings.html", context)


def _shown(form: BaseForm, name: str, value: Any) -> Any:
    """A setting's value as people read it on the confirmation step (on/off, a choice's label)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    choices = dict(getattr(form.fields[name], "choices", None) or ())
    return choices.get(value, value)


@require_POST
@login_required
def schedule_add(request: HttpRequest, slug: str) -> HttpResponse:
    site = site_for(request, slug, CHANGE_LIMITS)
    form = ScheduleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Schedule not added: " + form_errors_text(form))
        return redirect("portal:site-settings", slug=site.slug)
    schedule = form.save(commit=False)
    schedule.site = site
    services.schedule_create(schedule=schedule, actor=actor_of(request))
    messages.success(request, f"Schedule '{schedule.name}' added.")
    return redirect("portal:site-settings", slug=site.slug)


@require_POST
@login_required
def schedule_delete(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    site = site_for(request, slug, CHANGE_LIMITS)
    schedule = site_schedule_find(site=site, pk=pk)
    if schedule is None:
        raise Http404("No such schedule.")
    services.schedule_delete(schedule=schedule, actor=actor_of(request))
    messages.success(request, "Schedule removed.")
    return redirect("portal:site-settings", slug=site.slug)


def form_errors_text(form: BaseForm) -> str:
    """A form's errors in one line, each after the field it is about."""
    return "; ".join(
        " ".join(str(e) for e in errors) if field == "__all__" else f"{field}: {' '.join(str(e) for e in errors)}"
        for field, errors in form.errors.items()
    )


def validation_errors_text(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
    return " ".join(exc.messages)


@require_POST
@login_required
def circuit_save(request: HttpRequest, slug: str) -> HttpResponse:
    """Add a circuit, or change one (found by name): audited, and the site is rebalanced."""
    site = site_for(request, slug, CHANGE_LIMITS)
    form = CircuitForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Circuit not saved: " + form_errors_text(form))
        return redirect("portal:site-settings", slug=site.slug)
    data = form.cleaned_data
    try:
        outcome = services.circuit_create_or_update(
            site=site,
            name=data["name"].strip(),
            kind=data["kind"],
            parent_name=data["parent"].strip() or None,
            limit_a=data["limit_a"],
            limit_kw=data["limit_kw"],
            actor=actor_of(request),
        )
    except (ValidationError, ObjectDoesNotExist) as exc:
        text = validation_errors_text(exc) if isinstance(exc, ValidationError) else str(exc)
        messages.error(request, f"Circuit not saved: {text}")
    else:
        verb = (
            "added"
            if outcome.created
            else ("updated: " + "; ".join(outcome.changes) if outcome.changes else "unchanged")
        )
        messages.success(request, f"Circuit '{outcome.obj.name}' {verb}.")
    return redirect("portal:site-settings", slug=site.slug)
