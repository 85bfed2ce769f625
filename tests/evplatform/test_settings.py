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


def run_python_env() -> dict[str, str]:
    """This process's environment without anything that would pick the settings or their secrets."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"}
        and k not in {"DJANGO_SETTINGS_MODULE", "EMAIL_URL", "TRUSTED_PROXY_COUNT", "SECURE_SSL_REDIRECT"}
    }


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=settings.BASE_DIR,
        env={**run_python_env(), **env},
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
    ok = run_python(PRINT_SETTINGS, **PRODUCTION_ENV)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split()[5] == "False"


DEVELOPMENT_HINT = "for development set DJANGO_SETTINGS_MODULE=evplatform.settings.local"
# What a deployment must set (README, "Deploy"); the secret passes `check --deploy`'s test of it.
PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "evplatform.settings.production",
    "SECRET_KEY": "k3Jq9-vX2mZ7pL0wR8tY4uN6bH1cF5dG-sA2eQ9rT7yU3iO0pW",
    "EMAIL_URL": "smtp+tls://mailer:secret@smtp.example.com:587",
    "ALLOWED_HOSTS": "ev.example.com,.ev.example.com",
}


def test_every_server_entry_point_defaults_to_the_production_settings() -> None:
    imports = {
        "wsgi": "import evplatform.wsgi",
        "asgi": "import evplatform.asgi",
        "celery": "import evplatform.celery; evplatform.celery.app.conf.broker_url",
    }
    for name, code in imports.items():
        refused = run_python(code)
        assert refused.returncode != 0, name
        assert "SECRET_KEY must be set to a random string of at least 32 characters" in refused.stderr, name
        assert DEVELOPMENT_HINT in refused.stderr, name
    manage = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=settings.BASE_DIR,
        env=run_python_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert manage.returncode != 0
    assert DEVELOPMENT_HINT in manage.stderr
    served = run_python(
        "import evplatform.wsgi; from django.conf import settings as s; print(s.SETTINGS_MODULE, s.DEBUG)",
        **{k: v for k, v in PRODUCTION_ENV.items() if k != "DJANGO_SETTINGS_MODULE"},
    )
    assert served.returncode == 0, served.stderr
    assert served.stdout.split() == ["evplatform.settings.production", "False"]


def test_production_refuses_debug() -> None:
    result = run_python(PRINT_SETTINGS, **PRODUCTION_ENV, DEBUG="1")
    assert result.returncode != 0
    assert "DEBUG must be off in production" in result.stderr


def test_production_refuses_mail_that_only_reaches_the_log() -> None:
    for url in ("", "consolemail://", "memorymail://", "filemail:///tmp/mails"):
        env = (
            {**PRODUCTION_ENV, "EMAIL_URL": url}
            if url
            else {k: v for k, v in PRODUCTION_ENV.items() if k != "EMAIL_URL"}
        )
        result = run_python(PRINT_SETTINGS, **env)
        assert result.returncode != 0, url
        assert "EMAIL_URL must name an SMTP server in production" in result.stderr, url


def test_email_url_configures_the_smtp_connection() -> None:
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.EMAIL_BACKEND, s.EMAIL_HOST, s.EMAIL_PORT, s.EMAIL_HOST_USER, s.EMAIL_HOST_PASSWORD, "
        "s.EMAIL_USE_TLS, s.EMAIL_USE_SSL)"
    )
    tls = run_python(code, **{**PRODUCTION_ENV, "EMAIL_URL": "smtp+tls://mailer:s%40cret@smtp.example.com:587"})
    assert tls.returncode == 0, tls.stderr
    assert tls.stdout.split() == [
        "django.core.mail.backends.smtp.EmailBackend",
        "smtp.example.com",
        "587",
        "mailer",
        "s@cret",
        "True",
        "False",
    ]
    ssl = run_python(code, **{**PRODUCTION_ENV, "EMAIL_URL": "smtp+ssl://smtp.example.com:465"})
    assert ssl.stdout.split()[1:] == ["smtp.example.com", "465", "False", "True"], ssl.stderr
    local = run_python(code, DJANGO_SETTINGS_MODULE="evplatform.settings.local")
    assert local.stdout.split()[0] == "django.core.mail.backends.console.EmailBackend", local.stderr


def test_production_passes_the_deployment_checklist() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=settings.BASE_DIR,
        env={**run_python_env(), **PRODUCTION_ENV},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


def test_production_requires_https_but_not_on_the_health_endpoints() -> None:
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, s.SECURE_SSL_REDIRECT, "
        "' '.join(s.SECURE_REDIRECT_EXEMPT), getattr(s, 'SECURE_PROXY_SSL_HEADER', None))"
    )
    result = run_python(code, **PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["31536000", "True", "True", "^healthz$", "^readyz$", "^metrics$", "None"]


def test_x_forwarded_proto_is_trusted_only_behind_a_configured_proxy() -> None:
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(getattr(s, 'SECURE_PROXY_SSL_HEADER', None), s.AXES_IPWARE_META_PRECEDENCE_ORDER)"
    )
    direct = run_python(code, **PRODUCTION_ENV)
    assert direct.stdout.split() == ["None", "('REMOTE_ADDR',)"], direct.stderr
    proxied = run_python(code, **PRODUCTION_ENV, TRUSTED_PROXY_COUNT="1")
    assert proxied.returncode == 0, proxied.stderr
    assert proxied.stdout.strip() == "('HTTP_X_FORWARDED_PROTO', 'https') ('HTTP_X_FORWARDED_FOR', 'REMOTE_ADDR')"
