"""Small pieces every app's services share."""

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Generic, TypeVar

from django.db import connection
from django_tenants.utils import get_public_schema_name

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What an idempotent create-or-update did: the object, whether it is new, what changed."""

    obj: T
    created: bool
    changes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.created or bool(self.changes)


def active_schema() -> str:
    """The schema the default connection is set to (django-tenants' backend attribute)."""
    return str(connection.schema_name)  # type: ignore[attr-defined]


def require_tenant_schema(what: str) -> None:
    """Fail loudly when tenant-only code runs in the public schema."""
    if active_schema() == get_public_schema_name():
        raise RuntimeError(f"{what} must run inside a tenant schema (tenant_context), not in public")


def _shown(value: object) -> str:
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    return "none" if value is None else str(value)


def describe_change(name: str, old: object, new: object) -> str:
    """``limit_a: 100 -> 80``: one changed field, in words an operator reads in a log."""
    return f"{name}: {_shown(old)} -> {_shown(new)}"
