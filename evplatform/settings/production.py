"""Production settings: the default of every entry point (gunicorn, celery, manage.py).

They refuse to start without a real secret, with DEBUG on, or with mail that would only be
written to the log; HTTPS is required (HSTS, redirect) except on the health endpoints.
"""

from django.core.exceptions import ImproperlyConfigured

from evplatform.logs import logging_config
from evplatform.settings.base import *  # noqa: F403
from evplatform.settings.base import DEBUG, EMAIL_BACKEND, LOG_LEVEL, MIDDLEWARE, SECRET_KEY, STORAGES, env

DEVELOPMENT_HINT = "for development set DJANGO_SETTINGS_MODULE=evplatform.settings.local"

if len(SECRET_KEY) < 32:
    raise ImproperlyConfigured(
        f"SECRET_KEY must be set to a random string of at least 32 characters ({DEVELOPMENT_HINT})"
    )
if DEBUG:
    raise ImproperlyConfigured(f"DEBUG must be off in production ({DEVELOPMENT_HINT})")
if EMAIL_BACKEND != "django.core.mail.backends.smtp.EmailBackend":
    raise ImproperlyConfigured(
        "EMAIL_URL must name an SMTP server in production (smtp://, smtp+tls:// or smtp+ssl://, "
        "e.g. smtp+tls://user:password@smtp.example.com:587): password-reset and invitation links "
        f"must not end up in the log ({DEVELOPMENT_HINT})"
    )

IS_PRODUCTION = True
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# HTTPS only: browsers remember it for SECURE_HSTS_SECONDS (a year). Plain-HTTP requests are
# redirected, except the health and metrics endpoints, which probes reach over plain HTTP
# inside the cluster. Behind a TLS-terminating proxy set TRUSTED_PROXY_COUNT (base.py).
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# Entering the browsers' preload list is a decision about the whole domain, taken by whoever
# owns it (SECURE_HSTS_PRELOAD=true), not a default: `check --deploy` need not ask for it.
SILENCED_SYSTEM_CHECKS = ["security.W021"]
# Hashed, compressed static files served by WhiteNoise (run `collectstatic` at image build).
STORAGES["staticfiles"] = {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"}
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1, "whitenoise.middleware.WhiteNoiseMiddleware"
)

# --- Operations: JSON log lines by default (README, "Operations") ---------------------------
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)
