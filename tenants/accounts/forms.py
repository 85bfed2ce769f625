"""Portal forms for signing in, users and API tokens."""

from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator

from tenants.accounts.models import ApiToken, Role
from tenants.accounts.policy import (
    active_providers,
    current_policy,
    password_refusal,
    password_refused_for_everyone,
    sso_message,
)


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


class SignInPolicyMixin:
    """Refuses a password sign-in that the organisation's SignInPolicy reserves for SSO.

    With SSO required for everyone the password is not even checked (nothing to guess); with SSO
    required for admins an admin's correct password is answered with where to sign in instead.
    """

    def clean(self) -> dict[str, Any]:
        policy = current_policy()
        if password_refused_for_everyone(policy):
            raise ValidationError(sso_message(active_providers()), code="sso_required")
        return super().clean()  # type: ignore[misc]

    def confirm_login_allowed(self, user: Any) -> None:
        super().confirm_login_allowed(user)  # type: ignore[misc]
        if refusal := password_refusal(user, current_policy()):
            raise ValidationError(refusal, code="sso_required")


class SignInForm(SignInPolicyMixin, AuthenticationForm):
    pass


class AdminSignInForm(SignInPolicyMixin, AdminAuthenticationForm):
    pass
