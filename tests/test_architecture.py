"""The library's structure: stage packages one level deep, and no import cycle, lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import snapvit_core

CORE = Path(snapvit_core.__file__).parent
STAGES = {"scoring", "search", "engine", "evaluation", "latency", "landscape", "export", "files", "runtime"}
CARRIED = {"load_pruned", "modeling_snapvit", "configuration_snapvit"}  # copied into exports: relative imports


def module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in CORE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every library module ``path`` imports anywhere in the file (top level, functions, TYPE_CHECKING)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # ``from package import module`` imports that module; ``from module import name`` the module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            # the deepest library module the import names (a package's __init__ counts as a module)
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, set(known)) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_library_has_no_import_cycle():
    graph = import_graph()
    # the package's own __init__ re-exports the public names: it imports, nothing of the library imports it
    graph = {name: {t for t in targets if t != "snapvit_core"} for name, targets in graph.items()}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_lazy_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    lazy = ast.parse("def f():\n    from snapvit_core.engine import elastic\n")
    assert any(isinstance(node, ast.ImportFrom) for node in ast.walk(lazy))


def test_folders_are_the_pipeline_stages_one_level_deep():
    folders = {p.name for p in CORE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert STAGES <= folders
    assert not [p for p in CORE.glob("*/*/__init__.py")], "stage packages are one level deep"
    flat = {p.stem for p in CORE.glob("*.py")}
    assert flat <= {"__init__", "__main__", "_version", "errors", "presets", "explorer"}


def test_carried_export_files_import_only_each_other():
    """The export's transformers code is copied next to the weights: it imports no library module."""
    for name in CARRIED:
        tree = ast.parse((CORE / "export" / f"{name}.py").read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith("snapvit_core"), (name, node.module)


def test_one_published_path():
    """The grid's published path has one definition (snapvit_core.landscape.grid)."""
    roots = [CORE, CORE.parent / "ui", CORE.parent / "app_pages"]
    defined = [
        path
        for root in roots
        for path in root.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text("utf-8")))
        if isinstance(node, ast.FunctionDef) and node.name == "published_path"
    ]
    assert [p.relative_to(CORE.parent).as_posix() for p in defined] == ["snapvit_core/landscape/grid.py"]
