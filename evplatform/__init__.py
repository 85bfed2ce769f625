"""The Django project: settings, URL maps, the Celery app and the WSGI/ASGI entry points.

Named ``evplatform`` rather than ``platform`` (what the design card says): a top-level package
called ``platform`` shadows the standard library module that ``uuid``, Celery, billiard and
redis call at import time (``platform.system()``), and neither manage.py nor a worker starts.
"""

from evplatform.celery import app as celery_app

__all__ = ("celery_app",)
