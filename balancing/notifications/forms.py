"""Portal forms of the Notifications and Webhooks pages (the services check everything again)."""

from typing import Any

from django import forms

from balancing.models import Site, SiteGroup
from balancing.notifications.models import EVENT_KINDS


class PreferenceForm(forms.Form):
    email_kinds = forms.MultipleChoiceField(
        label="Email me about", choices=EVENT_KINDS, required=False, widget=forms.CheckboxSelectMultiple
    )
    email_cleared = forms.BooleanField(label="Also when an alert clears", required=False)
    all_sites = forms.TypedChoiceField(
        label="For",
        choices=[("1", "every site I can see"), ("0", "only the groups and sites chosen below")],
        coerce=lambda value: value == "1",
        widget=forms.RadioSelect,
    )
    groups = forms.ModelMultipleChoiceField(
        label="Site groups", queryset=SiteGroup.objects.none(), required=False, widget=forms.CheckboxSelectMultiple
    )
    sites = forms.ModelMultipleChoiceField(
        label="Sites", queryset=Site.objects.none(), required=False, widget=forms.CheckboxSelectMultiple
    )

    def __init__(self, *args: Any, sites: Any, groups: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["sites"].queryset = sites  # type: ignore[attr-defined]
        self.fields["groups"].queryset = groups  # type: ignore[attr-defined]


class WebhookEndpointForm(forms.Form):
    name = forms.CharField(label="Name", max_length=100)
    url = forms.CharField(
        label="URL",
        max_length=500,
        help_text="https://…; plain http only to localhost (or with DEBUG on).",
        widget=forms.URLInput(attrs={"placeholder": "https://example.com/hooks/evp"}),
    )
    kinds = forms.MultipleChoiceField(
        label="Events", choices=EVENT_KINDS, required=False, widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every kind.",
    )  # fmt: skip
    send_cleared = forms.BooleanField(label="Also alert.cleared", required=False, initial=True)
    groups = forms.ModelMultipleChoiceField(
        label="Only these site groups",
        queryset=SiteGroup.objects.order_by("name"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every site.",
    )
