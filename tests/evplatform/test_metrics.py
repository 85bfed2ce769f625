"""The web's /metrics scraped over HTTP from the real server, and the balancing run figures behind it."""

import os
import time
import urllib.request
from types import SimpleNamespace

import pytest
from django.conf import settings
from prometheus_client import Histogram
from prometheus_client.parser import text_string_to_metric_families

from evplatform import metrics
from evplatform.redis import get_redis
from tests.conftest import ALPHA

pytestmark = pytest.mark.django_db

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(url: str, host: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": host})  # noqa: S310 - our own local server
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our own local server
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def scrape(port: str) -> tuple[set[str], Samples]:
    status, body = get(f"http://127.0.0.1:{port}/metrics", host="10.0.0.5:8000")
    assert status == 200
    families = list(text_string_to_metric_families(body.decode()))
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families
        for sample in family.samples
    }
    return {family.name for family in families}, samples


def test_the_web_server_serves_every_metric_family_and_counts_requests_by_status(web_server) -> None:
    _, before = scrape(web_server)
    unauthorised = ("evp_http_requests_total", (("method", "GET"), ("status", "401")))

    status, _ = get(f"http://127.0.0.1:{web_server}/api/v1/sites/", host=ALPHA.domain)
    names, after = scrape(web_server)

    assert status == 401
    assert after[unauthorised] == before.get(unauthorised, 0.0) + 1
    assert after[("evp_http_request_seconds_count", ())] > before.get(("evp_http_request_seconds_count", ()), 0.0)
    assert {
        "evp_http_requests",
        "evp_http_request_seconds",
        "evp_balancing_runs",
        "evp_balancing_run_seconds",
        "evp_balancing_runs_over_limit",
        "evp_celery_task_seconds",
        "evp_celery_task_failures",
        "evp_celery_broker_up",
        "evp_sites_over_limit",
    } <= names
    assert after[("evp_celery_broker_up", ())] == 1
    assert {("evp_balancing_runs_total", (("outcome", outcome),)) for outcome in metrics.RUN_OUTCOMES} <= set(after)


def test_queue_depth_is_read_from_the_broker_for_each_declared_queue(settings) -> None:
    from kombu import Producer

    from evplatform.celery import app, queue_name

    settings.CELERY_QUEUE_PREFIX = f"{settings.CELERY_QUEUE_PREFIX}depth{os.getpid()}."  # no worker consumes these
    with app.connection_for_write() as connection:
        channel = connection.channel()
        channel.queue_declare(queue_name("reports"), durable=False, auto_delete=False)
        try:
            for _ in range(2):
                Producer(channel).publish({}, exchange="", routing_key=queue_name("reports"))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                families = {family.name: family for family in metrics._read_queues()}
                depth = {s.labels["queue"]: s.value for s in families["evp_celery_queue_messages"].samples}
                if depth.get("reports") == 2:
                    break
                time.sleep(0.2)
        finally:
            channel.queue_delete(queue_name("reports"))

    assert depth == {"reports": 2}  # balancing and telemetry are not declared: left out
    assert families["evp_celery_broker_up"].samples[0].value == 1


def test_a_run_over_the_limit_is_counted_and_its_site_shown_until_a_run_is_not(tenant) -> None:
    get_redis().delete(metrics.sites_over_limit_key())
    over = SimpleNamespace(status="ok", limits={"site_over_limit": True})
    within = SimpleNamespace(status="partial", limits={"site_over_limit": False})
    counted_before = metrics.BALANCING_RUNS_OVER_LIMIT._value.get()
    partial_before = metrics.BALANCING_RUNS.labels("partial")._value.get()

    for site_id in (1, 2):
        with metrics.balancing_run_observed(schema=tenant.schema_name, site_id=site_id) as observed:
            observed.ran(over)
    shown_over = metrics._read_sites_over_limit()[0].samples[0].value
    with metrics.balancing_run_observed(schema=tenant.schema_name, site_id=1) as observed:
        observed.ran(within)
    shown_after = metrics._read_sites_over_limit()[0].samples[0].value

    assert metrics.BALANCING_RUNS_OVER_LIMIT._value.get() == counted_before + 2
    assert metrics.BALANCING_RUNS.labels("partial")._value.get() == partial_before + 1
    assert (shown_over, shown_after) == (2, 1)
    get_redis().delete(metrics.sites_over_limit_key())


def test_a_run_that_raises_counts_as_failed_and_a_skipped_one_is_not_timed(tenant) -> None:
    failed_before = metrics.BALANCING_RUNS.labels("failed")._value.get()
    timed_before = _count(metrics.BALANCING_RUN_SECONDS)

    with pytest.raises(RuntimeError), metrics.balancing_run_observed(schema=tenant.schema_name, site_id=1):
        raise RuntimeError("engine result violates limits")
    with metrics.balancing_run_observed(schema=tenant.schema_name, site_id=1) as observed:
        observed.ran(None)

    assert metrics.BALANCING_RUNS.labels("failed")._value.get() == failed_before + 1
    assert _count(metrics.BALANCING_RUN_SECONDS) == timed_before + 1


def _count(histogram: Histogram) -> float:
    return next(s.value for s in histogram.collect()[0].samples if s.name.endswith("_count"))


WORKERS = ("--workers", "2")


def test_gunicorn_workers_counts_are_added_up_in_multiprocess_mode(django_db_blocker, tmp_path) -> None:
    """Each scrape reaches one of the two workers; each must show the requests both of them answered."""
    import subprocess
    import sys

    from tests.conftest import _database_url, _free_port

    (tmp_path / "prometheus").mkdir()
    port = _free_port()
    with django_db_blocker.unblock():
        database_url = _database_url()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "evplatform.wsgi:application", "--bind", f"127.0.0.1:{port}", *WORKERS],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "evplatform.settings.test",
            "DATABASE_URL": database_url,
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        },
        cwd=settings.BASE_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(f"http://127.0.0.1:{port}/healthz", host="10.0.0.5")[0] == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("gunicorn did not start")
                time.sleep(0.3)
        for _ in range(12):
            assert get(f"http://127.0.0.1:{port}/api/v1/sites/", host=ALPHA.domain)[0] == 401
        counted = {
            scrape(str(port))[1][("evp_http_requests_total", (("method", "GET"), ("status", "401")))] for _ in range(6)
        }
    finally:
        server.terminate()
        server.wait(timeout=30)

    assert counted == {12.0}  # without the directory each worker shows its own share (3 and 9, say)
