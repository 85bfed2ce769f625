"""Portal forms for signing in, users and API tokens."""

from typing import Any

from django import forms
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator

from tenants.accounts.models import NO_ORG_ROLE_LABEL, ApiToken, Role
from tenants.accounts.policy import (
    active_providers,
    current_policy,
    password_refusal,
    password_refused_for_everyone,
    sso_message,
)

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

    def __init__(
        self, *args: Any, max_days: int, site_groups: Any | None, groups_required: bool, **kwargs: Any
    ) -> None:
        """``max_days``: the longest the user's role may have a token last (``tokens.token_max_days``);
        ``site_groups``: the groups the user may limit a token to (``hooks.TokenReach.site_groups``;
        None, where the organisation has no site groups, leaves the field out)."""
        super().__init__(*args, **kwargs)
        if site_groups is None:
            del self.fields["site_groups"]
        else:
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
