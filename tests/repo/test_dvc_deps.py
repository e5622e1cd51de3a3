"""dvc.yaml's deps match the code: each stage depends on exactly the files of src/imgpipe that its
script runs, and the stages that read images depend on data/annotations.csv, which carries their md5.

A stage's files are the import closure of `stages/<name>.py` within src/imgpipe, found statically
with `ast` (nothing is imported): `import imgpipe.x`, `from imgpipe.x import y` (y may be a
submodule), relative imports, and imports inside functions (a lazy import still runs); imports
under `if TYPE_CHECKING:` never run and do not count. Importing `imgpipe.a.b` also runs
`imgpipe/__init__.py` and `imgpipe/a/__init__.py`, so package `__init__.py` files count like any
module, except one that is empty or only a docstring: it cannot change what a stage computes. A
folder dep (`src/imgpipe/models`) covers every .py under it, and is surplus only if the stage
imports none of them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
import shlex
from collections import deque
from pathlib import Path

import pandas as pd
import pytest
import yaml
from support.imports import imported_names, inert, module_file

from imgpipe.data.shards import members

REPO = Path(__file__).resolve().parents[2]
LIBRARY = "src/imgpipe"


def as_one_stage(definition: dict) -> dict:
    """A stage, or a `matrix`/`foreach` group's template with `${item...}` as its first item
    would have it (0): every stage of a group runs the same script with the same deps."""
    stage = definition.get("do", definition)
    return stage | {"cmd": re.sub(r"\$\{item(\.\w+)?\}", "0", stage["cmd"])}


STAGES = {name: as_one_stage(d) for name, d in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items()}
IMAGE_READERS = ("train", "evaluate", "export", "predict", "cv_fold", "cv_summary")


def closure(script: str, root: Path = REPO) -> dict[str, str]:
    """Each file of src/imgpipe that running `script` (relative to `root`) executes, with the
    import chain that reaches it (`stages/split.py -> imgpipe.data.split -> imgpipe.core.params`)."""
    found: dict[str, str] = {}
    todo = deque([(script, "", script)])  # file, its package, how it is reached
    while todo:
        file, package, chain = todo.popleft()
        for name in sorted(imported_names(root / file, package)):
            parts = name.split(".")
            for module in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):  # parents run first
                target = module_file(module, root)
                if target and target not in found:
                    found[target] = f"{chain} -> {module}"
                    own_package = module if target.endswith("/__init__.py") else module.rpartition(".")[0]
                    todo.append((target, own_package, found[target]))
    return {file: chain for file, chain in found.items() if not inert(root / file)}


def covered(dep: str, root: Path = REPO) -> set[str]:
    """The files a dep covers: itself, or every .py under it if it is a folder."""
    path = root / dep
    if path.is_dir():
        return {p.relative_to(root).as_posix() for p in path.rglob("*.py")}
    return {dep}


def dep_problems(name: str, stage: dict, root: Path = REPO) -> list[str]:
    """What is wrong with `stage`'s deps: its script or an imported file missing, a file of
    src/imgpipe listed that the script never runs."""
    match = re.match(r"python (stages/\S+\.py)", stage["cmd"])
    if not match:
        return [f"stage '{name}': cmd does not run `python stages/<name>.py`: {stage['cmd']!r}"]
    script = match[1]
    deps = [str(d).rstrip("/") for d in stage.get("deps", [])]
    library = [d for d in deps if d == LIBRARY or d.startswith(f"{LIBRARY}/")]
    imported = closure(script, root)
    listed = set().union(*(covered(d, root) for d in library))
    problems = [] if script in deps else [f"stage '{name}': dvc.yaml lacks {script}, the script of its cmd"]
    problems += [f"stage '{name}': dvc.yaml lacks {f} (imported by {imported[f]})" for f in sorted(imported.keys() - listed)]
    problems += [f"stage '{name}': dvc.yaml lists {d}, which {script} never imports"
                 for d in library if not covered(d, root) & imported.keys()]
    return problems


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_are_its_import_closure(name):
    """dvc.yaml lists the stage's script and exactly the src/imgpipe files it runs."""
    problems = dep_problems(name, STAGES[name])
    assert not problems, "\n".join(problems)


def test_closure_follows_real_import_chains():
    """The closure is not vacuous: direct, transitive and package-__init__ imports are found,
    docstring-only __init__ files are left out."""
    split = closure("stages/split.py")
    assert split["src/imgpipe/core/params.py"] == "stages/split.py -> imgpipe.core.params"
    assert "src/imgpipe/data/split.py" in split and "src/imgpipe/core/errors.py" in split  # direct, transitive
    assert "src/imgpipe/data/__init__.py" not in split  # only a docstring
    assert "src/imgpipe/__init__.py" in split  # it sets __version__
    train = closure("stages/train.py")
    assert {"src/imgpipe/models/catalog.py", "src/imgpipe/models/cnn.py", "src/imgpipe/models/registry.py"} <= train.keys()
    assert "src/imgpipe/models/__init__.py" not in train
    assert "src/imgpipe/review/report.py" not in train


def test_closure_finds_lazy_relative_and_submodule_imports(tmp_path):
    """Imports inside functions, relative imports, `from pkg import submodule` and parent
    packages count; `if TYPE_CHECKING:` imports and modules outside imgpipe do not."""
    files = {
        "stages/s.py": "import os\n\ndef main():\n    from imgpipe.a import b\n",
        "src/imgpipe/__init__.py": '"""Docstring only."""\n',
        "src/imgpipe/a/__init__.py": "X = 1\n",
        "src/imgpipe/a/b.py": "from typing import TYPE_CHECKING\nfrom . import c\nfrom ..d import f\n"
                              "if TYPE_CHECKING:\n    import imgpipe.never\n",
        "src/imgpipe/a/c.py": "",
        "src/imgpipe/a/unused.py": "",  # covered by the folder dep below, which is still fine
        "src/imgpipe/d.py": "def f(): pass\n",
        "src/imgpipe/never.py": "",
    }
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    assert closure("stages/s.py", tmp_path) == {
        "src/imgpipe/a/__init__.py": "stages/s.py -> imgpipe.a",
        "src/imgpipe/a/b.py": "stages/s.py -> imgpipe.a.b",
        "src/imgpipe/a/c.py": "stages/s.py -> imgpipe.a.b -> imgpipe.a.c",
        "src/imgpipe/d.py": "stages/s.py -> imgpipe.a.b -> imgpipe.d",
    }
    stage = {"cmd": "python stages/s.py --x", "deps": ["stages/s.py", "src/imgpipe/a", "src/imgpipe/never.py"]}
    assert dep_problems("s", stage, tmp_path) == [
        "stage 's': dvc.yaml lacks src/imgpipe/d.py (imported by stages/s.py -> imgpipe.a.b -> imgpipe.d)",
        "stage 's': dvc.yaml lists src/imgpipe/never.py, which stages/s.py never imports",
    ]


def test_image_readers_depend_on_annotations_not_on_image_folders():
    """train, evaluate and predict read images through annotation rows, so they depend on
    data/annotations.csv (whose md5 column changes with any image) and not on the image folders;
    split, which writes that file, depends on the manifest the md5s come from."""
    for name in IMAGE_READERS:
        deps = [str(d).rstrip("/") for d in STAGES[name]["deps"]]
        assert "data/annotations.csv" in deps, name
        assert not [d for d in deps if d.startswith(("data/augmented", "data/raw"))], (name, deps)
    assert "data/augmented/manifest.csv" in STAGES["split"]["deps"]


def test_annotations_carry_each_images_md5(prepared_shapes):
    """After download -> augment -> split, every annotation row's md5 is the md5 of the bytes at
    its file/offset/size, for originals (in raw) and for copies (in the shards)."""
    raw, augmented = prepared_shapes / "data/raw", prepared_shapes / "data/augmented"
    rows = pd.read_csv(prepared_shapes / "data/annotations.csv", dtype=str, keep_default_na=False)
    images = members(rows, augmented)
    assert [hashlib.md5(m.read_bytes()).hexdigest() for m in images] == list(rows["md5"])
    in_raw = [m.file.resolve().is_relative_to(raw.resolve()) for m in images]
    assert in_raw == list(rows["transform"] == "original")
    assert any(in_raw) and not all(in_raw)  # originals in raw, copies in the shards
    assert all(m.name and m.file.suffix == ".tar" for m, r in zip(images, in_raw, strict=True) if not r)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_command_paths_are_the_scripts_defaults(name):
    """dvc.yaml passes each stage the paths its script defaults to (`imgpipe.core.layout`), so a
    stage run by hand, `imgpipe train` and bench/ read and write where DVC does."""
    words = shlex.split(STAGES[name]["cmd"])
    given = {words[i][2:]: words[i + 1] for i in range(len(words) - 1) if words[i].startswith("--")}
    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO / "stages" / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    defaults = {p.name.replace("_", "-"): p.default for p in inspect.signature(script.main).parameters.values()}
    paths = {option: str(value) for option, value in defaults.items() if isinstance(value, Path)}
    assert paths, f"stages/{name}.py has no path options"
    assert {o: given.get(o) for o in paths} == paths
