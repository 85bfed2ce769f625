"""`make run`'s runner: which services it uses, and the embedded pair working end to end."""

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from django.conf import settings

from evplatform.runner import ServiceUnavailableError, Stack, resolve_services, service_answers

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CLOSED_DEFAULTS = {
    "DATABASE_URL": f"postgres://postgres@127.0.0.1:{closed_port()}/evplatform",
    "REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0",
    "CELERY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{closed_port()}//",
}


def test_service_answers_tells_open_from_closed_ports_and_sockets(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert service_answers(f"redis://127.0.0.1:{port}/0", 6379)
    assert not service_answers(f"redis://127.0.0.1:{closed_port()}/0", 6379)
    path = tmp_path / "r.sock"
    with socket.socket(socket.AF_UNIX) as unix_listener:
        unix_listener.bind(str(path))
        unix_listener.listen()
        assert service_answers(f"unix://{path}?db=0", 6379)
    assert not service_answers(f"unix://{tmp_path / 'absent.sock'}", 6379)


def test_the_real_services_are_used_when_they_answer(tmp_path: Path) -> None:
    stack = resolve_services({}, run_dir=tmp_path)
    assert stack.embedded == []
    assert stack.database.how == "default"
    assert stack.broker.url.startswith("amqp://")
    assert not (tmp_path / "pg").exists()


@pytest.mark.parametrize("variable", ["DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"])
def test_an_explicit_url_that_does_not_answer_is_an_error_not_a_fallback(variable: str, tmp_path: Path) -> None:
    environ = {variable: CLOSED_DEFAULTS[variable]}
    with pytest.raises(ServiceUnavailableError, match=f"{variable}=.* does not answer"):
        resolve_services(environ, run_dir=tmp_path, defaults=CLOSED_DEFAULTS)
    assert not (tmp_path / "pg").exists()


@pytest.fixture
def embedded_stack(tmp_path: Path) -> Iterator[Stack]:
    stack = resolve_services({}, run_dir=tmp_path, defaults=CLOSED_DEFAULTS)
    try:
        yield stack
    finally:
        stack.stop()


def manage(env: dict[str, str], *args: str, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_embedded_postgres_and_redis_carry_migrations_a_tenant_and_a_celery_round_trip(
    embedded_stack: Stack, tmp_path: Path
) -> None:
    stack = embedded_stack
    assert [s.name for s in stack.embedded] == ["PostgreSQL", "Redis", "Broker"]
    assert stack.broker.url.startswith("redis+socket://")
    env = {**os.environ, **stack.env, "DJANGO_SETTINGS_MODULE": "evplatform.settings.test", "CELERY_QUEUE_PREFIX": ""}

    subprocess.run([sys.executable, "-m", "evplatform.bootstrap"], cwd=settings.BASE_DIR, env=env, check=True)
    manage(env, "migrate_schemas", "--noinput")
    created = manage(
        env,
        "create_tenant",
        "embedded",
        "--name",
        "Embedded Org",
        "--domain",
        "embedded.localhost",
        "--admin-email",
        "admin@embedded.localhost",
        "--admin-password",
        "embedded-admin-pass-2026",
    )
    assert "organisation embedded created" in created.stdout

    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "evplatform",
            "worker",
            "--pool=solo",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=WARNING",
        ],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        checked = manage(env, "check_workers", "--tenant", "embedded", "--timeout", "90")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert "workers serve balancing, telemetry, reports, notifications for embedded" in checked.stdout

    pg_data = tmp_path / "pg"
    assert (pg_data / "PG_VERSION").read_text().strip() == "16"
    stack.stop()
    leftovers = [
        p.info
        for p in psutil.process_iter(attrs=["pid", "name", "cmdline"])
        if p.info["cmdline"] and any(str(tmp_path) in part for part in p.info["cmdline"])
    ]
    assert leftovers == []


def test_make_run_uses_the_local_settings_unless_told_otherwise() -> None:
    code = (
        "import os; from evplatform import runner; "
        "print(runner.development_settings(os.environ['DJANGO_SETTINGS_MODULE']))"
    )
    clean = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    for named, expected in (
        (None, "evplatform.settings.local"),  # importing the package set the production default
        ("evplatform.settings.production", "evplatform.settings.local"),
        ("evplatform.settings.test", "evplatform.settings.test"),
    ):
        env = clean if named is None else {**clean, "DJANGO_SETTINGS_MODULE": named}
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expected, named
