"""Settings modules: ``local`` (default for manage.py), ``test`` (pytest) and ``production``.

All of them import :mod:`evplatform.settings.base`, the one place that reads the environment.
"""
