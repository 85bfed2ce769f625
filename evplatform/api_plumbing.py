"""REST API plumbing shared by every app: parsing, paging and query parameters.

Bad input anywhere answers 400 in the one error shape (``evplatform.api.exception_handler``)
naming what was wrong, and the schema declares what each parameter accepts.
"""

import codecs
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect, JsonResponse
from django.urls import Resolver404, resolve
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request

# A request body nested deeper than this is refused: no API body needs more than a few levels.
JSON_MAX_DEPTH = 32
# A JSON number with more digits than this is refused before Python converts it (slow, or a ValueError).
JSON_MAX_NUMBER_CHARS = 100
# Paging: at most this many rows per page, and an offset PostgreSQL can take with room to add the limit.
PAGE_MAX_LIMIT = 1000
PAGE_MAX_OFFSET = 2**31 - 1


def _number(kind: type) -> Any:
    def parse(text: str) -> Any:
        if len(text) > JSON_MAX_NUMBER_CHARS:
            raise ValueError(f"a number of {len(text)} characters (at most {JSON_MAX_NUMBER_CHARS})")
        return kind(text)

    return parse


def _refuse_depth(data: Any) -> None:
    """A ParseError for nesting deeper than ``JSON_MAX_DEPTH`` (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if not isinstance(value, dict | list):
            continue
        if depth > JSON_MAX_DEPTH:
            raise ParseError(f"JSON parse error - nested deeper than {JSON_MAX_DEPTH} levels")
        stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, refusing with 400 what would otherwise fail later as a 500.

    Nesting deep enough to exhaust the recursion limit and numbers of thousands of digits are a
    ``ParseError``. NUL characters (which PostgreSQL cannot store) are refused by the fields that
    would store or look them up: DRF's text fields, ``StrictSlugRelatedField``.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            data = json.load(
                codecs.getreader(encoding)(stream),
                parse_constant=_refuse_constant if self.strict else None,
                parse_int=_number(int),
                parse_float=_number(float),
            )
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {JSON_MAX_DEPTH} levels") from None
        except ValueError as exc:  # UnicodeDecodeError and json.JSONDecodeError are ValueErrors too
            raise ParseError(f"JSON parse error - {exc}") from None
        _refuse_depth(data)
        return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class LenientJSONParser(SafeJSONParser):
    """JSON that lets NaN and Infinity through, so that a reading is refused naming its field."""

    strict = False


class FileDownloadNegotiation(BaseContentNegotiation):
    """For an action answering a file: the file whatever ``Accept`` asks (no 406 for ``text/csv``),
    and an error in JSON, the view's first renderer."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> Any:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> Any:
        first = next(iter(renderers))
        return first, first.media_type


def _once(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise ValidationError({name: ["give this parameter once"]})
    return values[0] if values else None


def _whole(raw: str, name: str, low: int, high: int) -> int:
    number = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= len(str(high)) else -1
    if not low <= number <= high:
        raise ValidationError({name: [f"{raw[:20]!r} is not a whole number from {low} to {high}"]})
    return number


class StrictLimitOffsetPagination(LimitOffsetPagination):
    """``limit``/``offset`` paging that refuses (400) what it cannot use instead of ignoring it."""

    max_limit = PAGE_MAX_LIMIT

    def get_limit(self, request: Request) -> int | None:
        raw = _once(request, self.limit_query_param)
        if raw is None:
            return self.default_limit
        return _whole(raw, self.limit_query_param, 1, PAGE_MAX_LIMIT)

    def get_offset(self, request: Request) -> int:
        raw = _once(request, self.offset_query_param)
        if raw is None:
            return 0
        return _whole(raw, self.offset_query_param, 0, PAGE_MAX_OFFSET)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        bounds = {
            self.limit_query_param: {"minimum": 1, "maximum": PAGE_MAX_LIMIT},
            self.offset_query_param: {"minimum": 0, "maximum": PAGE_MAX_OFFSET},
        }
        for parameter in parameters:
            parameter["schema"].update(bounds.get(parameter["name"], {}))
        return parameters


@extend_schema_field(OpenApiTypes.DATETIME)
class TimeBoundField(serializers.CharField):
    """A ``since``/``until`` bound: an ISO 8601 time with a zone, passed on in UTC (ISO 8601 again).

    In UTC because PostgreSQL takes zone offsets only up to 15:59 while ISO 8601 allows more;
    ``evplatform.api.time_range`` then reads it like any other.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, trim_whitespace=False, max_length=64, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        raw = super().to_internal_value(data)
        try:
            value = parse_datetime(raw)
        except ValueError:  # well formed but no such time, e.g. 2026-02-30
            value = None
        if value is None or value.tzinfo is None:
            raise ValidationError(f"{raw[:40]!r} is not an ISO 8601 time with a zone, e.g. 2026-05-01T00:00:00Z")
        try:
            return value.astimezone(UTC).isoformat()
        except OverflowError:
            raise ValidationError(f"{raw[:40]!r} is outside the calendar in UTC") from None


def capped_window(params: Any, *, max_days: int, default: timedelta, now: datetime) -> tuple[datetime, datetime]:
    """``[since, until)`` of a request over raw history: at most ``max_days``, ``default`` if no time given.

    Only ``until``: the ``default`` before it. Only ``since``: from it to now, so it may be at
    most ``max_days`` ago; beyond that the caller must say ``until`` too. A range longer than
    the cap is a 400 naming it, never a silently shorter answer.
    """
    from evplatform.api import time_range

    since, until = time_range(params, max_days=max_days)
    cap = timedelta(days=max_days)
    try:
        if since is not None and until is None:
            until = max(now + timedelta(minutes=1), since)
            if until - since > cap:
                raise ValidationError(
                    {"since": [f"more than {max_days} days ago: give until too (at most {max_days} days after since)"]}
                )
        if until is None:
            until = now + timedelta(minutes=1)
        if since is None:
            since = until - default
    except OverflowError:
        raise ValidationError({"until" if since else "since": ["too close to the ends of the calendar"]}) from None
    return since, until


LOCAL_TIME_PATTERN = r"^([01]?[0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"


@extend_schema_field({"type": "string", "pattern": LOCAL_TIME_PATTERN, "example": "07:30"})
class LocalTimeField(serializers.TimeField):
    """A wall-clock time ``HH:MM`` or ``HH:MM:SS``, no zone (the site's own local time)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="%H:%M:%S", **kwargs)

    def to_internal_value(self, value: Any) -> time:
        if not isinstance(value, str) or not re.fullmatch(LOCAL_TIME_PATTERN[1:-1], value):
            raise ValidationError("a local time HH:MM or HH:MM:SS, e.g. 07:30")
        return super().to_internal_value(value)


def decimal_pattern(field: serializers.DecimalField) -> str:
    """The strings ``field`` takes: digits within its size, no sign when it has a minimum of 0,
    and "" (none) when it may be null."""
    places = field.decimal_places or 0
    whole = (field.max_digits or 30) - places
    sign = "" if field.min_value is not None and field.min_value >= 0 else "-?"
    number = rf"\d{{1,{whole}}}" + (rf"(?:\.\d{{0,{places}}})?|\.\d{{1,{places}}}" if places else "")
    return rf"^(?:{'|' if field.allow_null else ''}{sign}(?:{number}))$"


class StrictDecimalField(serializers.DecimalField):
    """A decimal sent as a string of the declared form (``decimal_pattern``): nothing is guessed."""

    def validate_empty_values(self, data: Any) -> tuple[bool, Any]:
        if data == "" and self.allow_null:
            return (True, None)
        # Not DecimalField's own, which takes any blank string for none.
        return serializers.Field.validate_empty_values(self, data)

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str) or not re.fullmatch(decimal_pattern(self)[1:-1], data):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """Text sent as a JSON string (DRF's own takes numbers too, as their text)."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictSlugRelatedField(serializers.SlugRelatedField):
    """An object named by its slug, sent as a string without NUL characters (PostgreSQL's lookup
    would fail on one: a 500)."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str) or "\x00" in data:
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictRegexField(serializers.RegexField):
    """A JSON string matching the whole pattern (a ``$`` in DRF's own also lets a final newline by)."""

    def __init__(self, regex: str, **kwargs: Any) -> None:
        super().__init__(regex, **kwargs)
        self.whole = re.compile(regex.removeprefix("^").removesuffix("$"))

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str) or not self.whole.fullmatch(data):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer (DRF's own takes "5", 5.0 and true too)."""

    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON true or false (DRF's own takes 0, 1, "yes", "on", ... too)."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


def _strict(field_class: type) -> type:
    replacements: dict[type, type] = {
        serializers.DecimalField: StrictDecimalField,
        serializers.CharField: StrictCharField,
        serializers.IntegerField: StrictIntegerField,
        serializers.BooleanField: StrictBooleanField,
    }
    return replacements.get(field_class, field_class)


# A ModelSerializer's ``serializer_field_mapping`` taking a JSON body's values only as the schema
# declares them: decimals as strings of their form, text as strings, integers and booleans as such.
STRICT_FIELD_MAPPING = {
    model_field: _strict(field_class)
    for model_field, field_class in serializers.ModelSerializer.serializer_field_mapping.items()
}


def slug_filter(help_text: str) -> serializers.SlugField:
    return serializers.SlugField(required=False, max_length=50, help_text=help_text)


def query_params(request: Request, serializer_class: type[serializers.Serializer]) -> dict[str, Any]:
    """The query parameters ``serializer_class`` declares, validated (400 naming the bad one).

    Each may be given once; parameters it does not declare are left to others (paging).
    """
    names: list[str] = list(serializer_class().fields.keys())
    given = {name: _once(request, name) for name in names if name in request.query_params}
    serializer = serializer_class(data=given)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


@csrf_exempt
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """404 in the error shape for any path under /api/ that is not an endpoint.

    A path that is one with a slash added is redirected there, as Django's APPEND_SLASH would.
    """
    if not request.path_info.endswith("/"):
        try:
            match = resolve(f"{request.path_info}/", urlconf=getattr(request, "urlconf", None))
        except Resolver404:
            match = None
        if match is not None and match.func is not api_not_found:
            return HttpResponsePermanentRedirect(request.get_full_path(force_append_slash=True))
    message = "no such endpoint: see /api/schema/"
    return JsonResponse({"error": {"status": 404, "code": "not_found", "message": message}}, status=404)
