"""The tenant URL map plus ``/boom``, a view that raises (tests/evplatform/test_sentry.py)."""

from django.http import HttpRequest, HttpResponse
from django.urls import path

from evplatform.urls import urlpatterns as tenant_urlpatterns


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("sentry hook probe")


urlpatterns = [path("boom", boom), *tenant_urlpatterns]
