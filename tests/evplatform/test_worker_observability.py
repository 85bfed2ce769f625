"""A real prefork worker: its metrics over HTTP (its pool's processes added up), JSON log lines, liveness file.

The worker has a queue prefix of its own, so only it gets these tasks; it runs with
``PROMETHEUS_MULTIPROC_DIR``, ``WORKER_METRICS_PORT``, ``LOG_FORMAT=json`` and a
``HEALTHCHECK_DIR`` of its own, as in production.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django_tenants.utils import schema_context, tenant_context
from kombu import Exchange, Queue
from prometheus_client.parser import text_string_to_metric_families

from balancing.models import BalancingRun, Site
from balancing.tasks import balance_site
from bench.tcpproxy import free_port
from tests.conftest import broker_queues_delete, start_celery_worker, stop_celery_worker

pytestmark = pytest.mark.django_db

WAIT_S = 60
PREFIX = f"{settings.CELERY_QUEUE_PREFIX}obs{os.getpid()}."
NODE = f"obs-{os.getpid()}@{socket.gethostname()}"


@dataclass
class ObservedWorker:
    process: subprocess.Popen[str]
    metrics_url: str
    log_path: Path
    health_dir: Path


@pytest.fixture(scope="module")
def worker(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[ObservedWorker]:
    root = tmp_path_factory.mktemp("observed-worker")
    (root / "prometheus").mkdir()
    port = free_port()
    log_path = root / "worker.log"
    with django_db_blocker.unblock():
        process = start_celery_worker(
            env={
                "CELERY_QUEUE_PREFIX": PREFIX,
                "LOG_FORMAT": "json",
                "WORKER_METRICS_PORT": str(port),
                "WORKER_METRICS_ADDR": "127.0.0.1",
                "PROMETHEUS_MULTIPROC_DIR": str(root / "prometheus"),
                "HEALTHCHECK_DIR": str(root / "health"),
                "HEALTHCHECK_INTERVAL_S": "1",
            },
            log_path=log_path,
            hostname=NODE,
            extra_args=["--pool=prefork", "--concurrency=2"],
        )
    yield ObservedWorker(process, f"http://127.0.0.1:{port}/metrics", log_path, root / "health")
    if process.poll() is None:
        stop_celery_worker(process)
    broker_queues_delete(PREFIX)


@pytest.fixture(scope="module")
def committed_site(other_tenant, django_db_blocker) -> Iterator[Site]:
    """A site without chargers in tenant beta, committed so that the worker sees it."""
    with django_db_blocker.unblock(), tenant_context(other_tenant):
        site = Site.objects.create(slug="observed-site", name="Observed site", limit_a=Decimal("63"))
    yield site
    with django_db_blocker.unblock(), tenant_context(other_tenant):
        BalancingRun.objects.filter(site=site).delete()
        site.delete()


BALANCING = Queue(
    f"{PREFIX}balancing", Exchange(f"{PREFIX}evplatform", type="direct"), routing_key=f"{PREFIX}balancing"
)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - the worker's local port
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_for_sample(url: str, name: str, labels: dict[str, str], at_least: float) -> float:
    key = (name, tuple(sorted(labels.items())))
    deadline = time.monotonic() + WAIT_S
    value = 0.0
    while time.monotonic() < deadline:
        value = scrape(url).get(key, 0.0)
        if value >= at_least:
            return value
        time.sleep(0.2)
    pytest.fail(f"{name}{labels} stayed at {value}, below {at_least}, for {WAIT_S}s")


def test_the_worker_serves_its_pool_processes_balancing_and_task_metrics(worker, other_tenant, committed_site) -> None:
    with tenant_context(other_tenant):
        balance_site.apply_async(kwargs={"site_id": committed_site.pk, "reason": "metrics"}, queue=BALANCING)

    wait_for_sample(worker.metrics_url, "evp_balancing_runs_total", {"outcome": "ok"}, 1)
    samples = scrape(worker.metrics_url)
    assert samples[("evp_balancing_run_seconds_count", ())] >= 1
    assert samples[("evp_celery_task_seconds_count", (("task", "balancing.tasks.balance_site"),))] >= 1
    assert samples[("evp_balancing_runs_over_limit_total", ())] == 0


def test_a_task_that_raises_is_counted_by_name(worker) -> None:
    with schema_context("public"):  # a tenant task sent without a tenant is refused: it raises
        balance_site.apply_async(kwargs={"site_id": 1}, queue=BALANCING)

    wait_for_sample(worker.metrics_url, "evp_celery_task_failures_total", {"task": "balancing.tasks.balance_site"}, 1)


def json_lines(path: Path) -> list[dict[str, object]]:
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def test_worker_log_lines_are_json_with_the_task_tenant_and_site(worker, other_tenant, committed_site) -> None:
    with tenant_context(other_tenant):
        result = balance_site.apply_async(kwargs={"site_id": committed_site.pk, "reason": "logs"}, queue=BALANCING)

    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        mine = [line for line in json_lines(worker.log_path) if line.get("task_id") == result.id]
        if any("succeeded" in str(line["event"]) for line in mine):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"no JSON line of task {result.id} in the worker's log:\n{worker.log_path.read_text()[-3000:]}")
    done = next(line for line in mine if "succeeded" in str(line["event"]))
    assert done["task_name"] == "balancing.tasks.balance_site"
    assert done["tenant"] == other_tenant.schema_name
    assert done["site"] == "observed-site"
    assert done["level"] == "info"
    assert done["logger"] == "celery.app.trace"
    assert "timestamp" in done


def healthcheck(worker: ObservedWorker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "healthcheck", "worker", *args],
        cwd=settings.BASE_DIR,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "evplatform.settings.test",
            "HEALTHCHECK_DIR": str(worker.health_dir),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_worker_keeps_its_liveness_file_fresh_and_removes_it_when_it_stops(worker) -> None:
    first = json.loads((worker.health_dir / f"worker-{NODE}.json").read_text())
    time.sleep(2.5)  # written every HEALTHCHECK_INTERVAL_S (1 s)
    later = json.loads((worker.health_dir / f"worker-{NODE}.json").read_text())
    assert later["at"] > first["at"]
    healthy = healthcheck(worker, "--name", NODE)
    assert healthy.returncode == 0, healthy.stderr
    assert "worker healthy" in healthy.stdout

    stop_celery_worker(worker.process)

    gone = healthcheck(worker)
    assert gone.returncode == 1
    assert "no worker liveness file" in gone.stderr


def test_a_prefork_worker_without_a_multiprocess_directory_refuses_to_serve_metrics(
    django_db_blocker, tmp_path
) -> None:
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ  # its mere presence turns multiprocess mode on
    port = free_port()
    prefix = f"{PREFIX}nodir."
    with django_db_blocker.unblock():
        process = start_celery_worker(
            env={"CELERY_QUEUE_PREFIX": prefix, "WORKER_METRICS_PORT": str(port)},
            log_path=tmp_path / "worker.log",
            hostname=f"obs-nodir-{os.getpid()}@%h",
            extra_args=["--pool=prefork", "--concurrency=1"],
        )
    try:
        time.sleep(0.5)
        with pytest.raises(urllib.error.URLError, match="Connection refused"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
        log = (tmp_path / "worker.log").read_text()
    finally:
        stop_celery_worker(process)
        broker_queues_delete(prefix)

    assert "WORKER_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR with the prefork pool" in log
