"""Settings shared by every environment; the only module that reads environment variables.

Defaults work on a development machine where PostgreSQL (127.0.0.1:5432, user postgres),
RabbitMQ (127.0.0.1:5672, guest/guest) and Redis (127.0.0.1:6379) run.
"""

from pathlib import Path
from tempfile import gettempdir
from typing import Any
from urllib.parse import unquote

import environ
from celery.schedules import crontab
from csp.constants import NONE, SELF

from evplatform.logs import error_reporting_init, logging_config

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

# The flags below are read here and only here; local/test/production change the defaults.
DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", ".localhost", "127.0.0.1"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/evplatform"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"
DATABASE_URL = env.str("DATABASE_URL", default=DEFAULT_DATABASE_URL)
REDIS_URL = env.str("REDIS_URL", default=DEFAULT_REDIS_URL)
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=DEFAULT_BROKER_URL)
# Prefix for the Celery queue names, so that two deployments (or the test suite and a running
# `make run`) can share one broker without taking each other's tasks.
CELERY_QUEUE_PREFIX = env.str("CELERY_QUEUE_PREFIX", default="")
# Hostname that serves the platform (public schema): platform admin and onboarding.
PLATFORM_DOMAIN = env.str("PLATFORM_DOMAIN", default="localhost")
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# True only in evplatform.settings.production: commands that make demo data refuse to run there.
IS_PRODUCTION = False

# --- Tenancy (django-tenants: one PostgreSQL schema per organisation) -----------------------

# `tenants` precedes `django_tenants` so that our `create_tenant` command wins over its own.
SHARED_APPS = [
    "tenants",
    "django_tenants",
    "tenants.accounts",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.admin",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "js_lib_htmx",
    "js_lib_vega_embed",
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.admin",
    "django.contrib.sessions",
    "django.contrib.messages",
    "tenants.accounts",
    "axes",
    "balancing",
    "chargepoint",
    "billing",
    # Single sign-on (OpenID Connect) and second factors: each organisation's schema holds its
    # own linked IdP accounts, authenticators and email addresses (tenants/accounts/sso.py).
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    "allauth.mfa",
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "tenants.Tenant"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_NAME = "public"
PUBLIC_SCHEMA_URLCONF = "evplatform.urls_public"
ROOT_URLCONF = "evplatform.urls"
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)
# `migrate_schemas` (tenants/management/commands/migrate_schemas.py) migrates only the tenant
# schemas that miss a migration, with this django-tenants executor: "multiprocessing" forks
# TENANT_MULTIPROCESSING_MAX_PROCESSES processes (one per core) and hands each
# TENANT_MULTIPROCESSING_CHUNKS schemas at a time; "standard" migrates them one by one.
TENANT_MIGRATION_EXECUTOR = env.str("TENANT_MIGRATION_EXECUTOR", default="multiprocessing")
TENANT_MULTIPROCESSING_MAX_PROCESSES = env.int("TENANT_MULTIPROCESSING_MAX_PROCESSES", default=2)
TENANT_MULTIPROCESSING_CHUNKS = env.int("TENANT_MULTIPROCESSING_CHUNKS", default=2)
# `SET search_path` once per tenant switch on a connection, not before every query (half of
# the statements of a rollup or a balancing run were that round trip). Safe because the backend
# forgets the path it set when a transaction or savepoint is rolled back (which undoes a SET
# made inside it) and when the connection closes: tests/tenants/test_search_path.py.
TENANT_LIMIT_SET_CALLS = True

AUTH_USER_MODEL = "accounts.User"

MIDDLEWARE = [
    # A request id for the log lines, then probes and /metrics answered on any Host header,
    # before anything looks the host up; the tenant is bound to the log lines once known.
    "evplatform.logs.RequestIdMiddleware",
    "evplatform.health.HealthMiddleware",
    "evplatform.metrics.RequestMetricsMiddleware",
    "django_tenants.middleware.main.TenantMainMiddleware",
    "evplatform.logs.TenantContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    # An organisation that requires a second factor sends its signed-in people to set one up first.
    "tenants.accounts.middleware.SecondFactorRequiredMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: counts failed sign-ins and locks out guessing.
    "axes.middleware.AxesMiddleware",
]
# A request with a NUL character in its path, query or form fields is answered 400 naming it,
# before any view (PostgreSQL text cannot hold one): right after the tenant is found.
MIDDLEWARE.insert(
    MIDDLEWARE.index("django_tenants.middleware.main.TenantMainMiddleware") + 1, "evplatform.params.NulRejectMiddleware"
)

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Brute-force protection: 5 failed sign-ins for one account from one address lock it for 15 min.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=0.25)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The sign-in form posts the email in the field Django calls "username".
AXES_USERNAME_FORM_FIELD = "username"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# `Alice@Example.com` and `alice@example.com` are one account for the lockout too.
AXES_USERNAME_CALLABLE = "tenants.accounts.lockout.lockout_username"

# --- Single sign-on and second factors (django-allauth; README, "Single sign-on and second factors")

# The password form stays Django's (tenants.accounts.views.SignInView); allauth adds the
# "Sign in with <IdP>" flow of each organisation's IdentityProvider rows and TOTP/WebAuthn.
ACCOUNT_ADAPTER = "tenants.accounts.adapters.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "tenants.accounts.adapters.SocialAccountAdapter"
MFA_ADAPTER = "tenants.accounts.adapters.MfaAdapter"
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
ACCOUNT_LOGOUT_ON_GET = False
# Just-in-time accounts from a configured identity provider; the adapter matches an existing
# person by the email the IdP vouches for (IdentityProvider.trust_email or email_verified).
SOCIALACCOUNT_AUTO_SIGNUP = True
SOCIALACCOUNT_EMAIL_REQUIRED = True
SOCIALACCOUNT_EMAIL_VERIFICATION = "none"
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
SOCIALACCOUNT_STORE_TOKENS = False
SOCIALACCOUNT_LOGIN_ON_GET = False
SOCIALACCOUNT_REQUESTS_TIMEOUT = env.int("OIDC_REQUESTS_TIMEOUT_S", default=10)
MFA_SUPPORTED_TYPES = ["totp", "webauthn", "recovery_codes"]
MFA_PASSKEY_LOGIN_ENABLED = False
# Client secrets of identity providers kept in the environment rather than in the database: every
# variable OIDC_SECRET_<NAME>, looked up by an IdentityProvider's `client_secret_env` (its full name).
OIDC_CLIENT_SECRETS = {name: value for name, value in env.ENVIRON.items() if name.startswith("OIDC_SECRET_")}

# --- Reverse proxy, email, Content-Security-Policy ----------------------------------------

# How many reverse proxies stand in front of the web process (a TLS-terminating load balancer
# or Caddy: 1). 0: none, and X-Forwarded-For / X-Forwarded-Proto are ignored, since anybody can
# send them. From 1: the request counts as HTTPS when the proxy says so, and the sign-in lockout
# keys on the client address the proxies forward, not on the proxy's own (which every user
# shares). ipware counts the proxies listed in X-Forwarded-For: the last one is REMOTE_ADDR.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
if TRUSTED_PROXY_COUNT > 0:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    AXES_IPWARE_META_PRECEDENCE_ORDER = ("HTTP_X_FORWARDED_FOR", "REMOTE_ADDR")
    AXES_IPWARE_PROXY_COUNT = TRUSTED_PROXY_COUNT - 1
    # Addresses a client put in front of the chain are skipped; the proxies' part is trusted.
    IPWARE_STRICT = False

# Outgoing mail (password resets, invitations) by URL: smtp://, smtp+tls:// (STARTTLS) or
# smtp+ssl://, with user:password@ (percent-encoded) and :port, e.g.
# smtp+tls://apikey:secret@smtp.example.com:587. consolemail:// prints mails to the log: for
# development only, production refuses it.
EMAIL_URL = env.str("EMAIL_URL", default="consolemail://")


def email_settings(url: str) -> dict[str, Any]:
    """Django's EMAIL_* settings for a mail URL (tests point them at their own SMTP server)."""
    parsed = env.email_url_config(url)
    return {
        "EMAIL_BACKEND": parsed["EMAIL_BACKEND"],
        "EMAIL_HOST": parsed["EMAIL_HOST"] or "localhost",
        "EMAIL_PORT": parsed["EMAIL_PORT"] or 25,
        "EMAIL_HOST_USER": parsed["EMAIL_HOST_USER"] or "",
        "EMAIL_HOST_PASSWORD": parsed["EMAIL_HOST_PASSWORD"] or "",
        "EMAIL_USE_TLS": parsed.get("EMAIL_USE_TLS", False),
        "EMAIL_USE_SSL": parsed.get("EMAIL_USE_SSL", False),
    }


_email = email_settings(EMAIL_URL)
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email["EMAIL_HOST"]
EMAIL_PORT = _email["EMAIL_PORT"]
EMAIL_HOST_USER = _email["EMAIL_HOST_USER"]
EMAIL_HOST_PASSWORD = _email["EMAIL_HOST_PASSWORD"]
EMAIL_USE_TLS = _email["EMAIL_USE_TLS"]
EMAIL_USE_SSL = _email["EMAIL_USE_SSL"]
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT_S", default=10)

# Content-Security-Policy (django-csp) on every page: scripts and styles only from our own
# static files, no inline script, nothing framed. Inline style attributes (bar widths, htmx,
# Vega) are allowed; the chart pages also allow eval (evplatform/csp.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, "'unsafe-inline'"],
        "img-src": [SELF, "data:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="no-reply@localhost")

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "evplatform" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "evplatform.context_processors.portal",
            ],
        },
    },
]

WSGI_APPLICATION = "evplatform.wsgi.application"
ASGI_APPLICATION = "evplatform.asgi.application"

DATABASES = {
    "default": env.db_url_config(DATABASE_URL, engine="django_tenants.postgresql_backend"),
}
# A Unix-socket directory is written percent-encoded in the URL: postgres://user@%2Frun%2Fpg/db
DATABASES["default"]["HOST"] = unquote(DATABASES["default"]["HOST"])
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# django-redis, so that an unreachable Redis is a cache miss, not a 500: API throttling is
# the main user, and a site meter's readings must reach the balancing loop during an outage.
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        # Every key carries the active schema: one tenant never reads another's cache.
        "KEY_FUNCTION": "django_tenants.cache.make_key",
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="evplatform"),
        "OPTIONS": {
            "IGNORE_EXCEPTIONS": True,
            # A Redis that stops answering (rather than refusing) holds each cache call about this long.
            "SOCKET_CONNECT_TIMEOUT": 1,
            "SOCKET_TIMEOUT": 1,
        },
    },
}
# Each ignored cache error is logged (logger "django_redis.cache"); django-redis reads this
# from settings, not from OPTIONS.
DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = True
SESSION_ENGINE = "django.contrib.sessions.backends.db"
# Portal sessions end after 12 hours, or when the browser closes.
SESSION_COOKIE_AGE = 60 * 60 * 12
SESSION_EXPIRE_AT_BROWSER_CLOSE = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "evplatform" / "static"]
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / ".run" / "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tenants.accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["evplatform.api_plumbing.SafeJSONParser"],
    "DEFAULT_PAGINATION_CLASS": "evplatform.api_plumbing.StrictLimitOffsetPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "evplatform.api_schema.ApiSchema",
    "EXCEPTION_HANDLER": "evplatform.api.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.UserRateThrottle",
        "rest_framework.throttling.AnonRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env.str("API_RATE_USER", default="1200/minute"),
        "anon": env.str("API_RATE_ANON", default="60/minute"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "EV load-balancing platform API",
    "DESCRIPTION": "Sites, chargers, sessions, meter readings, limits, balancing runs and reports of "
    "one organisation (the host name picks the organisation).",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Fields that share a choice set (two `kind`s; a site's policy as set and as in force): one named
    # enum each, not a hash and not two names.
    "ENUM_NAME_OVERRIDES": {
        "CircuitKindEnum": "balancing.models.Circuit.Kind",
        "SiteAlertKindEnum": "balancing.models.SiteAlert.Kind",
        "PhasesEnum": "balancing.models.Phases",
        "BalancingPolicyEnum": "balancing.models.Site.Policy",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "evplatform.api_schema.error_responses_hook",
    ],
}

# --- Celery (RabbitMQ broker; nothing acknowledged before it is done) ------------------------

CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_CREATE_MISSING_QUEUES = False
CELERY_TASK_SOFT_TIME_LIMIT = 300
CELERY_TASK_TIME_LIMIT = 360
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# py-amqp: wait for the broker's confirm on every publish, so a sent task is on disk.
CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
CELERY_TASK_TENANT_CACHE_SECONDS = 60
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Beat may run on two hosts: the one holding a PostgreSQL advisory lock sends the schedule, the
# other stands by and takes over within BEAT_LEADER_CHECK_S seconds of the lock holder's
# session ending (evplatform/beat.py).
CELERY_BEAT_SCHEDULER = "evplatform.beat:LeaderScheduler"
BEAT_LEADER_CHECK_S = env.float("BEAT_LEADER_CHECK_S", default=5.0)
# Beat tasks that reach every organisation (the sweeps, rollups, reports, heartbeats) publish one
# task per this many active tenants (tenants.fanout); workers run the chunks side by side.
TENANT_FANOUT_CHUNK_SIZE = env.int("TENANT_FANOUT_CHUNK_SIZE", default=50)
CELERY_BEAT_SCHEDULE = {
    "heartbeat-all-tenants": {
        "task": "tenants.tasks.heartbeat_all_tenants",
        "schedule": 300.0,
    },
}

# --- OCPP gateway (chargepoint.gateway) ---------------------------------------------------

# Seconds between Heartbeats that BootNotification asks of a charger; a charger silent for
# GATEWAY_STALE_FACTOR intervals is taken as offline by the sweep.
GATEWAY_HEARTBEAT_INTERVAL_S = env.int("GATEWAY_HEARTBEAT_INTERVAL_S", default=300)
# Telemetry goes to Celery in batches: one task per tenant schema per window (seconds), or
# sooner when this many events wait. A data-bearing message is answered once its batch is
# confirmed by the broker, so the window is part of every such round trip.
GATEWAY_BATCH_WINDOW_S = env.float("GATEWAY_BATCH_WINDOW_S", default=0.01)
GATEWAY_BATCH_MAX_EVENTS = env.int("GATEWAY_BATCH_MAX_EVENTS", default=500)
# While telemetry tasks wait in the queue (the workers are behind), the window stretches up
# to this, 10 ms per waiting task: fewer, bigger tasks until the workers have caught up.
GATEWAY_BATCH_WINDOW_MAX_S = env.float("GATEWAY_BATCH_WINDOW_MAX_S", default=0.2)
# A data-bearing message whose events are not on the broker after this many seconds (it is
# unreachable) is answered CALLERROR InternalError, the charger's cue to send it again;
# below the usual 30 s message timeout of chargers, so they hear a definite failure.
GATEWAY_ACK_TIMEOUT_S = env.float("GATEWAY_ACK_TIMEOUT_S", default=20.0)
# A frame larger than this (bytes) closes the connection with 1009; OCPP messages are small.
GATEWAY_MAX_FRAME_BYTES = env.int("GATEWAY_MAX_FRAME_BYTES", default=65536)
# Flood guard per connection: a token bucket of this many messages, refilled at this rate/s.
GATEWAY_RATE_BURST = env.int("GATEWAY_RATE_BURST", default=60)
GATEWAY_RATE_PER_S = env.float("GATEWAY_RATE_PER_S", default=10.0)
# Seconds a connection may stay in the opening handshake and before its first message.
GATEWAY_HANDSHAKE_TIMEOUT_S = env.float("GATEWAY_HANDSHAKE_TIMEOUT_S", default=10.0)
# A successful password check is remembered this long (seconds), keyed by a hash of the
# presented secret, so reconnect storms do not burn CPU on PBKDF2.
GATEWAY_AUTH_CACHE_S = env.float("GATEWAY_AUTH_CACHE_S", default=60.0)
# Handshake hardening (chargepoint/gateway/auth.py). Password hashes run on this many threads
# of their own (not the DB threads); at most GATEWAY_AUTH_QUEUE checks wait or run, more are
# refused at once with 503 and Retry-After (seconds). A failed (hash, secret) pair is
# remembered this long, so a repeated guess costs no hash.
GATEWAY_AUTH_THREADS = env.int("GATEWAY_AUTH_THREADS", default=2)
GATEWAY_AUTH_QUEUE = env.int("GATEWAY_AUTH_QUEUE", default=16)
GATEWAY_AUTH_RETRY_AFTER_S = env.int("GATEWAY_AUTH_RETRY_AFTER_S", default=5)
GATEWAY_AUTH_NEGATIVE_CACHE_S = env.float("GATEWAY_AUTH_NEGATIVE_CACHE_S", default=300.0)
# This many failed handshakes of one charger id (or one client address) within the window
# start a cooldown in which it is refused with 429 without a check (0: no limit). Counted per
# gateway process. Behind a proxy every charger has the proxy's address: set the address
# limit to 0 there.
GATEWAY_AUTH_ID_FAILURES = env.int("GATEWAY_AUTH_ID_FAILURES", default=5)
GATEWAY_AUTH_ADDRESS_FAILURES = env.int("GATEWAY_AUTH_ADDRESS_FAILURES", default=30)
GATEWAY_AUTH_FAILURE_WINDOW_S = env.float("GATEWAY_AUTH_FAILURE_WINDOW_S", default=60.0)
GATEWAY_AUTH_COOLDOWN_S = env.float("GATEWAY_AUTH_COOLDOWN_S", default=60.0)
GATEWAY_DB_THREADS = env.int("GATEWAY_DB_THREADS", default=4)
# On SIGTERM the gateway keeps serving this many seconds with /readyz answering 503, so a load
# balancer stops sending new chargers before their connections are closed.
GATEWAY_DRAIN_S = env.float("GATEWAY_DRAIN_S", default=0.0)
# A time a charger reports may be this many seconds ahead of ours (clock skew); later is refused.
GATEWAY_CLOCK_SKEW_S = env.float("GATEWAY_CLOCK_SKEW_S", default=300.0)
# An instance announces itself in Redis with this TTL and refreshes it every third of it.
GATEWAY_REGISTRY_TTL_S = env.int("GATEWAY_REGISTRY_TTL_S", default=15)
# DataTransfer vendor ids the platform accepts; any other gets UnknownVendorId.
GATEWAY_DATA_TRANSFER_VENDORS = env.list("GATEWAY_DATA_TRANSFER_VENDORS", default=[])
GATEWAY_STALE_FACTOR = env.float("GATEWAY_STALE_FACTOR", default=2.5)
CELERY_BEAT_SCHEDULE["chargepoint-offline-sweep"] = {
    "task": "chargepoint.tasks.stations_offline_sweep_all",
    "schedule": 60.0,
}
# A gateway instance whose registry key (GATEWAY_REGISTRY_TTL_S) has expired is dead: its
# chargers are taken offline by this sweep (seconds between runs), within 30 s of its death.
GATEWAY_LIVENESS_SWEEP_S = env.float("GATEWAY_LIVENESS_SWEEP_S", default=5.0)
CELERY_BEAT_SCHEDULE["chargepoint-gateway-liveness"] = {
    "task": "chargepoint.tasks.stations_gateway_sweep_all",
    "schedule": GATEWAY_LIVENESS_SWEEP_S,
    "options": {"expires": 2 * GATEWAY_LIVENESS_SWEEP_S},
}

# Raw meter readings are kept this many days (whole months are dropped once all their readings
# are older; interval energy, sessions and reports made from them are kept). Partitions are
# made this many months ahead of now by the daily upkeep.
TELEMETRY_RETENTION_DAYS = env.int("TELEMETRY_RETENTION_DAYS", default=90)
TELEMETRY_PARTITIONS_AHEAD_MONTHS = env.int("TELEMETRY_PARTITIONS_AHEAD_MONTHS", default=1)
CELERY_BEAT_SCHEDULE["chargepoint-telemetry-partitions"] = {
    "task": "chargepoint.tasks.telemetry_partitions_maintain_all",
    "schedule": 86400.0,
}

# --- Balancing (balancing) ---------------------------------------------------------------

# A burst of charger events within this window becomes one balancing run per site.
BALANCING_COALESCE_SECONDS = env.float("BALANCING_COALESCE_SECONDS", default=0.3)
# Beat sweep: every site is rebalanced at least this often, even if an event was lost. A chunk
# of the sweep (tenants.fanout) still waiting when the next sweep is due is dropped unrun.
BALANCING_SWEEP_SECONDS = env.float("BALANCING_SWEEP_SECONDS", default=60.0)
CELERY_BEAT_SCHEDULE["balancing-sweep"] = {
    "task": "balancing.tasks.sweep_all_sites",
    "schedule": BALANCING_SWEEP_SECONDS,
}
# TxProfiles expire this long after they are sent (the charger then falls back to its fail-safe
# default) and are renewed when less than BALANCING_TX_RENEW_BEFORE_S of it is left.
BALANCING_TX_PROFILE_VALIDITY_S = env.float("BALANCING_TX_PROFILE_VALIDITY_S", default=900.0)
BALANCING_TX_RENEW_BEFORE_S = env.float("BALANCING_TX_RENEW_BEFORE_S", default=300.0)
# Closed loop: a charger drawing more than it was offered by more than this (A, or this share
# of the offer, whichever is larger) for this many readings in a row is non-compliant and is
# booked at its measured draw.
BALANCING_OVERDRAW_TOLERANCE_A = env.float("BALANCING_OVERDRAW_TOLERANCE_A", default=1.0)
BALANCING_OVERDRAW_TOLERANCE_SHARE = env.float("BALANCING_OVERDRAW_TOLERANCE_SHARE", default=0.10)
BALANCING_OVERDRAW_READINGS = env.int("BALANCING_OVERDRAW_READINGS", default=2)
# Readings sampled within this many seconds after a limit was accepted are the charger's
# reaction time, not an overdraw: they do not count.
BALANCING_OVERDRAW_GRACE_S = env.float("BALANCING_OVERDRAW_GRACE_S", default=5.0)
# The fail-safe sized to a site (balancing.failsafe) is at most this (A), even where more would
# fit: it is also the headroom the plan keeps for every idle connector. 6 A = the lowest pilot
# current, so every car keeps charging slowly while the platform is unreachable.
BALANCING_FAILSAFE_TARGET_A = env.int("BALANCING_FAILSAFE_TARGET_A", default=6)
# Longest a balancing run waits for the chargers' answers to one batch of profiles (s); a
# lost answer is a Timeout then, and the site's lock is released soon after.
BALANCING_PUSH_TIMEOUT_S = env.float("BALANCING_PUSH_TIMEOUT_S", default=10.0)
# --- Site meter inputs (balancing.meter, balancing.mqtt) ---------------------------------

# A site meter reading older than this (s) is stale: refused on arrival, and not used by a run
# (the arbiter falls back to the building-load reading then, its last value assumed).
BALANCING_SITE_METER_MAX_AGE_S = env.float("BALANCING_SITE_METER_MAX_AGE_S", default=60.0)
# MQTT broker of the site meters (mqtt:// or mqtts://, optional user:password@) and the topic
# prefix: readings arrive on <prefix>/<tenant schema>/<site slug>/meter.
DEFAULT_MQTT_URL = "mqtt://127.0.0.1:1883"
MQTT_URL = env.str("MQTT_URL", default=DEFAULT_MQTT_URL)
MQTT_TOPIC_PREFIX = env.str("MQTT_TOPIC_PREFIX", default="evp")

# --- Billing (billing) -----------------------------------------------------------------

# Meter samples are folded into 15-minute interval energy this often (seconds).
BILLING_ROLLUP_SECONDS = env.float("BILLING_ROLLUP_SECONDS", default=300.0)
CELERY_BEAT_SCHEDULE["billing-rollup"] = {
    "task": "billing.tasks.roll_up_all_tenants",
    "schedule": BILLING_ROLLUP_SECONDS,
}
# Hourly: a tenant's monthly savings report is generated once its last month has closed in the
# time zone of every one of its sites (the task sends each month once). Each tenant's report
# starts up to BILLING_REPORT_SPREAD_S seconds later (a fixed offset per tenant, from its schema
# name), so month-end reports do not all start in the same hour's first minute. The broker must
# let a worker hold a message this long plus the report's run (RabbitMQ's consumer_timeout).
BILLING_REPORT_SPREAD_S = env.float("BILLING_REPORT_SPREAD_S", default=3600.0)
CELERY_BEAT_SCHEDULE["billing-monthly-reports"] = {
    "task": "billing.tasks.monthly_reports_all_tenants",
    "schedule": 3600.0,
}
# Hourly: each site's simulated cost-aware month (the report's column for sites that ran the
# static cap) is replayed up to its last local midnight and stored, so the month's report
# resumes it and replays only the last hours (billing.reports.checkpoints).
CELERY_BEAT_SCHEDULE["billing-simulation-checkpoints"] = {
    "task": "billing.tasks.simulation_checkpoints_all_tenants",
    "schedule": crontab(minute=23),
}
# Each stored report version (month close or a request) is mailed to the organisation's finance
# people, each narrowed to the sites they reach (billing.report_mail); false sends no mail.
BILLING_REPORT_MAIL = env.bool("BILLING_REPORT_MAIL", default=True)

# --- Retention (balancing.retention; README, "Retention") ------------------------------

# History older than this many days is deleted by a daily beat task in every organisation
# (`python manage.py prune_history` does the same by hand, with --dry-run); 0 keeps it forever.
# Balancing runs with their profile pushes (never a site's latest run, nor a run holding a
# profile still in force or sent during a session still open):
RETENTION_RUNS_DAYS = env.int("RETENTION_RUNS_DAYS", default=90)
# OCPP calls the platform sent to chargers (ChargerCommand):
RETENTION_COMMANDS_DAYS = env.int("RETENTION_COMMANDS_DAYS", default=90)
# Site alerts cleared this long ago (open ones are never deleted; openings and clearings are
# also in the audit log, which is kept):
RETENTION_ALERTS_DAYS = env.int("RETENTION_ALERTS_DAYS", default=365)
# Rows per DELETE statement, each batch its own short transaction, so no lock is held for long.
RETENTION_BATCH_ROWS = env.int("RETENTION_BATCH_ROWS", default=5000)
# The daily prune runs at this hour (UTC), when sites are usually quiet.
RETENTION_HOUR_UTC = env.int("RETENTION_HOUR_UTC", default=3)
CELERY_BEAT_SCHEDULE["retention-prune-history"] = {
    "task": "balancing.tasks.prune_history_all_tenants",
    "schedule": crontab(minute=17, hour=RETENTION_HOUR_UTC),
}

# --- Operations: logs, health, metrics, error reporting (README, "Operations") ----------------

# "plain": readable lines (local, tests); "json": one JSON object per line with the tenant, site,
# charger, task and request ids bound to the work (evplatform.logs); production defaults to json.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)
# /readyz gives each dependency (PostgreSQL, Redis, the broker) this long to answer (seconds).
READINESS_TIMEOUT_S = env.float("READINESS_TIMEOUT_S", default=2.0)
# /metrics answers callers on these networks (not through a proxy), or with this bearer token.
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=["127.0.0.0/8", "::1/128"])
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# A Celery worker serves its own metrics on this port (0: off), from its main process.
WORKER_METRICS_PORT = env.int("WORKER_METRICS_PORT", default=0)
WORKER_METRICS_ADDR = env.str("WORKER_METRICS_ADDR", default="0.0.0.0")  # noqa: S104 - opt-in, container port
# Liveness files of workers (rewritten every HEALTHCHECK_INTERVAL_S) and beat (every tick), read
# by `manage.py healthcheck worker|beat`.
HEALTHCHECK_DIR = env.str("HEALTHCHECK_DIR", default=str(Path(gettempdir()) / "evplatform-health"))
HEALTHCHECK_INTERVAL_S = env.float("HEALTHCHECK_INTERVAL_S", default=10.0)
# Errors (and, at this sample rate, traces) of every process go to Sentry when a DSN is set.
SENTRY_DSN = env.str("SENTRY_DSN", default="")
SENTRY_TRACES_SAMPLE_RATE = env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0)
SENTRY_ENVIRONMENT = env.str("SENTRY_ENVIRONMENT", default="")
if SENTRY_DSN:
    error_reporting_init(dsn=SENTRY_DSN, traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE, environment=SENTRY_ENVIRONMENT)

# --- Notifications (balancing.notifications; README, "Alerts and notifications") ---------

# Links in emails: the organisation's primary domain put into this ({domain}).
PORTAL_URL = env.str("PORTAL_URL", default="https://{domain}")
# Webhook signing secrets are HMAC-SHA256(this key, the endpoint's salt); empty = SECRET_KEY.
# Changing it (or SECRET_KEY while this is empty) changes every endpoint's secret.
WEBHOOK_SIGNING_KEY = env.str("WEBHOOK_SIGNING_KEY", default="")
WEBHOOK_TIMEOUT_S = env.float("WEBHOOK_TIMEOUT_S", default=5.0)
# Webhook URLs that resolve to loopback, private or link-local addresses are refused (they would
# let an organisation reach our own network) unless this is on; DEBUG allows them too.
WEBHOOK_ALLOW_PRIVATE_HOSTS = env.bool("WEBHOOK_ALLOW_PRIVATE_HOSTS", default=False)
# A failed email or webhook is tried again after up to FACTOR x 2^n seconds (full jitter),
# at most BACKOFF_MAX apart, MAX_RETRIES times; then its delivery is marked failed.
NOTIFICATION_RETRY_BACKOFF_S = env.int("NOTIFICATION_RETRY_BACKOFF_S", default=30)
NOTIFICATION_RETRY_BACKOFF_MAX_S = env.int("NOTIFICATION_RETRY_BACKOFF_MAX_S", default=3600)
NOTIFICATION_MAX_RETRIES = env.int("NOTIFICATION_MAX_RETRIES", default=8)
