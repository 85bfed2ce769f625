"""The OpenAPI schema's shared parts: strict decimals and the error answers of every operation."""

from typing import Any

from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers

from evplatform.api_plumbing import decimal_pattern


class ApiSchema(AutoSchema):
    """drf-spectacular's schema, with decimals as strictly as the fields take them.

    Its decimal pattern lets "" and "-" through, and a minus sign on a field with a minimum of 0;
    here it is the one ``StrictDecimalField`` checks.
    """

    def _map_serializer_field(self, field: Any, direction: Any, bypass_extensions: bool = False) -> Any:
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if isinstance(field, serializers.DecimalField) and "pattern" in schema:
            schema["pattern"] = decimal_pattern(field)
        return schema


ERROR_COMPONENT = {
    "type": "object",
    "description": "Every error answer of the API.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "status": {"type": "integer", "description": "The HTTP status again."},
                "code": {"type": "string", "description": "Machine-readable, e.g. invalid, not_found, throttled."},
                "message": {"type": "string", "description": "What was wrong, in words."},
                "fields": {
                    "type": "object",
                    "additionalProperties": {},
                    "description": "Input that was not valid: each field (or parameter) with its messages.",
                },
            },
            "required": ["status", "code", "message"],
        }
    },
    "required": ["error"],
}
ERROR_DESCRIPTIONS = {
    400: "Bad input (a parameter or the body), naming what was wrong; nothing changed.",
    401: "No valid credentials (a bearer token or a signed-in session).",
    403: "The caller's role may not do this.",
    404: "No such object (of this organisation).",
    409: "Conflict: the target cannot do it now.",
    415: "The body is not JSON.",
    429: "Too many requests: wait for Retry-After seconds.",
}


def error_responses_hook(result: dict[str, Any], **_: Any) -> dict[str, Any]:
    """Adds the error answers every operation can give, all in the one ``Error`` shape.

    401, 403 and 429 everywhere (authentication, roles, throttling); 400 where there is input
    besides the path;
    404 where the path names an object; 415 where there is a body.
    """
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_COMPONENT
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method not in {"get", "put", "patch", "post", "delete"}:
                continue
            parameters = operation.get("parameters", [])
            codes = {401, 403, 429}
            if any(p.get("in") != "path" for p in parameters) or "requestBody" in operation:
                codes.add(400)
            if any(p.get("in") == "path" for p in parameters):
                codes.add(404)
            if "requestBody" in operation:
                codes.add(415)
            responses = operation.setdefault("responses", {})
            for code in sorted(codes | {int(c) for c in responses if c.isdigit() and int(c) >= 400}):
                declared = responses.setdefault(str(code), {})
                declared.setdefault("description", ERROR_DESCRIPTIONS.get(code, "Error."))
                declared.setdefault("content", error)
    return result
