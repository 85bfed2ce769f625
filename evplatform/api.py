"""REST API plumbing shared by every app: one error body shape.

Every error answers ``{"error": {"status": 400, "code": "invalid", "message": "...",
"fields": {"limit_a": ["..."]}}}`` so integrators parse one format.
"""

from datetime import UTC
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    # Django's own, as DRF's handler turns them into its own (and their codes: not_found, ...).
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(*exc.args)
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(*exc.args)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail: Any = response.data
    body: dict[str, Any] = {"status": response.status_code}
    if isinstance(exc, exceptions.ValidationError) and isinstance(detail, dict):
        body["code"] = "invalid"
        body["message"] = "Some fields are not valid."
        body["fields"] = detail
    else:
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        body["code"] = codes if isinstance(codes, str) else "error"
        body["message"] = detail.get("detail", str(detail)) if isinstance(detail, dict) else str(detail)
        if isinstance(detail, list):
            body["message"] = " ".join(str(d) for d in detail)
    response.data = {"error": body}
    return response


# Times a ``since``/``until`` may name: any real data lies between; a range shifted by a month
# from either end is still a datetime (year 1 or 9999 would overflow).
TIME_RANGE_YEARS = (2000, 2100)


def time_range(params: Any, *, max_days: int | None = None) -> tuple[Any, Any]:
    """``since``/``until`` query parameters as aware datetimes; a clear 400 naming the bad one.

    Refused: not ISO 8601 with a zone, no such time (2026-02-30), a year outside
    ``TIME_RANGE_YEARS``, ``until`` before ``since``, or a range longer than ``max_days``.
    """
    from datetime import timedelta

    from django.utils.dateparse import parse_datetime

    bounds: list[Any] = []
    for name in ("since", "until"):
        raw = params.get(name)
        if not raw:
            bounds.append(None)
            continue
        shown = repr(raw) if len(raw) <= 40 else repr(raw[:37] + "...")
        try:
            value = parse_datetime(raw)
        except (ValueError, OverflowError):  # well formed but no such time, e.g. 2026-02-30
            value = None
        if value is None or value.tzinfo is None:
            raise exceptions.ValidationError(
                {name: [f"{shown} is not an ISO 8601 time with a zone, e.g. 2026-05-01T00:00:00Z"]}
            )
        first, last = TIME_RANGE_YEARS
        try:
            year = value.astimezone(UTC).year
        except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
            year = value.year
        if not first <= year <= last:
            raise exceptions.ValidationError({name: [f"{shown} is not a time between the years {first} and {last}"]})
        bounds.append(value)
    since, until = bounds
    if since and until and until < since:
        raise exceptions.ValidationError({"until": ["must not be before since"]})
    if max_days and since and until and until - since > timedelta(days=max_days):
        raise exceptions.ValidationError({"until": [f"the range may span at most {max_days} days"]})
    return since, until


def time_filtered(qs: Any, params: Any, field: str, max_days: int | None = None) -> Any:
    """``qs`` narrowed to ``since <= field < until`` by the ``since``/``until`` query parameters."""
    since, until = time_range(params, max_days=max_days)
    if since:
        qs = qs.filter(**{f"{field}__gte": since})
    if until:
        qs = qs.filter(**{f"{field}__lt": until})
    return qs
