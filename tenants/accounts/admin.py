"""Users in both admin sites (platform staff in public, an organisation's people in its own); an
organisation's identity providers, sign-in policy and second factors in its own."""

from typing import Any

from allauth.mfa.models import Authenticator
from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.http import HttpRequest

from evplatform.admin_sites import platform_admin_site, tenant_admin_site
from evplatform.permissions import actor_of
from tenants.accounts.models import AuditEvent, IdentityProvider, SignInPolicy, User, WorkerHeartbeat
from tenants.accounts.services import authenticator_remove, sign_in_settings_save


class UserAdmin(DjangoUserAdmin):
    ordering = ("email",)
    list_display = ("email", "full_name", "role", "is_active", "is_staff", "last_login")
    list_filter = ("role", "is_active", "is_staff")
    search_fields = ("email", "full_name")
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Person", {"fields": ("full_name", "role")}),
        ("Access", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "role", "password1", "password2")}),)


class WorkerHeartbeatAdmin(admin.ModelAdmin):
    list_display = ("queue", "completed_at", "sent_at", "worker")
    readonly_fields = ("queue", "token", "sent_at", "completed_at", "worker")


for site in (platform_admin_site, tenant_admin_site):
    site.register(User, UserAdmin)
    site.register(WorkerHeartbeat, WorkerHeartbeatAdmin)


@admin.register(AuditEvent, site=tenant_admin_site)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("at", "actor", "action", "object_type", "object_label", "field", "old_value", "new_value")
    list_filter = ("object_type", "action")
    search_fields = ("actor", "object_label")
    date_hierarchy = "at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


SECRET_FIELDS = frozenset({"client_secret"})


class AuditedSettingsAdmin(admin.ModelAdmin):
    """Saves through ``sign_in_settings_save``: every changed field audited, secrets as "(changed)"."""

    def save_model(self, request: HttpRequest, obj: Any, form: forms.ModelForm, change: bool) -> None:
        changes = [
            (
                name,
                "(set)" if name in SECRET_FIELDS and form.initial.get(name) else form.initial.get(name),
                "(changed)" if name in SECRET_FIELDS else form.cleaned_data.get(name),
            )
            for name in form.changed_data
        ]
        sign_in_settings_save(instance=obj, changes=changes, actor=actor_of(request))


class IdentityProviderForm(forms.ModelForm):
    """The client secret can be set or replaced, never read back."""

    client_secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only: stored in the organisation's schema; leave blank to keep the one set.",
    )

    server_url = forms.URLField(
        label="Issuer URL",
        assume_scheme="https",
        help_text=IdentityProvider._meta.get_field("server_url").help_text,
    )

    class Meta:
        model = IdentityProvider
        fields = (
            "name",
            "slug",
            "is_active",
            "server_url",
            "client_id",
            "client_secret",
            "client_secret_env",
            "groups_claim",
            "group_roles",
            "default_role",
            "trust_email",
        )

    def clean_client_secret(self) -> str:
        return self.cleaned_data["client_secret"] or (self.instance.client_secret if self.instance.pk else "")

    @property
    def changed_data(self) -> list[str]:
        changed = super().changed_data
        # A blank (kept) secret is no change; a typed one always is.
        return [f for f in changed if f != "client_secret"] + (
            ["client_secret"] if self.data.get(self.add_prefix("client_secret")) else []
        )


@admin.register(IdentityProvider, site=tenant_admin_site)
class IdentityProviderAdmin(AuditedSettingsAdmin):
    form = IdentityProviderForm
    list_display = ("name", "slug", "server_url", "client_id", "default_role", "is_active")
    fieldsets = (
        (None, {"fields": ("name", "slug", "is_active")}),
        ("OpenID Connect", {"fields": ("server_url", "client_id", "client_secret", "client_secret_env")}),
        ("Roles", {"fields": ("groups_claim", "group_roles", "default_role", "trust_email")}),
    )


@admin.register(SignInPolicy, site=tenant_admin_site)
class SignInPolicyAdmin(AuditedSettingsAdmin):
    list_display = ("__str__", "require_sso", "require_mfa")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not SignInPolicy.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Authenticator, site=tenant_admin_site)
class AuthenticatorAdmin(admin.ModelAdmin):
    """A person's second factors; deleting one lets them set up a new one (a lost phone)."""

    list_display = ("user", "type", "created_at", "last_used_at")
    list_filter = ("type",)
    search_fields = ("user__email",)
    fields = ("user", "type", "created_at", "last_used_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: Authenticator) -> None:
        authenticator_remove(authenticator=obj, actor=actor_of(request))

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for authenticator in queryset:
            authenticator_remove(authenticator=authenticator, actor=actor_of(request))
