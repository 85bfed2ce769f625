"""No import circle between apps (README, "Layout"), checked on the source like the schema markers.

Between apps there is no circle of imports: no set of modules
spanning two apps where each can reach the others by following imports (a strongly connected
component of the module graph, counting imports inside functions, which are still imports). An app
may use another's modules, one way along any chain; where the lower app must tell the upper one
something it calls a callback the upper app registered (``chargepoint.listeners``).
Migrations are left out: they are frozen history and name models by label on purpose. That
tenancy imports nothing of the domain at all is ``tests/tenants/test_layering.py``.
"""

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from django.conf import settings

PACKAGES = ("evplatform", "tenants", "balancing", "chargepoint", "billing")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Every module of app code under ``root``, by dotted name; migrations left out."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" in path.relative_to(root).parts:
                continue
            found[module_name(root, path)] = path
    return found


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str, path: Path, known: set[str]) -> Iterator[str]:
    """The modules ``module`` imports anywhere in its body, resolved to modules under the root.

    ``from a.b import c`` is an import of ``a.b.c`` when that is a module, else of ``a.b``; a name
    outside the root (Django, the standard library) is dropped.
    """
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                yield target


def import_graph(root: Path, packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    modules = source_modules(root, packages)
    known = set(modules)
    return {name: set(imports_of(name, path, known)) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components of more than one module (iterative: the graph has hundreds of nodes)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            advanced = False
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return components


def app_of(module: str) -> str:
    return module.split(".")[0]


def cross_app_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    return [sorted(c) for c in strongly_connected(graph) if len({app_of(m) for m in c}) > 1]


ROOT = Path(settings.BASE_DIR)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def test_no_import_circle_spans_two_apps(graph: dict[str, set[str]]) -> None:
    assert cross_app_circles(graph) == []


def test_the_graph_sees_the_code_it_checks(graph: dict[str, set[str]]) -> None:
    """Guards the checks above against passing on an empty or mis-resolved graph."""
    assert {"tenants.models", "tenants.accounts.models", "balancing.engine", "chargepoint.models"} <= set(graph)
    assert "balancing.models" in graph["chargepoint.models"]
    assert not any("migrations" in name for name in graph)
    assert sum(len(targets) for targets in graph.values()) > 300


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_check_catches_a_circle_closed_by_a_late_import(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "lower/__init__.py": "",
            "lower/services.py": "def f():\n    from upper.services import g\n    return g()\n",
            "upper/__init__.py": "",
            "upper/services.py": "from . import helpers\n",
            "upper/helpers.py": "from lower import services\n",
        },
    )
    graph = import_graph(tmp_path, ["lower", "upper"])
    assert graph["upper.services"] == {"upper.helpers"}
    assert cross_app_circles(graph) == [["lower.services", "upper.helpers", "upper.services"]]
    assert cross_app_circles({k: v - {"lower.services"} for k, v in graph.items()}) == []
