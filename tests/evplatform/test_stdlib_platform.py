"""The project package is not called `platform`: the standard module must stay reachable."""

import importlib.util
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

from django.conf import settings


def test_platform_resolves_to_the_standard_library_in_this_process() -> None:
    import platform

    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(platform.__file__).resolve().parent == stdlib
    assert platform.system()  # what uuid, Celery, billiard and redis call at import
    assert uuid.uuid1().version == 1


def test_no_top_level_package_shadows_the_standard_module() -> None:
    spec = importlib.util.find_spec("platform")
    assert spec is not None
    assert spec.origin is not None
    assert not Path(spec.origin).resolve().is_relative_to(Path(settings.BASE_DIR).resolve())
    assert not (Path(settings.BASE_DIR) / "platform").exists()


def test_manage_py_process_sees_the_standard_platform_module() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "import platform, uuid; print(platform.system(), uuid.uuid4().version)",
        ],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].split() == [__import__("platform").system(), "4"]
