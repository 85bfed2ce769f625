"""Portal forms for a site's load-management settings, site groups and grants (validated again by the services)."""

from decimal import Decimal
from typing import Any

from django import forms

from balancing.models import Circuit, Site, SiteGroup, SiteLimitSchedule
from tenants.accounts.models import Role, User


class SiteLimitsForm(forms.Form):
    limit_a = forms.DecimalField(
        label="Grid connection limit per phase (A)", min_value=Decimal(0), max_digits=7, decimal_places=1
    )
    demand_cap_kw = forms.DecimalField(
        label="Demand cap (kW)",
        required=False,
        min_value=Decimal(0),
        max_digits=9,
        decimal_places=2,
        help_text="Empty for no cap.",
    )
    failsafe_a = forms.DecimalField(
        label="Fail-safe current per charger (A)", min_value=Decimal(0), max_digits=5, decimal_places=1
    )
    max_raise_a = forms.DecimalField(
        label="Largest raise per run (A)",
        required=False,
        min_value=Decimal(1),
        max_digits=5,
        decimal_places=1,
        help_text="Chargers' currents rise by at most this much per balancing run; empty: at once.",
    )
    failsafe_auto = forms.BooleanField(
        label="Size the fail-safe to the site",
        required=False,
        help_text="All chargers at their fail-safe together stay within every limit (per phase, per circuit, "
        "demand cap minus the building allowance); recomputed when chargers are added, moved or removed. "
        "Off: the fail-safe current above is used as set, and refused if it breaks a limit.",
    )
    idle_default_zero = forms.BooleanField(
        label="Idle connectors wait at 0 A",
        required=False,
        help_text="A car that plugs in waits for its first profile instead of starting at the fail-safe "
        "current, so a newcomer never lifts the site over its limit.",
    )
    building_allowance_kw = forms.DecimalField(
        label="Building load allowance (kW)",
        min_value=Decimal(0),
        max_digits=9,
        decimal_places=2,
        help_text="Building load the fail-safe sizing leaves room for under the demand cap.",
    )
    overdraw_escalation = forms.ChoiceField(
        label="When a charger keeps drawing more than offered",
        choices=Site.Escalation.choices,
        help_text="Opt-in for sites that must never trip: every overdraw is an alert; this acts on top of it.",
    )
    overdraw_escalation_after_s = forms.IntegerField(
        label="Escalate after (s)",
        min_value=0,
        max_value=86_400,
        help_text="Seconds of continuous overdraw before the escalation acts.",
    )
    balancing_policy = forms.ChoiceField(
        label="Balancing policy",
        required=False,
        choices=Site.Policy.choices,
        help_text="Cost-aware needs a tariff (without one the demand cap binds as set): a billing demand "
        "already set this month lifts the cap up to it, less the margin below, and cars that gave an energy "
        "need and a departure charge in the cheapest hours before they leave.",
    )
    peak_margin_kw = forms.DecimalField(
        label="Peak margin (kW)",
        required=False,
        min_value=Decimal(0),
        max_digits=7,
        decimal_places=2,
        help_text="Cost-aware: how far below a billing demand already set this month the lifted cap stays.",
        error_messages={"min_value": "The peak margin must be 0 kW or more."},
    )
    confirm = forms.BooleanField(required=False, widget=forms.HiddenInput, help_text="Set on the confirmation step.")

    def clean_balancing_policy(self) -> str:
        """Left out (a form from before the setting existed): the site's policy stays."""
        return self.cleaned_data.get("balancing_policy") or self.initial.get("balancing_policy") or Site.Policy.STATIC

    def clean_peak_margin_kw(self) -> Decimal:
        """Left out: the site's margin stays."""
        value = self.cleaned_data.get("peak_margin_kw")
        return value if value is not None else self.initial.get("peak_margin_kw", Decimal("0.5"))


class ScheduleForm(forms.ModelForm):
    class Meta:
        model = SiteLimitSchedule
        fields = ["name", "weekdays", "start_time", "end_time", "limit_kw", "limit_a"]
        widgets = {
            "start_time": forms.TimeInput(attrs={"type": "time"}),
            "end_time": forms.TimeInput(attrs={"type": "time"}),
        }
        help_texts = {"weekdays": "Monday=0 … Sunday=6, e.g. 01234 for weekdays."}

    def clean_weekdays(self) -> str:
        value = "".join(sorted(set(self.cleaned_data["weekdays"].strip())))
        if not value or any(ch not in "0123456" for ch in value):
            raise forms.ValidationError("Use the digits 0 (Monday) to 6 (Sunday), e.g. 01234.")
        return value

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        if data.get("limit_kw") is None and data.get("limit_a") is None:
            raise forms.ValidationError("Set a power limit (kW), a current limit (A), or both.")
        return data


class CircuitForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=Circuit.Kind.choices, initial=Circuit.Kind.CIRCUIT)
    parent = forms.CharField(max_length=100, required=False, label="Below (circuit name; empty: the grid connection)")
    limit_a = forms.DecimalField(label="Limit per phase (A)", min_value=Decimal(0), max_digits=7, decimal_places=1)
    limit_kw = forms.DecimalField(
        label="Power limit (kW)", required=False, min_value=Decimal(0), max_digits=9, decimal_places=2
    )


class TariffUploadForm(forms.Form):
    record = forms.FileField(label="URDB v7 rate record (JSON)")
    valid_from = forms.DateField(label="Valid from (site local date)", widget=forms.DateInput(attrs={"type": "date"}))


class SiteGroupForm(forms.Form):
    """A site group's name and sites (a new group's slug comes from its name)."""

    name = forms.CharField(label="Group name", max_length=200)
    sites = forms.ModelMultipleChoiceField(
        label="Sites", queryset=Site.objects.order_by("name"), required=False, widget=forms.CheckboxSelectMultiple
    )


ORGANISATION = "organisation"


class SiteGrantForm(forms.Form):
    """A role for a person on the whole organisation, one site group or one site.

    ``target`` is ``organisation``, ``group:<id>`` or ``site:<id>``.
    """

    user: "forms.ModelChoiceField[User]" = forms.ModelChoiceField(label="Person", queryset=User.objects.none())
    role = forms.ChoiceField(label="Role", choices=Role.choices)
    target = forms.ChoiceField(label="On", choices=())

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["user"].queryset = User.objects.order_by("email")  # type: ignore[attr-defined]
        groups = [(f"group:{g.pk}", f"Group: {g.name}") for g in SiteGroup.objects.order_by("name")]
        sites = [(f"site:{s.pk}", f"Site: {s.name}") for s in Site.objects.order_by("name")]
        self.fields["target"].choices = [(ORGANISATION, "The whole organisation"), *groups, *sites]  # type: ignore[attr-defined]

    def target_objects(self) -> tuple[SiteGroup | None, Site | None]:
        """The chosen group or site (both None: the whole organisation)."""
        kind, _, pk = self.cleaned_data["target"].partition(":")
        if kind == "group":
            return SiteGroup.objects.get(pk=int(pk)), None
        if kind == "site":
            return None, Site.objects.get(pk=int(pk))
        return None, None
