"""Request parameters no view is given: those holding a NUL character.

PostgreSQL text cannot hold a NUL, so a lookup with one fails in the driver (a 500) wherever a
parameter reaches a query: a portal search, an admin filter, an API filter or a slug in a form.
One middleware refuses such a request before any view runs: a 400 naming the parameter, in the
API's error shape under ``/api/`` and as plain text elsewhere. Uploaded files are not checked
(their content is the view's business), nor are bodies under ``/api/``: the API takes JSON only
(a form body is its 415) and its fields refuse a NUL themselves.
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

NUL = "\x00"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
NUL_PROBLEM = "must not contain a NUL character"


def nul_parameter(request: HttpRequest, *, forms: bool = True) -> str | None:
    """The name of the first part of the request that holds a NUL (``path``, a query or form field)."""
    if NUL in request.path:
        return "path"
    sources = [request.GET]
    if forms and request.method not in ("GET", "HEAD", "OPTIONS") and request.content_type in FORM_TYPES:
        sources.append(request.POST)
    for params in sources:
        for key, values in params.lists():
            if NUL in key or any(NUL in value for value in values):
                return key.replace(NUL, "\\x00")
    return None


class NulRejectMiddleware:
    """Answers 400 to a request with a NUL character in its path, query or form fields."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        api = request.path.startswith("/api/")
        # Reading an API request's form body here would leave DRF an empty one instead of a 415.
        name = nul_parameter(request, forms=not api)
        if name is None:
            return self.get_response(request)
        if api:
            body = {"status": 400, "code": "invalid", "message": "Some fields are not valid."}
            return JsonResponse({"error": {**body, "fields": {name: [NUL_PROBLEM]}}}, status=400)
        return HttpResponseBadRequest(f"Bad request: {name} {NUL_PROBLEM}.", content_type="text/plain; charset=utf-8")
