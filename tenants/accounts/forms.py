"""Portal forms for users and API tokens."""

from typing import Any

from django import forms
from django.core.validators import MaxValueValidator

from tenants.accounts.models import ApiToken, Role


class UserInviteForm(forms.Form):
    email = forms.EmailField(label="Email")
    full_name = forms.CharField(label="Name", max_length=200, required=False)
    role = forms.ChoiceField(label="Role", choices=Role.choices)


class UserRoleForm(forms.Form):
    role = forms.ChoiceField(label="Role", choices=Role.choices)
    is_active = forms.BooleanField(label="Active", required=False)


class TokenForm(forms.Form):
    name = forms.CharField(label="What is it for?", max_length=100)
    expires_in_days = forms.IntegerField(label="Expires after (days)", min_value=1)
    scope = forms.ChoiceField(
        label="May do", choices=ApiToken.Scope.choices, initial=ApiToken.Scope.FULL, required=False
    )

    def __init__(self, *args: Any, max_days: int, **kwargs: Any) -> None:
        """``max_days``: the longest the user's role may have a token last (``tokens.token_max_days``)."""
        super().__init__(*args, **kwargs)
        field = self.fields["expires_in_days"]
        field.initial = max_days
        field.help_text = f"At most {max_days} days for your role."
        field.widget.attrs["max"] = max_days
        field.validators.append(
            MaxValueValidator(max_days, message=f"A token of your role may last at most {max_days} days.")
        )
