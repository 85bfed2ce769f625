"""Helpers for management commands: turn service errors into messages naming the option."""

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.core.management.base import CommandError

from evplatform.services import Outcome

if TYPE_CHECKING:
    from tenants.models import Tenant


def command_error(exc: ValidationError | ObjectDoesNotExist, options: Mapping[str, str]) -> CommandError:
    """A ``CommandError`` whose lines name the command-line option of each bad field.

    ``options`` maps a service/model field name to the option a user typed, e.g.
    ``{"limit_a": "--limit-a"}``; unmapped fields are shown by their own name.
    """
    if isinstance(exc, ObjectDoesNotExist):
        field = getattr(exc, "field", None)
        return CommandError(f"{options.get(field, field)}: {exc}" if field else str(exc))
    if hasattr(exc, "error_dict"):
        lines = []
        for field, errors in exc.message_dict.items():
            label = options.get(field, field)
            lines.append(f"{label}: {' '.join(errors)}")
        return CommandError("; ".join(lines))
    return CommandError(" ".join(exc.messages))


def decimal_arg(value: str) -> Decimal:
    """argparse type: a finite decimal number, with a message that says what was typed."""
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a number") from None
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    return number


decimal_arg.__name__ = "number"


def outcome_message(kind: str, label: str, outcome: Outcome[Any]) -> str:
    if outcome.created:
        return f"{kind} {label} created"
    if outcome.changes:
        return f"{kind} {label} updated: " + "; ".join(outcome.changes)
    return f"{kind} {label} already up to date"


def tenant_arg(slug: str) -> "Tenant":
    """The organisation named by ``--tenant``, or a ``CommandError`` saying it does not exist."""
    from tenants.selectors import TenantNotFoundError, tenant_get

    try:
        return tenant_get(slug=slug)
    except TenantNotFoundError as exc:
        raise CommandError(f"--tenant: {exc}") from exc
