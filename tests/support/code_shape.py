"""The shape of the code base, read from its source with `ast`: function lengths and import circles.

    .venv/bin/python -m tests.support.code_shape [--limit 60] [--top 10]

prints every function longer than the limit, the longest functions and modules, and every import
circle between modules of the shipped packages. Imports are counted wherever they stand: at the top, under
`if TYPE_CHECKING:` (a reader still has to read both modules to understand either) and inside
functions.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("vram", "stages", "vortexd")


@dataclass(frozen=True)
class Function:
    """One function or method: where it is and how many lines it spans (decorators excluded)."""

    path: Path
    name: str
    line: int
    lines: int


def module_name(path: Path, root: Path = REPO_ROOT) -> str:
    """The dotted module name of source file `path` under `root`."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(root: Path = REPO_ROOT, packages: tuple[str, ...] = PACKAGES) -> list[Path]:
    """Every .py file of the shipped `packages` under `root`."""
    return sorted(path for package in packages for path in (root / package).rglob("*.py"))


def functions(path: Path) -> Iterator[Function]:
    """Every function and method defined in `path`, nested ones included, with its qualified name."""
    def walk(node: ast.AST, prefix: str) -> Iterator[Function]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                yield Function(path, name, child.lineno, child.end_lineno - child.lineno + 1)
                yield from walk(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(ast.parse(path.read_text(), str(path)), "")


def imported_modules(path: Path, modules: set[str], root: Path = REPO_ROOT) -> set[str]:
    """The modules among `modules` that `path` imports, anywhere in the file (a `from package
    import name` counts as importing `package.name` when that is a module)."""
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    found.discard(here)
    return found


def import_graph(root: Path = REPO_ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module → the package modules it imports."""
    files = source_files(root, packages)
    modules = {module_name(path, root) for path in files}
    return {module_name(path, root): imported_modules(path, modules, root) for path in files}


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan): each is an import circle.
    A package importing its own submodules (through its __init__) and being imported back by
    them is left out: that is how a package re-exports, not a circle between two modules."""
    def real(module: str, target: str) -> bool:
        return not (target.startswith(module + ".") or module.startswith(target + "."))

    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if not real(module, target):
                continue
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return groups


def main() -> None:
    """Print the long functions, the longest functions and modules, and the import circles."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=60)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    found = sorted((f for path in source_files() for f in functions(path)), key=lambda f: -f.lines)
    for title, chosen in ((f"over {args.limit} lines", [f for f in found if f.lines > args.limit]),
                          (f"the {args.top} longest", found[:args.top])):
        print(f"functions {title}:")
        for f in chosen:
            print(f"  {f.lines:4d}  {f.path.relative_to(REPO_ROOT)}:{f.line}  {f.name}")
    modules = sorted(((len(path.read_text().splitlines()), path) for path in source_files()), reverse=True)
    print("the longest modules:")
    for n, path in modules[:3]:
        print(f"  {n:4d}  {path.relative_to(REPO_ROOT)}")
    print("import circles:")
    for group in import_circles(import_graph()):
        print("  " + " ↔ ".join(group))


if __name__ == "__main__":
    main()
