"""Compiled OCPP JSON-schema checks for the messages a charger sends most often.

Schema: none. The ``ocpp`` library checks every payload with ``jsonschema`` (about 0.3 ms for a
MeterValues on this machine, most of a message's cost), and checks its own answers too. For
the hot actions the handlers opt out of that (``skip_schema_validation``) and the gateway
checks the request here instead, against the library's own schema files compiled with
``fastjsonschema``, raising the same CALLERRORs the library would.
"""

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import ocpp
from ocpp.exceptions import FormatViolationError, OCPPError, ProtocolError, TypeConstraintViolationError

SCHEMA_DIRS = {"1.6": "v16", "2.0.1": "v201"}


@cache
def _validator(ocpp_version: str, action: str) -> Callable[[Any], Any]:
    suffix = "" if ocpp_version == "1.6" else "Request"
    path = Path(ocpp.__file__).parent / SCHEMA_DIRS[ocpp_version] / "schemas" / f"{action}{suffix}.json"
    schema = json.loads(path.read_text(encoding="utf-8-sig"))
    schema.pop("$id", None)  # a URN id would send fastjsonschema looking for it
    return fastjsonschema.compile(schema)


def validate_request(ocpp_version: str, action: str, payload: Any) -> None:
    """Raise the OCPP error for a request payload that breaks its schema."""
    try:
        _validator(ocpp_version, action)(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise _ocpp_error(exc) from None


def _ocpp_error(exc: fastjsonschema.JsonSchemaValueException) -> OCPPError:
    # The same mapping as ocpp.messages._validate_payload, so both paths answer alike.
    details = {"cause": exc.message[:200]}
    if exc.rule in ("type", "maxLength"):
        return TypeConstraintViolationError(details=details)
    if exc.rule == "required":
        return ProtocolError(details=details)
    return FormatViolationError(details=details)
