"""What a file of src/imgpipe imports, read with `ast` (nothing is imported): shared by
tests/repo/test_dvc_deps.py (which files a stage runs) and tests/repo/test_layers.py (which way imports go).

`import imgpipe.x`, `from imgpipe.x import y` (y may be a submodule), relative imports, and
imports inside functions (a lazy import still runs). Imports under `if TYPE_CHECKING:` never run:
they count only where asked (`type_checking=True`), as for the layers, where a type named is a
dependency of the reader all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

# The layer packages of src/imgpipe, lowest first (ARCHITECTURE.md draws them in this order); the
# modules at the top of src/imgpipe are the entry points, above them all.
LAYERS = ["core", "data", "models", "task", "feed", "train", "evaluate", "cv", "predict", "review", "export"]


def runtime_nodes(tree: ast.AST, type_checking: bool = False):
    """Every node of `tree` (function bodies included) except those under `if TYPE_CHECKING:`,
    unless `type_checking`."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if not type_checking and isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def imported_names(path: Path, package: str, type_checking: bool = False) -> set[str]:
    """Absolute names of the modules `path` imports; `from m import x` gives `m` and `m.x` (x may
    be a submodule). `package` (the file's own package) resolves relative imports."""
    names = set()
    for node in runtime_nodes(ast.parse(path.read_text(), str(path)), type_checking):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parent = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            base = ".".join([*parent, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def module_file(name: str, root: Path) -> str | None:
    """The file (relative to `root`) that importing module `name` runs, if it is part of imgpipe."""
    if name.split(".")[0] != "imgpipe":
        return None
    base = root / "src" / Path(*name.split("."))
    for file in (base.with_suffix(".py"), base / "__init__.py"):
        if file.is_file():
            return file.relative_to(root).as_posix()
    return None


def inert(file: Path) -> bool:
    """An `__init__.py` that is empty or only a docstring."""
    body = ast.parse(file.read_text()).body
    return file.name == "__init__.py" and all(isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) for s in body)
