"""Shared fixtures: two organisations created once per session in the real PostgreSQL.

pytest-django creates the test database (``test_<name>``) and migrates ``public``; here the
session adds the platform domain and two tenants with their own schemas, ``alpha`` and
``beta``. An autouse fixture activates ``alpha`` for every test that uses the database (mark
a test ``public_schema`` to run it in ``public``); each test runs in a transaction that is
rolled back, so nothing a test writes leaks into the next (django-tenants issues 450/664).
"""

import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email import message_from_bytes
from email import policy as email_policy
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import ProtectedError
from django.test import Client
from django_tenants.utils import get_public_schema_name

from bench.tcpproxy import free_port
from tenants.models import Tenant
from tenants.services import platform_setup, tenant_create


@dataclass(frozen=True)
class TenantSpec:
    slug: str
    name: str
    domain: str
    admin_email: str
    admin_password: str


ALPHA = TenantSpec("alpha", "Alpha University", "alpha.localhost", "admin@alpha.localhost", "alpha-admin-pass-2026")
BETA = TenantSpec("beta", "Beta Malls", "beta.localhost", "admin@beta.localhost", "beta-admin-pass-2026")
PLATFORM_DOMAIN = "localhost"


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: pytest.FixtureRequest) -> Iterator[None]:
    with django_db_blocker.unblock():
        platform_setup(domain=PLATFORM_DOMAIN)
        for spec in (ALPHA, BETA):
            tenant_create(
                slug=spec.slug,
                name=spec.name,
                domain=spec.domain,
                admin_email=spec.admin_email,
                admin_password=spec.admin_password,
            )
    yield
    # Worker, server and gateway processes have been stopped by now, but a backend of theirs can
    # linger for a moment; end those so that the test database can be dropped.
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )


@pytest.fixture(scope="session")
def tenant(django_db_setup: None, django_db_blocker: pytest.FixtureRequest) -> Tenant:
    """The organisation every database test runs in unless it says otherwise."""
    with django_db_blocker.unblock():
        return Tenant.objects.get(slug=ALPHA.slug)


@pytest.fixture(scope="session")
def other_tenant(django_db_setup: None, django_db_blocker: pytest.FixtureRequest) -> Tenant:
    """A second organisation, for isolation tests."""
    with django_db_blocker.unblock():
        return Tenant.objects.get(slug=BETA.slug)


@pytest.fixture(autouse=True)
def _active_schema(request: pytest.FixtureRequest) -> Iterator[None]:
    uses_db = request.node.get_closest_marker("django_db") or {"db", "transactional_db"} & set(request.fixturenames)
    if not uses_db:
        yield
        return
    if request.node.get_closest_marker("public_schema"):
        connection.set_schema_to_public()
    else:
        connection.set_tenant(request.getfixturevalue("tenant"))
    yield
    connection.set_schema(get_public_schema_name())


@pytest.fixture
def alpha_client() -> Client:
    """An anonymous browser on alpha's domain."""
    return Client(HTTP_HOST=ALPHA.domain)


@pytest.fixture
def beta_client() -> Client:
    return Client(HTTP_HOST=BETA.domain)


def forget_balancing_keys(schema: str, site_id: int) -> None:
    """Drop a site's pending-rebalance flag and run lock from Redis, so that later runs start afresh."""
    from evplatform.redis import get_redis, tenant_key

    redis = get_redis()
    for name in ("rebalance-pending", "balance-lock"):
        redis.delete(tenant_key(schema, name, site_id))


DEADLOCK_DETECTED = "40P01"


def delete_retrying(delete: Callable[[], None], attempts: int = 20) -> None:
    """Run ``delete`` in one transaction, again after a moment while the worker still writes.

    A telemetry batch or balancing run a worker commits while the delete collects related rows
    makes it fail (a protected session, a foreign-key check at commit, or a deadlock with the
    worker's transaction, which PostgreSQL breaks by ending the delete's): wait a moment and
    delete again, in one transaction, what was just written included.
    """
    for attempt in range(attempts):
        try:
            with transaction.atomic():
                delete()
            return
        except (IntegrityError, ProtectedError, OperationalError) as exc:
            deadlock = getattr(exc.__cause__, "sqlstate", None) == DEADLOCK_DETECTED
            if attempt == attempts - 1 or (isinstance(exc, OperationalError) and not deadlock):
                raise
            time.sleep(0.5)


WORKER_START_SECONDS = 90


def _database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def start_celery_worker(
    *, env: Mapping[str, str], log_path: Path, hostname: str, extra_args: Sequence[str] = ()
) -> subprocess.Popen[str]:
    """Start a real `celery -A evplatform worker` on the test queues and database; return it once ready.

    ``env`` is added to (and may override) the test environment; the worker's output goes to
    ``log_path``; ``extra_args`` are added to (and may override) the command line's options
    (``--pool=prefork``). The test fails if the worker is not ready within ``WORKER_START_SECONDS``.
    """
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "evplatform.settings.test",
        "DATABASE_URL": _database_url(),
        "CELERY_QUEUE_PREFIX": settings.CELERY_QUEUE_PREFIX,
        **env,
    }
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "evplatform",
        "worker",
        "--pool=solo",
        "--loglevel=INFO",
        "--purge",
        "--without-gossip",
        "--without-mingle",
        f"--hostname={hostname}",
        *extra_args,
    ]
    worker = subprocess.Popen(
        command, cwd=settings.BASE_DIR, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    ready = threading.Event()

    def pump() -> None:
        assert worker.stdout is not None
        with log_path.open("w") as log:
            for line in worker.stdout:
                log.write(line)
                log.flush()
                if " ready." in line:
                    ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(WORKER_START_SECONDS):
        worker.kill()
        pytest.fail(f"celery worker did not become ready in {WORKER_START_SECONDS}s:\n{log_path.read_text()}")
    return worker


def stop_celery_worker(worker: subprocess.Popen[str]) -> None:
    """Ask the worker to stop (a warm shutdown), and kill it if it has not within 30s."""
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()


def broker_queues_delete(prefix: str) -> None:
    """Delete a deployment prefix's three queues and its exchange at RabbitMQ (what a test's own
    worker or beat under that prefix declared)."""
    from evplatform.celery import QUEUES, app

    with app.connection_for_write() as broker:
        channel = broker.channel()
        for queue in QUEUES:
            channel.queue_delete(f"{prefix}{queue}")
        channel.exchange_delete(f"{prefix}evplatform")


@pytest.fixture(scope="session")
def celery_worker(django_db_setup: None, django_db_blocker, tmp_path_factory) -> Iterator[subprocess.Popen[str]]:
    """A real `celery -A evplatform worker` on the test queues and database, for the whole session."""
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    with django_db_blocker.unblock():
        worker = start_celery_worker(env={}, log_path=log_path, hostname=f"test-worker-{os.getpid()}@%h")
    yield worker
    stop_celery_worker(worker)


@pytest.fixture
def make_user():
    """A user of the active tenant with a role, signed in on a client for that tenant's domain."""
    from tenants.accounts.models import User

    def make(role: str, *, host: str = ALPHA.domain, email: str | None = None) -> tuple[User, Client]:
        user = User.objects.create_user(
            email=email or f"{role}.user@{host}", password="correct-horse-battery-9", role=role
        )
        client = Client(HTTP_HOST=host)
        client.force_login(user)
        return user, client

    return make


_free_port = free_port  # the name tests/chargepoint/conftest.py imports


def start_web_server(*, env: Mapping[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start the real web process (runserver, static files on) on the test database; return it and its port.

    ``env`` is added to (and may override) the test environment. Call with the database unblocked.
    """
    import urllib.request

    port = _free_port()
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "evplatform.settings.test",
        "DATABASE_URL": _database_url(),
        "CELERY_QUEUE_PREFIX": settings.CELERY_QUEUE_PREFIX,
        **(env or {}),
    }
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload", "--insecure"],
        cwd=settings.BASE_DIR,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/healthz", headers={"Host": ALPHA.domain})
            with urllib.request.urlopen(request, timeout=2):  # noqa: S310 - our own local server
                break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("the web server did not start")
            time.sleep(0.3)
    return server, str(port)


def stop_web_server(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()


@dataclass
class SmtpServer:
    """A real SMTP server on 127.0.0.1 (aiosmtpd): STARTTLS required before AUTH, AUTH required.

    ``messages`` collects what it received (parsed); ``url`` is the EMAIL_URL that reaches it,
    and ``email_settings`` the Django settings parsed from that URL, to give to override_settings.
    """

    url: str
    messages: list[Message]

    @property
    def email_settings(self) -> dict[str, object]:
        from evplatform.settings.base import email_settings

        return email_settings(self.url)


@pytest.fixture
def smtp_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpServer]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = tmp_path / "smtp-cert.pem", tmp_path / "smtp-key.pem"
    openssl = shutil.which("openssl")
    assert openssl, "the SMTP tests make their certificate with the openssl command"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    # The client checks the server's certificate as in production; here it trusts only this one.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    user, password = "mailer", "smtp-test-secret-2026"
    messages: list[Message] = []

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
            messages.append(message_from_bytes(envelope.content, policy=email_policy.default))
            return "250 OK"

    def authenticate(server: object, session: object, envelope: object, mechanism: str, data: object) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (user.encode(), password.encode())
        return AuthResult(success=ok)

    port = _free_port()
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=tls,
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
    )
    controller.start()
    try:
        yield SmtpServer(url=f"smtp+tls://{user}:{password}@127.0.0.1:{port}", messages=messages)
    finally:
        controller.stop()


@pytest.fixture(scope="session")
def web_server(django_db_setup: None, django_db_blocker) -> Iterator[str]:
    """The real web process (runserver, static files on) on the test database; yields its port.

    pytest-django's live_server would flush the database after each test, dropping the
    session's tenants; a separate process on committed data is closer to production anyway.
    """
    with django_db_blocker.unblock():
        server, port = start_web_server()
    yield port
    stop_web_server(server)
