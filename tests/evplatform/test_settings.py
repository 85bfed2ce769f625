"""Settings come from the environment; production refuses to start with an unsafe secret."""

import os
import subprocess
import sys

from django.conf import settings

PRINT_SETTINGS = (
    "import django; django.setup(); from django.conf import settings as s; "
    "d = s.DATABASES['default']; "
    "print(d['NAME'], d['HOST'], d['ENGINE'], s.CELERY_BROKER_URL, "
    "s.CACHES['default']['LOCATION'], s.DEBUG, s.ALLOWED_HOSTS)"
)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"}
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=settings.BASE_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_environment_variables_configure_the_services() -> None:
    result = run_python(
        PRINT_SETTINGS,
        DJANGO_SETTINGS_MODULE="evplatform.settings.local",
        DATABASE_URL="postgres://app:pw@db.internal:6543/evdb",
        CELERY_BROKER_URL="amqp://u:p@mq.internal:5672/ev",
        REDIS_URL="redis://cache.internal:6379/3",
        DEBUG="false",
        ALLOWED_HOSTS="ev.example.com,.ev.example.com",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "evdb",
        "db.internal",
        "django_tenants.postgresql_backend",
        "amqp://u:p@mq.internal:5672/ev",
        "redis://cache.internal:6379/3",
        "False",
        "['ev.example.com',",
        "'.ev.example.com']",
    ]


def test_defaults_point_at_the_local_services() -> None:
    result = run_python(PRINT_SETTINGS, DJANGO_SETTINGS_MODULE="evplatform.settings.local")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:5] == [
        "evplatform",
        "127.0.0.1",
        "django_tenants.postgresql_backend",
        "amqp://guest:guest@127.0.0.1:5672//",
        "redis://127.0.0.1:6379/0",
    ]


def test_production_refuses_a_missing_or_short_secret_key() -> None:
    for secret in ("", "too-short"):
        result = run_python(PRINT_SETTINGS, DJANGO_SETTINGS_MODULE="evplatform.settings.production", SECRET_KEY=secret)
        assert result.returncode != 0
        assert "SECRET_KEY must be set to a random string of at least 32 characters" in result.stderr
    ok = run_python(PRINT_SETTINGS, DJANGO_SETTINGS_MODULE="evplatform.settings.production", SECRET_KEY="x" * 50)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split()[5] == "False"
