"""Identifier rules shared by models, services and commands."""

import re

from django.core.validators import RegexValidator

# Becomes the PostgreSQL schema name (hyphens turned into underscores), so it must stay short,
# lower-case and free of anything that needs quoting.
TENANT_SLUG_RE = re.compile(r"^[a-z][a-z0-9-]{1,39}$")
RESERVED_TENANT_SLUGS = frozenset({"public", "information-schema", "information_schema", "platform"})

# OCPP charge point identity: a URL path segment of at most 48 characters (OCPP 1.6
# chargeBoxIdentity CiString48; OCPP 2.0.1 security whitepaper: unreserved URL characters).
CHARGE_POINT_ID_RE = re.compile(r"^[A-Za-z0-9._~-]{1,48}$")

validate_tenant_slug = RegexValidator(
    TENANT_SLUG_RE,
    "must be 2-40 characters: lower-case letters, digits and hyphens, starting with a letter",
)
validate_charge_point_id = RegexValidator(
    CHARGE_POINT_ID_RE,
    "must be 1-48 characters of letters, digits, '.', '_', '~' or '-'",
)


def schema_name_for_slug(slug: str) -> str:
    """The PostgreSQL schema a tenant slug maps to."""
    return slug.replace("-", "_")
