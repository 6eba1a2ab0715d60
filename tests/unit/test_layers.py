"""The architecture of docs/design.md, held against the code's own imports.

Layers from the bottom: ``core`` (no I/O) < the adapters ``bus`` (NATS), ``db`` (SQL),
``cluster`` (Kubernetes) and ``settings`` < ``service`` < ``workers``, ``web``, ``audit`` <
``local`` < ``cli``. An import may point down or sideways within a package, never up, and the
modules form no circle. Each framework stays in its adapter.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "services" / "privpoll"

RANKS = {
    "core": 0,
    "bus": 1,
    "db": 1,
    "cluster": 1,
    "settings": 1,
    "client": 1,
    "text_table": 1,
    "service": 2,
    "workers": 3,
    "web": 3,
    "audit": 3,
    "local": 4,
    "cli": 5,
    "__main__": 6,
    "__init__": 0,
}
# Which layers may import each framework (the operator package is the Kubernetes adapter too).
FRAMEWORKS = {
    "flask": {"web"},
    "werkzeug": {"web"},
    "gunicorn": {"web"},
    "nats": {"bus"},
    "kubernetes": {"cluster"},
    "kopf": set(),
}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(("privpoll", *parts))] = path
    return found


def layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def imports(path: Path) -> Iterator[tuple[str, int]]:
    """Every module this file imports (absolute names), with its line."""
    source = path.read_text()
    try:
        tree = ast.parse(source)
    except SystemError:
        # CPython 3.11's "AST constructor recursion depth mismatch" (gh-106905, fixed in later
        # releases): its depth counter can be left wrong by earlier work in the process, once,
        # in a full run. The source is fine; a second parse succeeds.
        tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno


def first_party(known: dict[str, Path], path: Path) -> set[str]:
    found = set()
    for name, _ in imports(path):
        if name in known and name != "privpoll":
            found.add(name)
    return found


def test_imports_only_point_down() -> None:
    known = modules()
    upward = []
    for module, path in known.items():
        for target in first_party(known, path):
            here, there = layer(module), layer(target)
            if here != there and RANKS[there] > RANKS[here]:
                upward.append(f"{module} ({here}) imports {target} ({there})")
    assert not upward, "imports that point up:\n" + "\n".join(sorted(upward))


def test_the_modules_form_no_circle() -> None:
    known = modules()
    graph = {m: first_party(known, p) - {m} for m, p in known.items()}
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            circle = [*trail[trail.index(module) :], module]
            pytest.fail("an import circle: " + " -> ".join(circle))
        if module in done:
            return
        for target in sorted(graph[module]):
            visit(target, [*trail, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_each_framework_stays_in_its_adapter(framework: str) -> None:
    allowed = FRAMEWORKS[framework]
    strays = []
    for module, path in modules().items():
        for name, line in imports(path):
            if name.split(".")[0] == framework and layer(module) not in allowed:
                strays.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not strays, "\n".join(sorted(set(strays)))


def test_the_layer_test_sees_an_upward_import() -> None:
    """The walk reads real imports: the service layer's own module imports core."""
    known = modules()
    assert "privpoll.core.spec" in first_party(known, known["privpoll.service.polls"])


def test_every_catch_all_says_why() -> None:
    """A bare ``except Exception`` (or ``suppress(Exception)``) hides bugs unless its reason is
    written beside it, on its line or the one above."""
    catch_all = re.compile(r"except (Base)?Exception\b|suppress\((Base)?Exception\)")
    silent = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "operator").rglob("*.py")]:
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if catch_all.search(line) and "#" not in line and "#" not in lines[number - 1]:
                silent.append(f"{path.relative_to(ROOT)}:{number + 1}")
    assert not silent, "catch-alls without a reason:\n" + "\n".join(silent)
