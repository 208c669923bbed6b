"""The modules of kerasmtl import each other without cycles.

Every import counts: module level, inside functions, ``from kerasmtl.x import y`` where
``y`` is a submodule (an import of ``kerasmtl.x.y``) and a package's ``__init__``
importing its submodules. Imports under ``if TYPE_CHECKING:`` are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kerasmtl"

# The training workflows (command line, configuration, runs): only they import each other.
WORKFLOWS = {"kerasmtl.workflow", "kerasmtl.comparison", "kerasmtl.method_comparison"}
# Known imports of a workflow from elsewhere in the package, as ("importer", "workflow");
# an entry whose import is gone fails the test, so this list only shrinks.
ALLOWED_WORKFLOW_IMPORTS: set[tuple[str, str]] = set()


def module_names(root: Path) -> dict[str, Path]:
    """``{dotted module name: file}`` of every module under the package folder ``root``."""
    names = {}
    for file in sorted(root.rglob("*.py")):
        parts = file.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return names


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Import nodes of ``tree``, at any depth, except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.If) and _is_type_checking(node):
            children = node.orelse
        stack.extend(children)


def import_graph(root: Path) -> dict[str, set[str]]:
    """``{module: modules of the same package it imports}`` for the package folder ``root``."""
    modules = module_names(root)
    graph = {name: set() for name in modules}
    for name, file in modules.items():
        package = name if file.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(file.read_text(encoding="utf-8"), str(file))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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
    return sorted(found)


def _describe(graph, component) -> str:
    inside = set(component)
    edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a] & inside)]
    return "cycle among " + ", ".join(component) + ":\n    " + "\n    ".join(edges)


def test_no_import_cycles():
    graph = import_graph(PACKAGE)
    found = cycles(graph)
    assert not found, "import cycles inside kerasmtl:\n" + "\n".join(_describe(graph, c) for c in found)


def test_only_workflows_import_workflows():
    graph = import_graph(PACKAGE)
    found = {(a, b) for a, targets in graph.items() if a not in WORKFLOWS for b in targets & WORKFLOWS}
    assert found <= ALLOWED_WORKFLOW_IMPORTS, f"imports of a workflow: {sorted(found - ALLOWED_WORKFLOW_IMPORTS)}"
    assert found == ALLOWED_WORKFLOW_IMPORTS, f"allowed imports that are gone: {sorted(ALLOWED_WORKFLOW_IMPORTS - found)}"


def test_checker_finds_a_cycle(tmp_path):
    package = tmp_path / "fake"
    package.mkdir()
    (package / "__init__.py").write_text("from fake import a\n")
    (package / "a.py").write_text("def f():\n    from fake.b import g\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nimport fake.a\nif TYPE_CHECKING:\n    from fake import c\n")
    (package / "c.py").write_text("from . import b\n")
    graph = import_graph(package)
    assert graph == {"fake": {"fake.a"}, "fake.a": {"fake.b"}, "fake.b": {"fake.a"}, "fake.c": {"fake.b"}}
    assert cycles(graph) == [["fake.a", "fake.b"]]
