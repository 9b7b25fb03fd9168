"""The package's layers: each folder imports only from the folders below it, and no module imports
itself back through others (an import circle) or another module's private names."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "metarl"
# Bottom to top. "base": the modules directly in metarl/ (parameter dicts, signals, the version) but the CLI.
LAYERS = ["base", "estimators", "rl", "outer", "experiment", "integrations", "cli"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every ``metarl`` import in the file, at any depth (also inside functions)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "metarl":
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.split(".")[0] == "metarl"]
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    """The layer of a module: its folder below ``metarl``."""
    parts = module.split(".")
    if len(parts) > 2:
        return LAYERS.index(parts[1])
    return LAYERS.index("cli") if parts[-1] in ("cli", "__main__") else 0


@cache
def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, names in imports(path):
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            for candidate in submodules or [target]:
                if candidate in MODULES and candidate != module:
                    edges[module].add(candidate)
    return edges


def test_every_module_sits_in_a_layer():
    assert {module: layer(module) for module in MODULES}  # raises ValueError for a folder not in LAYERS


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_its_own_layer_or_lower(module):
    upward = [t for t in graph()[module] if layer(t) > layer(module)]
    assert not upward, f"{module} (layer {LAYERS[layer(module)]}) imports {upward} from above"


def test_no_import_circle():
    edges, state, cycles = graph(), {}, []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not cycles, f"import circles: {cycles}"


def test_no_private_name_is_imported_across_modules():
    tests = Path(__file__).resolve().parent
    scripts = tests.parent / "scripts"
    files = [*MODULES.values(), *tests.glob("*.py"), *scripts.glob("*.py")]
    private = [f"{path.name}: {target}.{name}" for path in files for target, names in imports(path)
               for name in names if name.startswith("_") and not name.endswith("__")]
    assert not private


def test_envs_import_neither_torch_nor_metarl():
    """Task families are plain Gymnasium and NumPy: usable without torch, and below every metarl layer."""
    envs = PACKAGE.parent / "envs"
    found = [f"{path.name}: {name}" for path in envs.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
             for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else
                          [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
             if name.split(".")[0] in ("torch", "metarl")]
    assert not found


def test_test_modules_share_helpers_not_each_other():
    """Shared test code lives in tests/helpers.py (and fixtures in conftest.py), not in another test module."""
    tests = Path(__file__).resolve().parent
    crossing = [f"{path.name}: {node.module}" for path in tests.glob("test_*.py")
                for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests.test_")]
    assert not crossing
