"""``Idempotency-Key`` for the API's creating requests: a retry answers what the first one did.

Schema: tenant (the keys are ``tenants.accounts.IdempotencyKey`` rows of the organisation).

A client that sends ``Idempotency-Key: <1-255 printable ASCII characters>`` with a POST may send
it again (a lost answer, a timeout) without doing the work twice:

- the first request runs in one transaction with its key's row; a 2xx answer is kept with the
  key for 24 hours (``IDEMPOTENCY_TTL``), anything else is rolled back with the work (a 4xx
  changed nothing, and the same key may be used again for the corrected request);
- a repeat (same user, key, method, path, query and body) gets the kept status and body again,
  with ``Idempotent-Replayed: true``, and does nothing;
- the same key with another request is 422 naming the key;
- a repeat sent while the first is still running waits for it (the key's row is locked) and
  then replays its answer: concurrent duplicates never do the work twice.

A view may ``redact`` what is kept (a generated charger password is shown once, never stored).
"""

import hashlib
import json
import re
from collections.abc import Callable
from functools import wraps
from typing import Any, cast

from django.db import transaction
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from tenants.accounts.models import User
from tenants.accounts.services import idempotency_answer, idempotency_claim

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Printable ASCII, at most 255 characters, not starting or ending with a space (HTTP trims those).
KEY_PATTERN = r"^[!-~]([ -~]{0,253}[!-~])?$"
_KEY_RE = re.compile(KEY_PATTERN)

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    HEADER,
    type={"type": "string", "pattern": KEY_PATTERN, "minLength": 1, "maxLength": 255},
    location=OpenApiParameter.HEADER,
    required=False,
    description="Any unique string (e.g. a UUID): a repeat of this request with the same key within 24 "
    "hours answers what the first did (header Idempotent-Replayed: true) without doing it again; the "
    "same key with a different request is 422.",
)
KEY_REUSED_RESPONSE = OpenApiResponse(
    description="The Idempotency-Key was used with a different request (method, path, query or body)."
)


class IdempotencyKeyReused(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_key_reused"
    default_detail = "This Idempotency-Key was used with a different request."


def request_fingerprint(request: Request) -> str:
    """SHA-256 of what makes two requests the same: method, path, query and the parsed body."""
    query = sorted((name, sorted(values)) for name, values in request.query_params.lists())
    canonical = json.dumps(
        {"method": request.method, "path": request.path, "query": query, "body": request.data},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _key(request: Request) -> str | None:
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    if not _KEY_RE.fullmatch(raw):
        raise ValidationError({HEADER: ["1 to 255 printable ASCII characters, e.g. a UUID"]})
    return raw


def _as_json(data: Any) -> Any:
    """The body exactly as the client receives it (decimals as strings, times in ISO 8601)."""
    return json.loads(JSONRenderer().render(data)) if data is not None else None


Handler = Callable[..., Response]


def idempotent(redact: Callable[[Any], Any] | None = None) -> Callable[[Handler], Handler]:
    """Decorate a view method (``post``, ``create``) to honour ``Idempotency-Key`` (module docstring).

    Without the header the method runs as it is, in a transaction all the same (an error
    answer leaves nothing half written).
    """

    def decorator(handler: Handler) -> Handler:
        @wraps(handler)
        def wrapped(view: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
            key = _key(request)
            with transaction.atomic():
                if key is None:
                    response = handler(view, request, *args, **kwargs)
                    if not status.is_success(response.status_code):
                        transaction.set_rollback(True)
                    return response
                claim = idempotency_claim(
                    user=cast(User, request.user),
                    key=key,
                    request_sha256=request_fingerprint(request),
                    now=timezone.now(),
                )
                if claim.conflict:
                    raise IdempotencyKeyReused(
                        f"Idempotency-Key {key[:60]!r} was used for a different request (method, path, query or "
                        "body) within the last 24 hours; send a new key for a new request"
                    )
                if not claim.owned:
                    replay = Response(claim.record.response_body, status=claim.record.status_code)
                    replay[REPLAYED_HEADER] = "true"
                    return replay
                response = handler(view, request, *args, **kwargs)
                if not status.is_success(response.status_code):
                    transaction.set_rollback(True)
                    return response
                body = _as_json(response.data)
                idempotency_answer(
                    record=claim.record, status_code=response.status_code, body=redact(body) if redact else body
                )
                return response

        return wrapped

    return decorator
