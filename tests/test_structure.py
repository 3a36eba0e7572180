"""The house rules of rkd/, checked on the source.

No import cycle (counting the package ``__init__`` every import runs); imports point down the
floors of ``FLOORS`` (at most ``MAX_UPWARD`` exceptions); a small top level; short modules and
functions; ``rkd`` imports at module top. Each check is a function of plain data, so the last
tests can feed it a made-up package and prove it sees what it claims to.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rkd"

# The floors of rkd, lowest first: a module may import from its own floor and the floors below.
# A module belongs to the floor of the longest prefix that names it. rkd/run holds both low
# utilities (files, progress, checkpoints) and the top-floor pipeline, so its modules are placed
# one by one. The registries the config validates against (channels, NAS ops, loss terms, teacher
# kinds, baseline names) sit below the config that names them.
TEACHER_KINDS = ("kinds", "classifier", "clip", "embedded", "hub", "parts")
FLOORS = (
    ("rkd", "rkd.errors", "rkd.measure", "rkd.run", "rkd.run.artifacts", "rkd.run.progress", "rkd.run.rundir")
    + ("rkd.run.checkpoint", "rkd.run.preemption", "rkd.run.estimate", "rkd.hardware"),
    ("rkd.draws", "rkd.channels", "rkd.coding", "rkd.nas", "rkd.losses", "rkd.baselines.names")
    + tuple(f"rkd.teacher.{m}" for m in TEACHER_KINDS)
    + ("rkd.hardware.probe", "rkd.hardware.decide"),  # the probe times a small NAS student
    ("rkd.config", "rkd.run.tracking"),
    ("rkd.data", "rkd.run.fingerprint", "rkd.run.hashing"),
    ("rkd.models",),
    ("rkd.optim",),
    ("rkd.engine",),
    ("rkd.teacher",),
    ("rkd.evaluation",),
    ("rkd.stages",),
    ("rkd.baselines",),
    ("rkd.export", "rkd.bench"),
    ("rkd.run.pipeline", "rkd.run.preflight", "rkd.commands", "rkd.cli", "rkd.distill", "rkd.search", "rkd.evaluate")
    + ("rkd.run.calibrate", "rkd.run.plan", "rkd.hardware.doctor"),
)
MAX_UPWARD = 1
# the one lazy import: the commands load torch, transformers and datasets, which `rkd --help` does not need
LAZY_IMPORTS = {("rkd.cli", "rkd.commands")}
MAX_TOP_LEVEL_MODULES = 12
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


# ----------------------------------------------------------------------------- reading the package


def find_modules(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` below ``package`` (a package is its ``__init__``)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def resolve(target: str, modules: dict) -> str:
    """The module an import names (``rkd.a.b.name`` -> ``rkd.a.b`` when ``name`` is not a module)."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target


def package_imports(tree: ast.AST, modules: dict, root: str = "rkd") -> list[tuple[str, bool]]:
    """``(imported module, inside a function?)`` for every import of ``root``'s modules in a module."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom) and (child.module or "").split(".")[0] == root:
                found.extend((resolve(f"{child.module}.{a.name}", modules), in_function) for a in child.names)
            elif isinstance(child, ast.Import):
                found.extend(
                    (resolve(a.name, modules), in_function) for a in child.names if a.name.split(".")[0] == root
                )
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return [(target, inside) for target, inside in found if target]


def ancestors(name: str) -> list[str]:
    """The packages whose ``__init__`` runs before ``name`` does: ``rkd.a.b`` -> ``rkd``, ``rkd.a``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(imports: dict[str, list], modules: dict) -> dict[str, set]:
    """Who runs whom at import time: the imported modules plus the package ``__init__`` files above
    them (those of the importer's own packages are already running, so they add no edge)."""
    graph = {}
    for name, targets in imports.items():
        running = set(ancestors(name)) | {name}
        edges = set()
        for target, _ in targets:
            edges |= {t for t in [*ancestors(target), target] if t in modules and t not in running}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict = {}

    def visit(node: str, trail: list) -> list | None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt) :] + [node, nxt] if nxt in trail else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, trail + [node])):
                return cycle
        state[node] = "done"
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name, [])):
            return cycle
    return None


def floor_of(name: str, floors=FLOORS) -> int | None:
    """The floor of the longest prefix in ``floors`` that names ``name`` (None: on no floor). The root
    package names only its own ``__init__``, so a new package must be given a floor."""
    best, floor = -1, None
    for level, prefixes in enumerate(floors):
        for prefix in prefixes:
            below = "." in prefix and name.startswith(prefix + ".")
            if (name == prefix or below) and len(prefix) > best:
                best, floor = len(prefix), level
    return floor


def upward_imports(imports: dict[str, list], floors=FLOORS) -> list[tuple[str, str]]:
    """``(importer, imported)`` for every import from a lower floor up to a higher one."""
    return sorted(
        {
            (name, target)
            for name, targets in imports.items()
            for target, _ in targets
            if None not in (low := floor_of(name, floors), high := floor_of(target, floors)) and high > low
        }
    )


def long_functions(trees: dict[str, ast.AST], limit: int) -> list[tuple[str, str, int]]:
    return [
        (name, node.name, node.end_lineno - node.lineno + 1)
        for name, tree in trees.items()
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > limit
    ]


def top_level_modules(package: Path) -> list[str]:
    return sorted(p.stem for p in package.glob("*.py") if p.name != "__init__.py")


MODULES = find_modules(PACKAGE)
TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}
IMPORTS = {name: package_imports(tree, MODULES) for name, tree in TREES.items()}


# ----------------------------------------------------------------------------- the rules


def test_no_import_cycle():
    cycle = find_cycle(import_graph(IMPORTS, MODULES))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_is_on_a_floor():
    assert not [name for name in MODULES if floor_of(name) is None], "add these modules to FLOORS"


def test_imports_point_down_the_floors():
    upward = upward_imports(IMPORTS)
    assert len(upward) <= MAX_UPWARD, f"imports from a lower floor up to a higher one (at most {MAX_UPWARD}): {upward}"


def test_rkd_imports_are_at_module_top():
    inside = [
        (name, target)
        for name in MODULES
        for target, in_function in IMPORTS[name]
        if in_function and (name, target) not in LAZY_IMPORTS
    ]
    assert not inside, f"rkd imports inside functions (move them to the top of the module): {inside}"


def test_top_level_is_small():
    top = top_level_modules(PACKAGE)
    assert len(top) <= MAX_TOP_LEVEL_MODULES, f"{len(top)} modules at rkd/'s top level: {top}; group them in packages"


def test_modules_and_functions_are_short():
    long_modules = {
        name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long_modules, f"modules over {MAX_MODULE_LINES} lines: {long_modules}"
    too_long = long_functions(TREES, MAX_FUNCTION_LINES)
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"


# ----------------------------------------------------------------------------- guarding the guard


def test_the_walk_sees_the_real_imports():
    """The lazy CLI import, a stage's import, a package-level import and the pipeline are all found."""
    assert ("rkd.commands", True) in IMPORTS["rkd.cli"]
    assert ("rkd.stages.inputs", False) in IMPORTS["rkd.stages.stage1"]
    assert ("rkd.config", False) in IMPORTS["rkd.engine"]
    assert "rkd.stages.search" in MODULES and "rkd.run.pipeline" in MODULES
    assert floor_of("rkd.run.pipeline") == len(FLOORS) - 1 and floor_of("rkd.run.artifacts") == 0


@pytest.fixture()
def toy_package(tmp_path: Path) -> Path:
    """A made-up package ``toy`` that breaks every rule once."""
    files = {
        "__init__.py": "",
        "low.py": "from toy.high import thing\n",  # up a floor
        "high.py": "def f():\n    from toy import other\n",  # an import inside a function
        "pkg/__init__.py": "from toy.pkg.leaf import x\n",
        "pkg/leaf.py": "from toy.other import y\n",
        "other.py": "from toy.pkg.sibling import z\n",  # runs pkg/__init__ -> leaf -> other: a cycle
        "pkg/sibling.py": "z = 1\n",
        "long.py": "def f():\n" + "    x = 1\n" * 70,
    }
    for rel, text in files.items():
        (tmp_path / "toy" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "toy" / rel).write_text(text)
    return tmp_path / "toy"


def test_the_checks_catch_a_package_that_breaks_the_rules(toy_package: Path):
    modules = find_modules(toy_package)
    trees = {name: ast.parse(path.read_text()) for name, path in modules.items()}
    imports = {name: package_imports(tree, modules, root="toy") for name, tree in trees.items()}
    assert imports["toy.high"] == [("toy.other", True)]
    # the cycle runs through a package __init__, which no module imports by name
    cycle = find_cycle(import_graph(imports, modules))
    assert cycle is not None and "toy.pkg" in cycle and "toy.other" in cycle
    floors = (("toy", "toy.low", "toy.pkg", "toy.other", "toy.long"), ("toy.high",))
    assert upward_imports(imports, floors) == [("toy.low", "toy.high")]
    assert long_functions(trees, MAX_FUNCTION_LINES) == [("toy.long", "f", 71)]
    assert top_level_modules(toy_package) == ["high", "long", "low", "other"]
    assert floor_of("toy.pkg.leaf", floors) == 0 and floor_of("nowhere", floors) is None
    assert floor_of("toy.new", floors) is None  # the root names only itself
