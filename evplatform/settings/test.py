"""Settings for pytest: the real services, with names that keep tests apart from `make run`."""

from evplatform.settings.base import *  # noqa: F403
from evplatform.settings.base import CACHES, env

DEBUG = False
SECRET_KEY = env.str("SECRET_KEY", default="test-only-not-secret")
ALLOWED_HOSTS = [".localhost", "localhost", "testserver"]
CELERY_QUEUE_PREFIX = env.str("CELERY_QUEUE_PREFIX", default="test.")
# Two checkouts can test at once with their own DATABASE_URL (test_<name>) and this prefix.
CACHES["default"]["KEY_PREFIX"] = f"evplatform-{CELERY_QUEUE_PREFIX}"
# Hashing is deliberately slow in production; tests hash many passwords.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The tests' fixed dates (2026 and earlier) are older than the default 90 days: raw readings are
# kept ten years here, and the retention tests set the period they test.
TELEMETRY_RETENTION_DAYS = 3650
# Webhook receivers in tests listen on 127.0.0.1; retries come after seconds, not minutes.
WEBHOOK_ALLOW_PRIVATE_HOSTS = True
NOTIFICATION_RETRY_BACKOFF_S = env.int("NOTIFICATION_RETRY_BACKOFF_S", default=1)
PORTAL_URL = env.str("PORTAL_URL", default="http://{domain}")
# The browser tests add a WebAuthn key (Chromium's virtual authenticator) over plain HTTP.
MFA_WEBAUTHN_ALLOW_INSECURE_ORIGIN = True
