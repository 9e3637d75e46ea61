"""Layering: presentation (rich) stays in the CLI, and the library never reads the command line."""

from __future__ import annotations

import ast
from pathlib import Path

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
