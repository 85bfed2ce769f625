"""What the API's write endpoints share: service errors as 400s naming the field, 409 conflicts.

A site named in a write's body is an ``evplatform.api_access.ReachableSiteField``: one the caller
does not reach is a 400 "does not exist" naming ``site``, as an unknown one is.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError


class Conflict(APIException):
    """409: the object cannot do this in its present state (a circuit with chargers on it)."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The object cannot do this now."


def _messages(exc: DjangoValidationError, renamed: Mapping[str, str]) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return {renamed.get(name, name): messages for name, messages in exc.message_dict.items()}
    return {"non_field_errors": list(exc.messages)}


@contextmanager
def service_errors(renamed: Mapping[str, str] | None = None) -> Iterator[None]:
    """A service's ``ValidationError`` and not-found errors (``balancing.selectors``) as a 400 by field.

    ``renamed``: the API's name of a field the service names otherwise (``circuit`` -> ``parent``).
    """
    names = renamed or {}
    try:
        yield
    except DjangoValidationError as exc:
        raise ValidationError(_messages(exc, names)) from exc
    except ObjectDoesNotExist as exc:
        name = str(getattr(exc, "field", "") or "non_field_errors")
        raise ValidationError({names.get(name, name): [str(exc)]}) from exc


@contextmanager
def conflict_errors() -> Iterator[None]:
    """A service's ``ValidationError`` as a 409 saying why (for a request without a body: DELETE)."""
    try:
        yield
    except DjangoValidationError as exc:
        raise Conflict(" ".join(exc.messages)) from exc
