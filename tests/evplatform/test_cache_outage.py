"""The Django cache on Redis (django-redis): the API keeps answering while Redis is down.

Runs in the ``alpha`` tenant schema. Redis is taken away with a TCP proxy in front of the
machine's Redis (``bench.tcpproxy``) that the test cuts: the Django cache (DRF throttling) and
this process's own Redis client (``REDIS_URL``) both go through it, as in a real outage; the
machine's Redis itself keeps running.
"""

import copy
import json
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import cache
from django.test import Client, override_settings
from django.utils import timezone

from balancing.models import Site, SiteMeterReading
from bench.tcpproxy import ThreadedTcpProxy
from evplatform.redis import get_redis, redis_outage
from tenants.accounts.models import ApiToken, Role, User
from tests.conftest import ALPHA
from tests.factories import SiteFactory

pytestmark = pytest.mark.django_db

METER_URL = "/api/v1/sites/cache-garage/meter-readings/"


@pytest.fixture
def site() -> Site:
    return SiteFactory(slug="cache-garage", limit_a=Decimal("63"), demand_cap_kw=Decimal("20"))


@pytest.fixture
def energy_manager(make_user) -> tuple[User, Client]:
    """An energy manager and a client that calls the API with their bearer token."""
    from tenants.accounts.tokens import api_token_create

    user, _ = make_user(Role.ENERGY_MANAGER, email="cache.outage@alpha.localhost")
    _, raw = api_token_create(user=user, name="meter", scope=ApiToken.Scope.FULL)
    return user, Client(HTTP_HOST=ALPHA.domain, HTTP_AUTHORIZATION=f"Bearer {raw}")


@pytest.fixture
def redis_down(settings) -> Iterator[ThreadedTcpProxy]:
    """The cache and this process's Redis client go through a proxy that is cut; both restored after."""
    proxy = ThreadedTcpProxy(("127.0.0.1", 6379))
    url = f"redis://127.0.0.1:{proxy.port}/0"
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = url
    settings.REDIS_URL = url
    get_redis.cache_clear()
    redis_outage.down_since = redis_outage.recovered_at = None
    # override_settings(CACHES=...) closes and forgets the cache connections on entry and exit.
    with override_settings(CACHES=caches):
        proxy.cut()
        yield proxy
    proxy.close()
    get_redis.cache_clear()
    redis_outage.down_since = redis_outage.recovered_at = None


def reading() -> dict[str, Any]:
    return {
        "measured_at": (timezone.now() - timedelta(seconds=2)).isoformat(),
        "current_a": [12.5, 11.0, 13.25],
        "power_kw": 8.4,
        "includes_chargers": True,
    }


def test_the_api_answers_while_redis_is_down(site: Site, energy_manager, redis_down) -> None:
    _, client = energy_manager
    assert cache.get("anything") is None  # the cache really is the cut proxy: a miss, no error

    response = client.post(METER_URL, json.dumps(reading()), content_type="application/json")
    assert response.status_code == 201, response.content
    assert SiteMeterReading.objects.filter(site=site).count() == 1

    listing = client.get("/api/v1/sites/")
    assert listing.status_code == 200, listing.content
    assert "cache-garage" in {row["slug"] for row in listing.json()["results"]}


def test_signing_in_works_while_redis_is_down(make_user, redis_down) -> None:
    # django-axes keeps its failure counts in the database (AxesDatabaseHandler), not the cache.
    assert settings.AXES_HANDLER == "axes.handlers.database.AxesDatabaseHandler"
    make_user(Role.ENERGY_MANAGER, email="cache.signin@alpha.localhost")
    browser = Client(HTTP_HOST=ALPHA.domain)
    response = browser.post(
        "/accounts/login/", {"username": "cache.signin@alpha.localhost", "password": "correct-horse-battery-9"}
    )
    assert response.status_code == 302, response.content
    assert browser.get("/").status_code == 200


def test_with_redis_up_the_cache_is_redis_and_the_throttle_counts(site: Site, energy_manager) -> None:
    assert settings.CACHES["default"]["BACKEND"] == "django_redis.cache.RedisCache"
    cache.set("cache-outage-probe", "here", timeout=30)
    try:
        assert cache.get("cache-outage-probe") == "here"
    finally:
        cache.delete("cache-outage-probe")

    user, client = energy_manager
    throttle_key = f"throttle_user_{user.pk}"  # DRF UserRateThrottle's key for this user
    cache.delete(throttle_key)
    try:
        for _ in range(2):
            assert client.get("/api/v1/sites/").status_code == 200
        assert len(cache.get(throttle_key, [])) == 2
    finally:
        cache.delete(throttle_key)
