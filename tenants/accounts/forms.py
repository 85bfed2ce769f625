"""Portal forms for users and API tokens."""

from django import forms

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
    expires_in_days = forms.IntegerField(label="Expires after (days)", min_value=1, max_value=730, initial=365)
    scope = forms.ChoiceField(
        label="May do", choices=ApiToken.Scope.choices, initial=ApiToken.Scope.FULL, required=False
    )
