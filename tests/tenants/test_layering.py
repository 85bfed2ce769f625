"""Tenancy sits below the domain: ``tenants`` imports nothing of balancing, chargepoint or billing.

Not at module level, not late inside a function, and not by name (``apps.get_model("balancing",
...)``, ``import_module``, ``import_string``). Migrations are history and are left out. What the
tenancy layer needs of the domain it asks through hooks the domain registers
(``tenants.accounts.hooks``).
"""

import ast
from pathlib import Path

import pytest
from django.conf import settings

DOMAIN_APPS = frozenset({"balancing", "chargepoint", "billing"})
LOOKUPS = frozenset({"get_model", "import_module", "import_string", "__import__"})


def tenancy_modules() -> list[Path]:
    base = Path(settings.BASE_DIR) / "tenants"
    return sorted(path for path in base.rglob("*.py") if "migrations" not in path.parts)


def _names_domain(dotted: str) -> bool:
    return dotted.split(".")[0] in DOMAIN_APPS


def domain_references(source: str) -> list[str]:
    """Every import or by-name lookup of a domain app in ``source``, as ``line: what``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names if _names_domain(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and _names_domain(node.module):
            found.append(f"{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in LOOKUPS:
                found += [
                    f"{node.lineno}: {name}({arg.value!r})"
                    for arg in node.args
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and _names_domain(arg.value)
                ]
    return found


@pytest.mark.parametrize("path", tenancy_modules(), ids=lambda p: str(p.relative_to(settings.BASE_DIR)))
def test_a_tenancy_module_reaches_no_domain_app(path: Path) -> None:
    assert domain_references(path.read_text()) == []


def test_the_check_sees_imports_late_imports_and_lookups_by_name() -> None:
    source = (
        "import billing.models\n"
        "from chargepoint.services import charger_register\n"
        "def f():\n"
        "    from balancing.models import SiteGroup\n"
        "    return apps.get_model('balancing', 'SiteGroup'), import_module('billing.tasks')\n"
        "from tenants.models import Tenant\n"
    )
    assert domain_references(source) == [
        "1: import billing.models",
        "2: from chargepoint.services import ...",
        "4: from balancing.models import ...",
        "5: get_model('balancing')",
        "5: import_module('billing.tasks')",
    ]
    assert {"tenants/accounts/tokens.py", "tenants/admin.py"} <= {
        str(p.relative_to(settings.BASE_DIR)) for p in tenancy_modules()
    }
