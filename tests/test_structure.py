"""The house rules of rkd/, checked on the source: no import cycle, the library below the top floor,
short modules and functions, and `rkd` imports at module top (issue 10)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rkd"
TOP_FLOOR = {"rkd.cli", "rkd.commands", "rkd.run.pipeline", "rkd.distill", "rkd.search", "rkd.evaluate"}
# the one lazy import: the commands load torch, transformers and datasets, which `rkd --help` does not need
LAZY_IMPORTS = {("rkd.cli", "rkd.commands")}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 450, 80


def modules() -> dict:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


MODULES = modules()


def resolve(target: str) -> str:
    """The rkd module an import names (``rkd.a.b.name`` -> ``rkd.a.b`` when ``name`` is not a module)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target


def rkd_imports(tree: ast.AST) -> list:
    """``(imported module, inside a function?)`` for every ``rkd`` import in a module."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("rkd"):
                found.extend((resolve(f"{child.module}.{a.name}"), in_function) for a in child.names)
            elif isinstance(child, ast.Import):
                found.extend((resolve(a.name), in_function) for a in child.names if a.name.startswith("rkd"))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return [(target, inside) for target, inside in found if target]


TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}
IMPORTS = {name: rkd_imports(tree) for name, tree in TREES.items()}


def test_no_import_cycle():
    graph = {name: {t for t, _ in IMPORTS[name] if t != name} for name in MODULES}
    state: dict = {}

    def visit(node: str, trail: list) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(nxt) :] + [node, nxt]))
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = "done"

    for name in MODULES:
        if name not in state:
            visit(name, [])


def test_library_never_imports_the_top_floor():
    offenders = [
        (name, target)
        for name in MODULES
        if name not in TOP_FLOOR
        for target, _ in IMPORTS[name]
        if target in TOP_FLOOR
    ]
    assert not offenders, f"library modules importing the pipeline, CLI or entry scripts: {offenders}"


def test_rkd_imports_are_at_module_top():
    inside = [
        (name, target)
        for name in MODULES
        for target, in_function in IMPORTS[name]
        if in_function and (name, target) not in LAZY_IMPORTS
    ]
    assert not inside, f"rkd imports inside functions (move them to the top of the module): {inside}"


def test_modules_and_functions_are_short():
    long_modules = {
        name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    long_functions = [
        (name, node.name, node.end_lineno - node.lineno + 1)
        for name, tree in TREES.items()
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def test_the_checks_see_what_they_claim_to():
    """Guards the guard: the walk finds the lazy CLI import and the stage modules' imports."""
    assert ("rkd.commands", True) in IMPORTS["rkd.cli"]
    assert ("rkd.stages.inputs", False) in IMPORTS["rkd.stages.stage1"]
    assert "rkd.stages.search" in MODULES and "rkd.run.pipeline" in MODULES
