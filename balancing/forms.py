"""Portal forms for a site's load-management settings (validated again by the services)."""

from decimal import Decimal

from django import forms

from balancing.models import Circuit, SiteLimitSchedule


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
