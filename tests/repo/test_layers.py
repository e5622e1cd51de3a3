"""The library's layers, from the code's own imports (read with `ast` as tests/repo/test_dvc_deps.py
reads them, `if TYPE_CHECKING:` imports included: a type named is a dependency all the same).

Each layer is a package of src/imgpipe, lowest first in `LAYERS`; a module imports its own
package or those below it. The modules at the top of src/imgpipe (the `imgpipe` console, the
plots page) are the entry points, above every layer. Some never reach torch, however far their
imports go (`TORCH_FREE`): download, augment and split start without it, and `imgpipe review`
reads outcome records with numpy alone, and `imgpipe predict --model model.onnx` runs on ONNX
Runtime, numpy and Pillow.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import pytest
from support.imports import LAYERS, imported_names, inert, module_file

REPO = Path(__file__).resolve().parents[2]
TORCH = ("torch", "torchvision")
TORCH_FREE = [
    "imgpipe.core", "imgpipe.data", "imgpipe.review",
    "imgpipe.task.kinds", "imgpipe.task.outcomes", "imgpipe.task.decision", "imgpipe.task.metrics", "imgpipe.task.label_issues",
    "imgpipe.cv.summary",  # the cv_summary stage
    "imgpipe.predict.rows", "imgpipe.predict.onnx_model",  # predicting with the ONNX export
]


def module_name(file: str) -> str:
    """`src/imgpipe/data/split.py` -> `imgpipe.data.split`; a package's `__init__.py` -> the package."""
    return ".".join(Path(file).with_suffix("").parts[1:]).removesuffix(".__init__")


def layer(module: str) -> str | None:
    """The layer package a module is in; None for the entry points at the top."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in LAYERS else None


def rank(module: str) -> int:
    return LAYERS.index(layer(module)) if layer(module) else len(LAYERS)


def imports(root: Path) -> dict[str, dict[str, str]]:
    """For each module of `root`/src/imgpipe: the imgpipe modules it imports, each with the
    statement's name (`imgpipe.train.fit.Fit`), and the outside packages as themselves."""
    graph = {}
    for path in sorted((root / "src" / "imgpipe").rglob("*.py")):
        file = path.relative_to(root).as_posix()
        module = module_name(file)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        found = {}
        for name in sorted(imported_names(path, package, type_checking=True)):
            if name.split(".")[0] != "imgpipe":
                found[name.split(".")[0]] = name
                continue
            target = module_file(name, root) or module_file(name.rpartition(".")[0], root)  # `from m import x`: m
            if target and not inert(root / target) and module_name(target) != module:
                found[module_name(target)] = max(found.get(module_name(target), ""), name, key=len)  # the whole name
        graph[module] = found
    return graph


def upward(graph: dict[str, dict[str, str]]) -> list[str]:
    """Each import of a module from a layer above its own."""
    return [f"{module} imports {name} ({layer(module)} is below {layer(target) or 'the entry points'})"
            for module, targets in graph.items() for target, name in targets.items()
            if target.startswith("imgpipe.") and rank(target) > rank(module)]


def reaches(graph: dict[str, dict[str, str]], start: str, wanted) -> str | None:
    """The import chain from `start` to the first module for which `wanted(module)`, if any."""
    seen, todo = {start}, deque([(start, start)])
    while todo:
        module, chain = todo.popleft()
        for target in graph.get(module, {}):
            if wanted(target):
                return f"{chain} -> {target}"
            if target in graph and target not in seen:
                seen.add(target)
                todo.append((target, f"{chain} -> {target}"))
    return None


def cycles(graph: dict[str, dict[str, str]]) -> list[str]:
    """One import chain for each module that its own imports lead back to."""
    return sorted({chain for module in graph if (chain := reaches(graph, module, lambda m, start=module: m == start))})


def torch_reached(graph: dict[str, dict[str, str]], prefixes: list[str]) -> list[str]:
    """For each module under `prefixes`, the chain by which it reaches torch, if it does."""
    return [chain for module in graph if any(module == p or module.startswith(f"{p}.") for p in prefixes)
            if (chain := reaches(graph, module, lambda m: m in TORCH))]


GRAPH = imports(REPO)


def test_imports_go_down_the_layers():
    assert not upward(GRAPH), "imports that run up the layers:\n" + "\n".join(upward(GRAPH))


def test_no_module_imports_itself_round_a_circle():
    assert not cycles(GRAPH), "import cycles:\n" + "\n".join(cycles(GRAPH))


def test_the_torch_free_modules_never_reach_torch():
    chains = torch_reached(GRAPH, TORCH_FREE)
    assert not chains, "torch reached from a module that must start without it:\n" + "\n".join(chains)


def test_data_never_reaches_the_layers_above_it():
    above = set(LAYERS[LAYERS.index("data") + 1:])
    chains = [chain for module in GRAPH if layer(module) == "data"
              if (chain := reaches(GRAPH, module, lambda m: m.startswith("imgpipe.") and (layer(m) in above or not layer(m))))]
    assert not chains, "\n".join(chains)


def test_every_module_is_in_a_layer_or_is_an_entry_point():
    """A new package must be placed in `LAYERS` (and in ARCHITECTURE.md) before it holds code."""
    packages = {p.parent.name for p in (REPO / "src" / "imgpipe").glob("*/__init__.py")}
    assert packages == set(LAYERS), f"packages not in LAYERS: {sorted(packages - set(LAYERS))}"
    busy = [p.relative_to(REPO).as_posix() for p in (REPO / "src" / "imgpipe").glob("*/__init__.py") if not inert(p)]
    assert not busy, f"a layer's __init__.py holds only its docstring: {busy}"


@pytest.mark.parametrize(
    ("files", "check", "expected"),
    [
        ({"data/a.py": "import imgpipe.train.b\n", "train/b.py": ""}, "upward",
         "imgpipe.data.a imports imgpipe.train.b (data is below train)"),
        ({"core/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from imgpipe.console import app\n",
          "console.py": ""}, "upward", "imgpipe.core.a imports imgpipe.console.app (core is below the entry points)"),
        ({"train/a.py": "from imgpipe.train import b\n", "train/b.py": "def f():\n    from .a import x\n"}, "cycles",
         "imgpipe.train.a -> imgpipe.train.b -> imgpipe.train.a"),
        ({"review/a.py": "from imgpipe.task.k import x\n", "task/k.py": "from torch import nn\n"}, "torch",
         "imgpipe.review.a -> imgpipe.task.k -> torch"),
    ],
)
def test_the_checks_name_the_offending_import(tmp_path: Path, files: dict, check: str, expected: str):
    """Planted in a scratch tree, each fault is found and named (the checks are not vacuous)."""
    for name, text in {"__init__.py": "", **files}.items():
        path = tmp_path / "src" / "imgpipe" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)
    graph = imports(tmp_path)
    found = {"upward": upward, "cycles": cycles, "torch": lambda g: torch_reached(g, TORCH_FREE)}[check](graph)
    assert expected in found
