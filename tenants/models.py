"""Organisations, their domains and the charger identity registry.

Schema: public. These rows are what the platform knows before it knows any tenant: which
organisation a hostname belongs to, and which organisation and site a charger belongs to.
"""

from django.contrib.auth.hashers import check_password, make_password
from django.db import models
from django.db.models.functions import Lower
from django_tenants.models import DomainMixin, TenantMixin

from tenants.validators import validate_charge_point_id, validate_tenant_slug


class Tenant(TenantMixin):
    """An organisation: a mall operator, a university, a condominium association."""

    slug = models.CharField(max_length=40, unique=True, validators=[validate_tenant_slug])
    name = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    auto_create_schema = True
    auto_drop_schema = False

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"


class Domain(DomainMixin):
    """A hostname that routes to one tenant's schema (or to public, for the platform)."""

    class Meta:
        constraints = [models.UniqueConstraint(Lower("domain"), name="domain_unique_ci")]

    def __str__(self) -> str:
        return self.domain


class ChargePointIdentity(models.Model):
    """Registry entry a gateway checks at the websocket handshake, before it knows the tenant.

    The password (OCPP security profile 1/2, HTTP Basic) is stored only as a Django password
    hash. ``site_slug`` names the site inside the tenant's schema.
    """

    charge_point_id = models.CharField(max_length=48, unique=True, validators=[validate_charge_point_id])
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="charge_points")
    site_slug = models.SlugField(max_length=50)
    password_hash = models.CharField(max_length=256)
    is_active = models.BooleanField(default=True)
    password_changed_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "charge point identity"
        verbose_name_plural = "charge point identities"
        ordering = ["charge_point_id"]
        constraints = [
            models.UniqueConstraint(Lower("charge_point_id"), name="charge_point_id_unique_ci"),
        ]

    def __str__(self) -> str:
        return self.charge_point_id

    def set_password(self, raw_password: str) -> None:
        self.password_hash = make_password(raw_password)

    def check_password(self, raw_password: str) -> bool:
        return check_password(raw_password, self.password_hash)
