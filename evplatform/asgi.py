"""ASGI entry point (uvicorn or daphne, where an async server is preferred)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "evplatform.settings.production")

application = get_asgi_application()
