"""Reads of organisations and the charger registry. Schema: public."""

from django.core.exceptions import ObjectDoesNotExist
from django_tenants.utils import get_public_schema_name

from tenants.models import ChargePointIdentity, Tenant


class TenantNotFoundError(ObjectDoesNotExist):
    field = "tenant"

    def __init__(self, slug: str) -> None:
        super().__init__(f"no organisation with slug {slug!r}")
        self.slug = slug


def tenant_get(*, slug: str) -> Tenant:
    """The organisation with this slug (never the public pseudo-tenant)."""
    tenant = Tenant.objects.exclude(schema_name=get_public_schema_name()).filter(slug=slug).first()
    if tenant is None:
        raise TenantNotFoundError(slug)
    return tenant


def tenant_list_active() -> list[Tenant]:
    return list(Tenant.objects.exclude(schema_name=get_public_schema_name()).filter(is_active=True))


def identity_find(*, charge_point_id: str) -> ChargePointIdentity | None:
    """The registry entry for a charger id (compared without regard to case)."""
    return ChargePointIdentity.objects.select_related("tenant").filter(charge_point_id__iexact=charge_point_id).first()
