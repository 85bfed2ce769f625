"""The demo data (published passwords) never reaches a production deployment."""

import subprocess
import sys

from django.conf import settings

from tests.evplatform.test_settings import PRODUCTION_ENV, run_python_env


def test_seed_demo_refuses_to_run_with_the_production_settings() -> None:
    # A database nobody listens on: had the command gone ahead, it would have failed differently.
    env = {**run_python_env(), **PRODUCTION_ENV, "DATABASE_URL": "postgres://postgres@127.0.0.1:1/nowhere"}
    result = subprocess.run(
        [sys.executable, "manage.py", "seed_demo"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "seed_demo creates accounts with published passwords and refuses to run" in result.stderr
    assert "setup_platform" in result.stderr
