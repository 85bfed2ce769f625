"""Content-Security-Policy relaxations of single pages (the policy itself: settings, CONTENT_SECURITY_POLICY)."""

from collections.abc import Callable
from typing import Any, TypeVar, cast

from csp.decorators import csp_update
from django.http import HttpResponseBase

View = TypeVar("View", bound=Callable[..., HttpResponseBase])

_allow_eval = cast(Any, csp_update({"script-src": ["'unsafe-eval'"]}))  # typed for views without URL arguments


def chart_page(view: View) -> View:
    """A page that draws charts: Vega compiles their expressions with Function(), so it allows eval."""
    return cast(View, _allow_eval(view))
