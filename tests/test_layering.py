"""The house's layering (issue 13): the contract package `tokenmeter` imports no stage and no part of the app
shell; no stage imports the app shell; and no two modules import each other, directly or around a loop."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("collectors", "streams", "warehouse", "dashboards")
PACKAGES = ("tokenmeter", *STAGES, "app")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """Modules `path` imports (any import, or only those run when the module is imported)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # also imports inside top-level `if`/`try` blocks, but not inside functions
        stack, nodes = list(tree.body), []
        while stack:
            node = stack.pop()
            nodes.append(node)
            if isinstance(node, (ast.If, ast.Try)):
                stack.extend(ast.iter_child_nodes(node))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` imports the submodule pkg.mod (and runs pkg/__init__, which is no cycle by
            # itself); `from pkg.mod import name` imports pkg.mod
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if _is_module(submodule) else node.module)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def test_the_contract_imports_no_stage_and_no_app():
    bad = {f"{name} imports {target}" for name, path in _modules().items() if name.split(".")[0] == "tokenmeter"
           for target in _imports(path, top_level_only=False) if target.split(".")[0] != "tokenmeter"}
    assert not bad, sorted(bad)


def test_no_stage_imports_the_app_shell():
    bad = {f"{name} imports {target}" for name, path in _modules().items() if name.split(".")[0] in STAGES
           for target in _imports(path, top_level_only=False) if target.split(".")[0] == "app"}
    assert not bad, sorted(bad)


def test_no_import_cycle_between_modules():
    modules = _modules()
    graph = {name: {t for t in _imports(path, top_level_only=True) if t in modules and t != name}
             for name, path in modules.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                return path + [name, target]
            if target not in state and (cycle := visit(target, path + [name])):
                return cycle
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name, [])):
            raise AssertionError("import cycle: " + " -> ".join(cycle[cycle.index(cycle[-1]):]))
