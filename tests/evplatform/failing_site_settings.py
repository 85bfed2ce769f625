"""Test settings whose tenant URL map has a view that raises (tests/evplatform/test_sentry.py)."""

from evplatform.settings.test import *  # noqa: F403

ROOT_URLCONF = "tests.evplatform.failing_site_urls"
