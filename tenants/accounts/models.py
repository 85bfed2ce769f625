"""Users with roles, and the heartbeat rows that prove workers serve each tenant.

Schema: every schema (tenant users in tenant schemas, platform staff in public).
"""

from typing import Any, ClassVar

from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Lower
from django.db.models.lookups import Exact
from django.utils import timezone


class Role(models.TextChoices):
    """What a person may do inside an organisation.

    Load-management settings may only be changed by qualified people (NEC 750.30): that is
    the energy manager (and the admin, who also manages users).
    """

    ADMIN = "admin", "Admin"
    ENERGY_MANAGER = "energy_manager", "Energy manager"
    SITE_VIEWER = "site_viewer", "Site viewer"
    FINANCE = "finance", "Finance"


# How an empty ``User.role`` reads in the portal: the person's roles are on site groups or sites.
NO_ORG_ROLE_LABEL = "— (site grants only)"


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create(self, email: str, password: str | None, **fields: Any) -> "User":
        if not email:
            raise ValueError("email is required")
        user = self.model(email=self.normalize_email(email).lower(), **fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def get_by_natural_key(self, username: str | None) -> "User":
        """The user whose email is ``username`` in any letter case (emails are stored lowercased).

        Compares ``lower(email)``, the expression the unique index is built on.
        """
        return self.get(Exact(Lower("email"), (username or "").strip().lower()))

    def create_user(self, email: str, password: str | None = None, **fields: Any) -> "User":
        fields.setdefault("is_staff", False)
        fields.setdefault("is_superuser", False)
        return self._create(email, password, **fields)

    def create_superuser(self, email: str, password: str | None = None, **fields: Any) -> "User":
        fields.setdefault("is_staff", True)
        fields.setdefault("is_superuser", True)
        fields.setdefault("role", Role.ADMIN)
        return self._create(email, password, **fields)


class User(AbstractBaseUser, PermissionsMixin):
    """A person who signs in with an email address, inside one schema only."""

    email = models.EmailField(max_length=254, unique=True)
    full_name = models.CharField(max_length=200, blank=True)
    role = models.CharField(
        max_length=20,
        choices=Role.choices,
        default=Role.SITE_VIEWER,
        blank=True,
        help_text="Role on the whole organisation; empty: only the roles granted on site groups or sites.",
    )
    is_staff = models.BooleanField(default=False, help_text="May sign in to the Django admin.")
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)

    objects: ClassVar[UserManager] = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta:
        ordering = ["email"]
        constraints = [
            models.UniqueConstraint(Lower("email"), name="user_email_unique_ci"),
            models.CheckConstraint(condition=models.Q(role__in=[*Role.values, ""]), name="user_role_valid"),
        ]

    def __str__(self) -> str:
        return self.email

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Every path (admin forms included) stores the address lowercased, as sign-in looks it up.
        self.email = self.email.strip().lower()
        super().save(*args, **kwargs)

    @property
    def role_label(self) -> str:
        """The organisation role as people read it; none: the user has only site grants."""
        return self.get_role_display() if self.role else NO_ORG_ROLE_LABEL

    @property
    def can_change_limits(self) -> bool:
        return self.is_active and self.role in (Role.ADMIN, Role.ENERGY_MANAGER)


class WorkerHeartbeat(models.Model):
    """Last time a worker ran a task for this schema on a queue: proof the queue is served."""

    queue = models.CharField(max_length=40, unique=True)
    token = models.CharField(max_length=64)
    sent_at = models.DateTimeField()
    completed_at = models.DateTimeField()
    worker = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["queue"]

    def __str__(self) -> str:
        return f"{self.queue} @ {self.completed_at:%Y-%m-%d %H:%M:%S}"


class AuditEvent(models.Model):
    """Who changed what, when, from which value to which (NEC 750.30: load-management settings)."""

    at = models.DateTimeField(default=timezone.now)
    actor = models.CharField(max_length=254, help_text="Email of the person, or 'system:<command>'.")
    action = models.CharField(max_length=50)
    object_type = models.CharField(max_length=50)
    object_id = models.CharField(max_length=64)
    object_label = models.CharField(max_length=200, blank=True)
    field = models.CharField(max_length=50, blank=True)
    old_value = models.TextField(blank=True)
    new_value = models.TextField(blank=True)

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["object_type", "object_id", "-at"], name="audit_object_latest")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.actor} {self.action} {self.object_label} {self.field}"


class ApiToken(models.Model):
    """A bearer token for the REST API, stored only as a SHA-256 hash (shown once at creation).

    ``scope`` narrows what the token may do below its user's role: ``read`` only reads,
    ``meter-write`` only posts site meter readings (a meter gateway's token, nothing else).
    A token named by site groups (``SiteGroup.api_tokens``, tenant schemas only) reaches only
    those groups' sites.
    """

    class Scope(models.TextChoices):
        FULL = "full", "Full (what the user's role allows)"
        READ = "read", "Read only"
        METER_WRITE = "meter-write", "Post site meter readings only"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    scope = models.CharField(max_length=12, choices=Scope.choices, default=Scope.FULL)
    name = models.CharField(max_length=100, help_text="What it is for, e.g. 'BMS integration'.")
    prefix = models.CharField(max_length=8, help_text="First characters, to recognise it in lists.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_usable(self) -> bool:
        now = timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class IdempotencyKey(models.Model):
    """The first answer to an API request sent with an ``Idempotency-Key`` header, kept for a day.

    Schema: tenant (the API's). One row per (user, key): a repeat of the same request (method,
    path, query and body, ``request_sha256``) gets this answer again instead of doing it twice;
    another request under the same key is refused. A row is written in the transaction of the
    request it answers, so a committed row always holds an answer (``status_code``) and one being
    answered is locked: a concurrent repeat waits for it (``evplatform.idempotency``).
    """

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="idempotency_keys")
    key = models.CharField(max_length=255)
    request_sha256 = models.CharField(max_length=64, help_text="Of the method, path, query and body.")
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_unique_per_user")]
        indexes = [models.Index(fields=["expires_at"], name="idempotency_key_expiry")]

    def __str__(self) -> str:
        return f"{self.user_id}: {self.key[:40]}"


class Enforcement(models.TextChoices):
    """Whom a sign-in policy applies to: nobody, people with the admin role, or everyone."""

    NONE = "none", "Nobody"
    ADMINS = "admins", "Admins"
    EVERYONE = "everyone", "Everyone"


def applies_to(enforcement: str, user: User) -> bool:
    """The policy covers ``user``: everyone, or admins (of the organisation, a site group or a site)."""
    if enforcement == Enforcement.EVERYONE:
        return True
    if enforcement != Enforcement.ADMINS:
        return False
    return user.role == Role.ADMIN or (user.pk is not None and user.site_grants.filter(role=Role.ADMIN).exists())


class SignInPolicy(models.Model):
    """How the organisation's people must sign in: one row per schema (``SignInPolicy.current()``).

    ``require_sso``: these people cannot sign in with a password, only with an identity provider.
    ``require_mfa``: these people must enrol a second factor (TOTP app or WebAuthn key) before any
    portal page, and give it at every sign-in.
    """

    singleton = models.BooleanField(default=True, unique=True, editable=False)
    require_sso = models.CharField(
        "Single sign-on required for", max_length=10, choices=Enforcement.choices, default=Enforcement.NONE
    )
    require_mfa = models.CharField(
        "Second factor required for", max_length=10, choices=Enforcement.choices, default=Enforcement.NONE
    )

    class Meta:
        verbose_name = "sign-in policy"
        verbose_name_plural = "sign-in policy"
        constraints = [models.CheckConstraint(condition=models.Q(singleton=True), name="signinpolicy_single_row")]

    def __str__(self) -> str:
        return f"SSO: {self.get_require_sso_display()}; second factor: {self.get_require_mfa_display()}"

    @classmethod
    def current(cls) -> "SignInPolicy":
        """The active schema's policy; an unsaved all-"none" policy where none was stored."""
        return cls.objects.filter(singleton=True).first() or cls()


class IdentityProvider(models.Model):
    """An OpenID Connect identity provider people of this organisation sign in with.

    allauth sees each active row as an ``openid_connect`` app whose provider id is ``slug``;
    the redirect URI to register at the IdP is ``https://<org domain>/accounts/oidc/<slug>/login/callback/``.
    ``group_roles`` maps an IdP group (in the ``groups_claim`` claim of the ID token or userinfo)
    to a role on the whole organisation, e.g. ``{"ev-admins": "admin", "ev-finance": "finance"}``,
    or to a role on a site group, ``{"north-fm": {"role": "energy_manager", "site_group": "north"}}``
    (tenants.accounts.sso.assignment_for_groups); in no mapped group, ``default_role``, or refused.
    """

    slug = models.SlugField(
        "Provider id", max_length=40, unique=True, help_text="In the redirect URI: /accounts/oidc/<id>/login/callback/"
    )
    name = models.CharField(max_length=80, help_text="Shown on the button: 'Sign in with <name>'.")
    server_url = models.URLField(
        "Issuer URL", help_text="Where /.well-known/openid-configuration is found, e.g. https://login.example.com/"
    )
    client_id = models.CharField(max_length=200)
    client_secret = models.CharField(
        max_length=500, blank=True, help_text="Stored in the organisation's schema; leave blank to keep the one set."
    )
    client_secret_env = models.CharField(
        "Client secret from environment variable",
        max_length=100,
        blank=True,
        help_text="Name of an OIDC_SECRET_<NAME> variable of the platform; wins over the stored secret.",
    )
    groups_claim = models.CharField(max_length=100, default="groups")
    group_roles = models.JSONField(
        "Group to role mapping",
        default=dict,
        blank=True,
        help_text='IdP group name to a role on the organisation, e.g. {"ev-admins": "admin"}, or on a site '
        'group: {"north-fm": {"role": "energy_manager", "site_group": "north"}}.',
    )
    default_role = models.CharField(
        max_length=20,
        choices=Role.choices,
        blank=True,
        help_text="Role of a person in no mapped group; blank refuses them.",
    )
    trust_email = models.BooleanField(
        default=False,
        help_text="Take the IdP's email as the person's even without an email_verified claim.",
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(default_role="") | models.Q(default_role__in=Role.values),
                name="identityprovider_default_role_valid",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from tenants.accounts.hooks import account_hooks
        from tenants.accounts.sso import group_roles_errors, site_groups_named

        errors: dict[str, list[str]] = {}
        if self.slug == "openid_connect":
            errors["slug"] = ["'openid_connect' is the provider type; choose another id, e.g. 'okta'."]
        if mapping_errors := group_roles_errors(self.group_roles):
            errors["group_roles"] = mapping_errors
        elif missing := site_groups_named(self.group_roles) - account_hooks().site_group_slugs():
            errors["group_roles"] = [f"No site group '{slug}'." for slug in sorted(missing)]
        if not (self.client_secret or self.client_secret_env):
            errors["client_secret"] = ["Set a client secret or the environment variable that holds it."]
        if self.client_secret_env and not self.client_secret_env.startswith("OIDC_SECRET_"):
            errors["client_secret_env"] = ["The variable's name must start with OIDC_SECRET_."]
        if errors:
            raise ValidationError(errors)
