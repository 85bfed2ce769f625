"""Portal forms for users and API tokens."""

from typing import Any

from django import forms
from django.core.validators import MaxValueValidator

from tenants.accounts.models import NO_ORG_ROLE_LABEL, ApiToken, Role

# A role on the whole organisation, or none (the person's roles are then granted on site groups or sites).
ORG_ROLE_CHOICES = [*Role.choices, ("", NO_ORG_ROLE_LABEL)]


class UserInviteForm(forms.Form):
    email = forms.EmailField(label="Email")
    full_name = forms.CharField(label="Name", max_length=200, required=False)
    role = forms.ChoiceField(label="Role", choices=ORG_ROLE_CHOICES, required=False)


class UserRoleForm(forms.Form):
    role = forms.ChoiceField(label="Role", choices=ORG_ROLE_CHOICES, required=False)
    is_active = forms.BooleanField(label="Active", required=False)


class TokenForm(forms.Form):
    name = forms.CharField(label="What is it for?", max_length=100)
    expires_in_days = forms.IntegerField(label="Expires after (days)", min_value=1)
    scope = forms.ChoiceField(
        label="May do", choices=ApiToken.Scope.choices, initial=ApiToken.Scope.FULL, required=False
    )

    site_groups: "forms.ModelMultipleChoiceField[Any]" = forms.ModelMultipleChoiceField(
        label="Only the sites of",
        queryset=None,
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )

    def __init__(self, *args: Any, max_days: int, site_groups: Any, groups_required: bool, **kwargs: Any) -> None:
        """``max_days``: the longest the user's role may have a token last (``tokens.token_max_days``);
        ``site_groups``: the groups the user may limit a token to (``balancing.groups.groups_within``)."""
        super().__init__(*args, **kwargs)
        groups = self.fields["site_groups"]
        groups.queryset = site_groups  # type: ignore[attr-defined]
        groups.required = groups_required
        groups.help_text = (
            "Your roles are on site groups: pick the groups this token may reach."
            if groups_required
            else "None ticked: every site you reach."
        )
        field = self.fields["expires_in_days"]
        field.initial = max_days
        field.help_text = f"At most {max_days} days for your role."
        field.widget.attrs["max"] = max_days
        field.validators.append(
            MaxValueValidator(max_days, message=f"A token of your role may last at most {max_days} days.")
        )
