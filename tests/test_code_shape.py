"""The code base reads cleanly: no function over 60 lines, no module over 500, no import circle.

The checks read the source with `ast` (tests.support.code_shape); the same module prints the
longest functions and every circle: `.venv/bin/python -m tests.support.code_shape`.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.code_shape import (
    REPO_ROOT,
    functions,
    import_circles,
    import_graph,
    source_files,
)

MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 500


def test_no_function_in_the_shipped_packages_is_over_60_lines() -> None:
    """Every function and method of vram/, stages/ and vortexd/ fits in 60 lines."""
    long = [f"{f.path.relative_to(REPO_ROOT)}:{f.line} {f.name} ({f.lines} lines)"
            for path in source_files() for f in functions(path) if f.lines > MAX_FUNCTION_LINES]
    assert long == []


def test_no_module_in_the_shipped_packages_is_over_500_lines() -> None:
    """Every module of vram/, stages/ and vortexd/ fits in 500 lines."""
    long = [f"{path.relative_to(REPO_ROOT)} ({n} lines)" for path in source_files()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
    assert long == []


def test_no_import_circle_between_modules_of_the_shipped_packages() -> None:
    """No two modules import each other, directly or round a longer loop, counting imports under
    TYPE_CHECKING and inside functions (the manifest describes the backends and stage times it
    reads instead of importing the pipeline's classes, so the pipeline → manifest import is the
    only one between them)."""
    graph = import_graph()
    assert "vortexd.manifest" in graph["vortexd.pipeline"]
    assert import_circles(graph) == []


def test_an_import_under_type_checking_closes_a_circle(tmp_path: Path) -> None:
    """The checker counts `if TYPE_CHECKING:` imports and imports inside functions: a module
    that imports its importer only for a type annotation is still in a circle with it."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import thing\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
                                  "thing = 1\n")
    (package / "c.py").write_text("def late():\n    from pkg.d import other\n")
    (package / "d.py").write_text("from . import c\nother = 2\n")
    (package / "e.py").write_text("from pkg import a\n")
    circles = import_circles(import_graph(tmp_path, ("pkg",)))
    assert sorted(circles) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.d"]]
