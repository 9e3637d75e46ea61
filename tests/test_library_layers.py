"""Layering: presentation (rich) stays in the CLI, and the library never reads the command line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import naslung

PACKAGE = Path(naslung.__file__).parent


def _library_modules() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if "cli" not in p.relative_to(PACKAGE).parts]


def _imported_roots(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_library_does_not_import_rich():
    modules = _library_modules()
    assert len(modules) > 20  # the walk found the package
    offenders = [str(p.relative_to(PACKAGE)) for p in modules
                 if "rich" in _imported_roots(ast.parse(p.read_text(encoding="utf-8")))]
    assert offenders == []


def test_the_cli_does_import_rich():
    # the check above would pass vacuously if the walk or the parser missed imports inside functions
    assert "rich" in _imported_roots(ast.parse((PACKAGE / "cli" / "progress.py").read_text(encoding="utf-8")))


def test_the_library_does_not_read_sys_argv():
    offenders = []
    for path in _library_modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            is_argv = isinstance(node, ast.Attribute) and node.attr == "argv"
            if is_argv and getattr(node.value, "id", None) == "sys":
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


# ---- the package order -------------------------------------------------------------------------------------
#: The layers, lowest first (docs/ARCHITECTURE.md, "Layers"). A module may import modules of its own layer and
#: of lower ones, never of a higher one: not at module level, not inside a function, not for type hints.
#: "base" is the modules directly under naslung/ (errors, schemas, options, paths, atomic, lock, progress,
#: provenance, allocator, metrics, outputs, protocol). Packages in one tuple are peers.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("base", "resources"),  # resources: the bundled models' files, no code
    ("data",),
    ("models",),
    ("losses",),
    ("train",),
    ("search",),
    ("ensemble",),
    ("zoo",),
    # serving predicts with explain's attention overlay; explain loads its runs through serving
    ("serving", "explain"),
    ("report",),
    ("pipeline",),
    ("cli",),
)
#: Modules whose layer is not their folder's. fingerprint.py wraps data.dataset's loader (it ranks with data).
ROLES = {
    "naslung.fingerprint": "data",
    "naslung.__main__": "cli",
}
RANK = {package: rank for rank, peers in enumerate(LAYERS) for package in peers}
#: The import cycles between modules allowed, at most (docs/ARCHITECTURE.md).
MAX_CYCLES = 2


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, module: str, is_package: bool, known: set[str]) -> list[tuple[str, int]]:
    """Every naslung module ``source`` imports, anywhere in the file (functions and TYPE_CHECKING blocks too),
    with its line; relative imports resolved against ``module``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                here = here[:len(here) - (node.level - 1)]
                base = ".".join(here + ([node.module] if node.module else []))
            for alias in node.names:  # ``from naslung import schemas`` imports the module naslung.schemas
                sub = f"{base}.{alias.name}"
                found.append((sub if sub in known else base, node.lineno))
    return [(name, line) for name, line in found if name == "naslung" or name.startswith("naslung.")]


def _graph() -> dict[str, list[tuple[str, int]]]:
    paths = {_module_of(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    known = set(paths)
    return {m: _imports(p.read_text(encoding="utf-8"), m, p.name == "__init__.py", known)
            for m, p in paths.items()}


def layer_of(module: str) -> str:
    """The layer of a module (``"base"``, a package name, or its role in :data:`ROLES`)."""
    if module in ROLES:
        return ROLES[module]
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in RANK) else "base"


def upward_imports(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    """``"a (layer) -> b (layer), line N"`` for every import of a higher layer."""
    return [f"{m} ({layer_of(m)}) -> {t} ({layer_of(t)}), line {line}"
            for m, targets in sorted(graph.items()) for t, line in targets
            if RANK[layer_of(t)] > RANK[layer_of(m)]]


def import_cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """The strongly connected groups of two or more modules (Tarjan), each sorted."""
    edges = {m: sorted({t for t, _ in targets if t in graph and t != m}) for m, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(cycles)


def test_every_package_has_a_layer():
    packages = {p.parent.relative_to(PACKAGE).parts[0] for p in PACKAGE.glob("*/__init__.py")}
    assert packages - set(RANK) == set(), "place a new package in LAYERS (and docs/ARCHITECTURE.md)"
    assert {"data", "train", "cli"} <= packages  # the walk found the package


def test_no_module_imports_a_higher_layer():
    graph = _graph()
    assert sum(len(t) for t in graph.values()) > 200  # the walk found the imports
    assert upward_imports(graph) == []


def test_at_most_two_import_cycles():
    cycles = import_cycles(_graph())
    assert len(cycles) <= MAX_CYCLES, cycles


def test_the_architecture_doc_states_this_order():
    doc = (PACKAGE.parents[1] / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    order = " -> ".join("/".join(peers) for peers in LAYERS)
    assert f"Layers, lowest first: {order}." in " ".join(doc.split())


SYNTHETIC = [  # (module, is a package, source, the upward import it holds)
    ("naslung.data.labels", False, "from naslung.train.engine import fit\n", "naslung.train.engine"),
    ("naslung.data.labels", False, "def f():\n    import naslung.cli.app\n", "naslung.cli.app"),
    ("naslung.models.factory", False,
     "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from naslung.search.members import Members\n",
     "naslung.search.members"),
    ("naslung.train.cv", False, "def f():\n    from ..explain import tsne\n", "naslung.explain.tsne"),
    ("naslung.paths", False, "def f():\n    from naslung.data.errors import DataError\n",
     "naslung.data.errors"),
    ("naslung.data", True, "from .. import pipeline\n", "naslung.pipeline"),
    ("naslung.zoo.build", False, "from naslung.serving.predict import predict\n", "naslung.serving.predict"),
]


@pytest.mark.parametrize(("module", "is_package", "source", "target"), SYNTHETIC)
def test_an_upward_import_is_caught(module: str, is_package: bool, source: str, target: str):
    # the guard is real: each of these imports, added to a real module, would fail the test above
    graph = _graph()
    graph[module] = graph.get(module, []) + _imports(source, module, is_package, set(graph))
    found = upward_imports(graph)
    assert len(found) == 1 and f"{module} ({layer_of(module)}) -> {target} " in found[0], found


def test_a_downward_or_peer_import_passes():
    graph = _graph()
    graph["naslung.train.cv"] += _imports("from naslung.data.dataset import load_dataset\n",
                                          "naslung.train.cv", False, set(graph))
    graph["naslung.explain.tsne"] += _imports("from naslung.serving.predict import x\n",
                                              "naslung.explain.tsne", False, set(graph))
    assert upward_imports(graph) == []


def test_a_third_cycle_is_counted():
    graph = _graph()
    before = len(import_cycles(graph))
    graph["naslung.data.luna16"] = graph["naslung.data.luna16"] + [("naslung.data.labels", 1)]
    graph["naslung.data.labels"] = graph["naslung.data.labels"] + [("naslung.data.luna16", 1)]
    graph["naslung.atomic"] = graph["naslung.atomic"] + [("naslung.lock", 1)]
    graph["naslung.lock"] = graph["naslung.lock"] + [("naslung.atomic", 1)]
    assert len(import_cycles(graph)) == before + 2
    assert ["naslung.atomic", "naslung.lock"] in import_cycles(graph)


def test_recognising_files_does_not_import_torch():
    # schemas.py is why: outputs and report/discover name every file's schema without importing its owner
    import subprocess
    import sys

    code = ("import sys, naslung.schemas, naslung.outputs, naslung.report.discover, naslung.data.source; "
            "print(sorted(m for m in ('torch', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
