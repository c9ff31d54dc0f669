"""The layer order of wsgi_proxy/layers.py holds: no module imports a higher floor or a
folder beside its own, and no import cycle exists."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import wsgi_proxy
from wsgi_proxy.layers import LAYERS

PACKAGE = Path(wsgi_proxy.__file__).parent


def package_imports(path: Path, module: str) -> set[str]:
    """The package's modules that ``path`` (the module ``module``) imports, anywhere in it
    (dotted names without the package's)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module)
            if base is None:
                continue
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "wsgi_proxy" or name.startswith("wsgi_proxy."):
                target = _existing(name.removeprefix("wsgi_proxy").lstrip("."))
                if target is not None and target != module:
                    found.add(target)
    return found


def _dotted(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts)


def _absolute(node: ast.ImportFrom, module: str) -> str | None:
    if node.level == 0:
        return node.module
    base = ["wsgi_proxy", *module.split(".")][: -node.level]
    return ".".join(base + ([node.module] if node.module else []))


def _existing(name: str) -> str | None:
    """The module ``name`` refers to: itself if it is a module, its package's
    ``__init__`` if it is a folder, None for a name inside a module."""
    if not name:
        return "__init__"
    path = PACKAGE.joinpath(*name.split("."))
    if path.with_suffix(".py").is_file():
        return name
    if (path / "__init__.py").is_file():
        return f"{name}.__init__"
    return None


def floor_of(module: str) -> tuple[int, str]:
    """(floor, folder) of a module: its first dotted part is a folder or a root module."""
    top = module.split(".", maxsplit=1)[0]
    for floor, names in enumerate(LAYERS):
        if top in names:
            return floor, top
    raise AssertionError(f"{module} is in no layer of wsgi_proxy/layers.py")


MODULES = sorted(_dotted(path) for path in PACKAGE.rglob("*.py"))
GRAPH = {
    module: package_imports(PACKAGE / (module.replace(".", "/") + ".py"), module)
    for module in MODULES
}


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        floor_of(module)


@pytest.mark.parametrize("module", MODULES)
def test_imports_go_down(module: str) -> None:
    floor, folder = floor_of(module)
    wrong = []
    for target in sorted(GRAPH[module]):
        target_floor, target_folder = floor_of(target)
        if target_folder != folder and target_floor <= floor:
            wrong.append(target)
    assert not wrong, f"{module} imports {wrong}: a higher floor or a folder beside its own"


def test_no_import_cycle() -> None:
    cycles = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if target.endswith("__init__") and target != "__init__":
                continue  # a folder's __init__ is empty: importing it imports nothing back
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in MODULES:
        if module not in state:
            visit(module, [module])
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from wsgi_proxy.core.config import Config", {"core.config"}),
        ("from wsgi_proxy.core import keys", {"core.keys", "core.__init__"}),
        ("import wsgi_proxy.store.cache", {"store.cache"}),
        ("from wsgi_proxy import wiring", {"wiring", "__init__"}),
        ("if TYPE_CHECKING:\n    from wsgi_proxy.flow.admin import Admin", {"flow.admin"}),
        ("def f():\n    from wsgi_proxy.cli import main", {"cli"}),
        ("import os", set()),
    ],
)
def test_imports_are_found(tmp_path: Path, source: str, expected: set[str]) -> None:
    """The scanner sees every kind of import the rules apply to."""
    fake = tmp_path / "fake.py"
    fake.write_text(source)
    assert package_imports(fake, "layers") == expected
