"""Log lines carry the ids of the work they belong to: JSON in production, key=value appended in plain."""

import io
import json
import logging
from collections.abc import Iterator

import pytest
from django.test import Client

from evplatform import logs
from tests.conftest import ALPHA
from tests.evplatform.test_settings import run_python

pytestmark = pytest.mark.django_db


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the root logger writes, through the JSON formatter of ``LOG_FORMAT=json``."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.json_formatter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def parsed(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_tenant_requests_log_line_is_json_with_its_tenant_and_request_id(json_lines) -> None:
    response = Client(HTTP_HOST=ALPHA.domain).get("/api/v1/sites/", HTTP_X_REQUEST_ID="req-0123456789")

    line = next(line for line in parsed(json_lines) if line["logger"] == "django.request")
    assert response.status_code == 401
    assert response["X-Request-ID"] == "req-0123456789"
    assert line["tenant"] == "alpha"
    assert line["request_id"] == "req-0123456789"
    assert line["level"] == "warning"
    assert "Unauthorized: /api/v1/sites/" in str(line["event"])


def test_a_request_id_that_is_not_a_plain_token_is_replaced(json_lines) -> None:
    response = Client(HTTP_HOST=ALPHA.domain).get("/api/v1/sites/", HTTP_X_REQUEST_ID='x", "tenant": "beta')

    line = next(line for line in parsed(json_lines) if line["logger"] == "django.request")
    assert len(response["X-Request-ID"]) == 32
    assert line["request_id"] == response["X-Request-ID"]
    assert line["tenant"] == "alpha"


def test_the_next_request_on_a_thread_does_not_inherit_the_last_ones_ids(json_lines) -> None:
    Client(HTTP_HOST=ALPHA.domain).get("/api/v1/sites/")
    Client(HTTP_HOST="unknown.example").get("/api/v1/sites/")

    last = parsed(json_lines)[-1]
    assert "tenant" not in last  # no tenant has that host: nothing bound but the request's id
    assert last["request_id"]


def test_an_exception_goes_into_the_json_line_as_text(json_lines) -> None:
    with logs.bound(site="depot", charger="CP-7"):
        try:
            raise ValueError("meter reading out of range")
        except ValueError:
            logging.getLogger("balancing.runs").exception("run failed")

    line = parsed(json_lines)[-1]
    assert (line["site"], line["charger"], line["event"]) == ("depot", "CP-7", "run failed")
    assert "ValueError: meter reading out of range" in str(line["exception"])


def test_bound_puts_the_ids_back_as_they_were() -> None:
    logs.clear()
    logs.bind(tenant="alpha")
    with logs.bound(site="depot", charger=None):
        inside = dict(logs.structlog.contextvars.get_contextvars())
    after = dict(logs.structlog.contextvars.get_contextvars())
    logs.clear()

    assert inside == {"tenant": "alpha", "site": "depot"}
    assert after == {"tenant": "alpha"}


def test_plain_lines_end_with_the_bound_ids() -> None:
    record = logging.LogRecord("balancing.runs", logging.INFO, __file__, 1, "run done", None, None)
    with logs.bound(tenant="alpha", site="depot", task_id="t-1"):
        line = logs.PlainFormatter().format(record)

    assert line.endswith("INFO balancing.runs run done [tenant=alpha site=depot task_id=t-1]")


def test_production_logs_json_lines_and_the_other_settings_plain_ones() -> None:
    code = "import django, logging; django.setup(); logging.getLogger('evplatform.check').warning('started %s', 1)"
    secret = {"SECRET_KEY": "x" * 50, "EMAIL_URL": "smtp+tls://mailer:secret@smtp.example.com:587"}
    production = run_python(code, DJANGO_SETTINGS_MODULE="evplatform.settings.production", **secret)
    plain = run_python(code, DJANGO_SETTINGS_MODULE="evplatform.settings.local", **secret)
    chosen = run_python(code, DJANGO_SETTINGS_MODULE="evplatform.settings.production", LOG_FORMAT="plain", **secret)

    assert production.returncode == 0, production.stderr
    line = json.loads(production.stderr.strip().splitlines()[-1])
    assert (line["event"], line["level"], line["logger"]) == ("started 1", "warning", "evplatform.check")
    assert plain.stderr.strip().splitlines()[-1].endswith("WARNING evplatform.check started 1")
    assert chosen.stderr.strip().splitlines()[-1].endswith("WARNING evplatform.check started 1")
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        logs.logging_config(log_format="xml", level="INFO")


def test_a_task_binds_its_ids_and_gives_the_callers_back_when_it_ran_in_process() -> None:
    from celery.signals import task_success

    from tenants.accounts.tasks import worker_heartbeat

    seen: list[dict[str, object]] = []

    def record(**_: object) -> None:
        seen.append(logs.bound_ids())

    task_success.connect(record, weak=False)
    logs.clear()
    logs.bind(request_id="req-outer", site="depot")
    try:
        result = worker_heartbeat.apply(
            kwargs={"queue": "reports", "token": "t-logs", "sent_at": "2026-01-01T00:00:00Z"},
            headers={"_schema_name": "alpha"},
        )
        after = logs.bound_ids()
    finally:
        task_success.disconnect(record)
        logs.clear()

    assert seen == [{"task_id": result.id, "task_name": "tenants.accounts.tasks.worker_heartbeat", "tenant": "alpha"}]
    assert after == {"request_id": "req-outer", "site": "depot"}
