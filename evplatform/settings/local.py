"""Development settings: what `make run` uses. Debug on, a fixed key that is only for this."""

from evplatform.settings.base import *  # noqa: F403
from evplatform.settings.base import env

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default="local-development-only-not-secret")
PORTAL_URL = env.str("PORTAL_URL", default="http://{domain}:8000")
