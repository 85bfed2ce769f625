"""Portal forms for a site's load-management settings (validated again by the services)."""

from decimal import Decimal

from django import forms

from balancing.models import Circuit, Site, SiteLimitSchedule


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
    confirm = forms.BooleanField(required=False, widget=forms.HiddenInput, help_text="Set on the confirmation step.")


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
