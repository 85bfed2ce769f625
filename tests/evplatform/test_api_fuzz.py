"""A schema-driven fuzz run (schemathesis) against a live server: no request gets a 5xx."""

import os
import re
import subprocess
import sys

import pytest
from django.conf import settings
from django_tenants.utils import tenant_context

from balancing.models import Site
from tenants.accounts.models import ApiToken, Role, User
from tenants.accounts.tokens import api_token_create
from tests.conftest import ALPHA

pytestmark = pytest.mark.django_db
EXAMPLES_PER_OPERATION = 8


@pytest.fixture(scope="module")
def admin_token(tenant, django_db_blocker):
    """A committed admin with a token, and a site to act on, for the server process."""
    with django_db_blocker.unblock(), tenant_context(tenant):
        user = User.objects.create_user(email="fuzz@alpha.localhost", password="fuzz-pass-2026-x", role=Role.ADMIN)
        _, raw = api_token_create(user=user, name="fuzz")
        site = Site.objects.create(slug="fuzz-site", name="Fuzz site", limit_a=63, demand_cap_kw=20)
    yield raw
    with django_db_blocker.unblock(), tenant_context(tenant):
        site.limit_schedules.all().delete()
        site.delete()
        ApiToken.objects.filter(user=user).delete()
        user.delete()


def test_no_api_request_gets_a_server_error(web_server, admin_token) -> None:
    base = f"http://127.0.0.1:{web_server}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{base}/api/schema/?format=json",
            "--url",
            base,
            "-H",
            f"Host: {ALPHA.domain}",
            "-H",
            f"Authorization: Bearer {admin_token}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--generation-deterministic",
            "--request-timeout",
            "30",
            "--phases",
            "examples,coverage,fuzzing",
        ],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert "Fuzzing" in result.stdout
    operations = int(re.search(r"Operations:\s+(\d+) selected", result.stdout).group(1))
    assert operations >= 20  # every endpoint of the schema was exercised
    assert f"{operations} passed" in result.stdout
