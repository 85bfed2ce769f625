"""Every module that touches the database says which schema it runs in (README, "Layout")."""

import ast
from pathlib import Path

import pytest
from django.conf import settings

LAYER_FILES = ("models.py", "services.py", "selectors.py", "tasks.py")
APPS = ("tenants", "tenants/accounts", "balancing", "chargepoint", "billing")
# Writes kept in modules named for their job rather than in the app's services.py.
WRITE_MODULES = (
    "balancing/dispatch.py",
    "balancing/resync.py",
    "chargepoint/telemetry.py",
    "chargepoint/liveness.py",
    "chargepoint/commands.py",
    "chargepoint/registry.py",
    "billing/tariff_versions.py",
    "billing/interval_rollup.py",
    "billing/session_draws.py",
    "billing/bulk_reads.py",
    "billing/savings_reports.py",
    "billing/simulation_checkpoints.py",
    "billing/reports/checkpoints.py",
)


def layer_modules() -> list[Path]:
    base = Path(settings.BASE_DIR)
    found = [base / app / name for app in APPS for name in LAYER_FILES if (base / app / name).exists()]
    return found + [base / path for path in WRITE_MODULES]


@pytest.mark.parametrize("path", layer_modules(), ids=lambda p: str(p.relative_to(settings.BASE_DIR)))
def test_module_docstring_names_its_schema(path: Path) -> None:
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert "Schema:" in docstring, f"{path.name}: say 'Schema: public', 'Schema: tenant' or 'Schema: every schema'"


def test_the_marker_check_sees_the_layer_modules() -> None:
    names = {str(p.relative_to(settings.BASE_DIR)) for p in layer_modules()}
    assert {"tenants/models.py", "balancing/services.py", "balancing/dispatch.py", "chargepoint/models.py"} <= names
