"""Production settings: refuse to start without a real secret; secure cookies and headers."""

from django.core.exceptions import ImproperlyConfigured

from evplatform.logs import logging_config
from evplatform.settings.base import *  # noqa: F403
from evplatform.settings.base import LOG_LEVEL, MIDDLEWARE, SECRET_KEY, STORAGES, env

if len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("SECRET_KEY must be set to a random string of at least 32 characters")

SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Hashed, compressed static files served by WhiteNoise (run `collectstatic` at image build).
STORAGES["staticfiles"] = {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"}
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1, "whitenoise.middleware.WhiteNoiseMiddleware"
)

# --- Operations: JSON log lines by default (README, "Operations") ---------------------------
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)
