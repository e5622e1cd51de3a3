"""Helpers for tests (and benches) that run the real stage scripts and the real `dvc` CLI."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from imgpipe.core.params import AugmentParams, ImageParams, SplitParams, TrainParams
from imgpipe.data.augment import augment_dataset
from imgpipe.data.sources import download
from imgpipe.data.split import write_split

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv running pytest: python, dvc


def command_env() -> dict[str, str]:
    """The environment of every command a test runs: the test venv first on PATH (stage commands
    call `python`), a git identity, no DVC analytics."""
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
        "DVC_NO_ANALYTICS": "1",
    }


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command in the tests' environment (`command_env`)."""
    result = subprocess.run(args, cwd=cwd, env=command_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (a server a test starts takes it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dvc_json(cwd: Path, *args: str):
    """`dvc <args> --json`, parsed."""
    return json.loads(run(["dvc", *args, "--json"], cwd).stdout)


def make_project(dest: Path, overrides: dict) -> Path:
    """A copy of the pipeline (dvc.yaml, stages, params) in a fresh git + DVC repo."""
    dest.mkdir(parents=True)
    for name in ("dvc.yaml", ".dvcignore", ".gitignore", "stages", "src", ".dvc"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("tmp", "cache", "__pycache__", "config.local"))
        else:
            shutil.copy2(src, dest / name)
    write_params(dest / "params.yaml", overrides)
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "pipeline"], dest)
    return dest


def write_params(path: Path, overrides: dict) -> None:
    """The repo's params.yaml with nested `overrides` merged in."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in overrides.items():
        if isinstance(value, dict):
            params[key] = {**params.get(key, {}), **value}
        else:
            params[key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def tiny_overrides(source: Path) -> dict:
    """Params for a run of a few seconds on a tiny dataset."""
    return {
        "data": {"source": str(source)},
        "augment": {"rotations": [10], "shear": 10},
        "split": {"train": 0.6, "val": 0.2, "test": 0.2},
        "image": {"size": 28},
        "train": {"epochs": 2, "batch_size": 16, "log_every": 1},
    }


def stage(name: str, *args: str, cwd: Path, check: bool = False) -> subprocess.CompletedProcess:
    """Run `stages/<name>.py` by hand in `cwd`, as a user would: a new interpreter, seconds where the
    stage imports torch. For what only a process shows: exit status, signals, a real stderr."""
    return run(["python", str(REPO / "stages" / f"{name}.py"), *args], cwd, check=check)


@functools.cache
def stage_app(name: str):
    """The Typer app of `stages/<name>.py`, loaded once (the scripts are not package modules)."""
    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def stage_in_process(name: str, *args: str, cwd: Path, check: bool = False) -> subprocess.CompletedProcess:
    """`stage`, inside this process: the same command, options, outputs and `error:` line, in
    milliseconds instead of seconds."""
    return in_process(stage_app(name), list(args), cwd, check, f"stages/{name}.py")


def imgpipe(cwd: Path, *args, check: bool = True) -> subprocess.CompletedProcess:
    """The `imgpipe` command in `cwd`, inside this process (`in_process`)."""
    from imgpipe.console import app

    return in_process(app, [str(a) for a in args], cwd, check, "imgpipe")


def shapes_source(run: Path) -> Path:
    """The folder a run in `run` was trained from: its params.yaml's data.source."""
    return Path(yaml.safe_load((run / "params.yaml").read_text())["data"]["source"])


def in_process(app, args: list[str], cwd: Path, check: bool = False, program: str = "") -> subprocess.CompletedProcess:
    """Invoke the Typer `app` with `args` in `cwd`, inside this process; stdout, stderr and the exit
    status come back as from `run`. An exception the command does not turn into an `error:` line is
    raised here, and fails the test as its traceback would fail the user."""
    handler = signal.getsignal(signal.SIGTERM)  # the command installs its own; pytest keeps pytest's
    try:
        with contextlib.chdir(cwd):
            result = CliRunner().invoke(app, args, catch_exceptions=False)
    finally:
        signal.signal(signal.SIGTERM, handler)
    done = subprocess.CompletedProcess([program, *args], result.exit_code, result.stdout, result.stderr)
    if check and done.returncode != 0:
        raise AssertionError(f"{program} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


DATA_STAGES = ("download", "augment", "split")


def prepare(work: Path, overrides: dict, stages: tuple[str, ...] = DATA_STAGES) -> Path:
    """A working folder as `stages` leave it: params.yaml (the repo's, `overrides` merged in), then
    each stage run in it, in this process, with its default paths (data/raw, data/augmented, ...)."""
    work.mkdir(parents=True, exist_ok=True)
    write_params(work / "params.yaml", overrides)
    return run_stages(work, stages)


def run_stages(work: Path, stages: tuple[str, ...]) -> Path:
    """Run `stages` in order in `work` (in this process), each with its default paths."""
    for name in stages:
        stage_in_process(name, cwd=work, check=True)
    return work


def copy_prepared(prepared: Path, dest: Path) -> Path:
    """A private copy of a shared prepared folder, for a test that changes it (mtimes kept, so no
    output looks newer than its inputs)."""
    return Path(shutil.copytree(prepared, dest))


def copy_project(repo: Path, dest: Path) -> Path:
    """A private copy of a git + DVC project, its outputs still hard links into the copy's own
    cache (`cp -a` keeps the links among what it copies; shutil.copytree would not)."""
    run(["cp", "-a", str(repo), str(dest)], dest.parent)
    return dest


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Size and mtime of every file under `folder`: enough to see that a test wrote into it."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """The command failed with exactly one `error: ...` line holding `fragments`, and no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


PIPELINE_STAGES = ("download", "augment", "split", "train", "evaluate", "export", "predict")


def ran(output: str) -> set[str]:
    """The stages `dvc repro`/`dvc exp run` output says it ran."""
    return {s for s in PIPELINE_STAGES if f"Running stage '{s}'" in output}


def queue_status(repo: Path) -> dict[str, str]:
    """Task -> status of each task in `dvc queue status` (which has no --json)."""
    lines = run(["dvc", "queue", "status"], repo).stdout.splitlines()
    rows = [line.split() for line in lines[1:] if line.strip() and not line.startswith("Worker status")]
    return {row[0]: row[-1] for row in rows if len(row) >= 3}


# The library's data stages on a folder, in this process, for the tests that train tiny models
# through the library (multi-label stages, the console's inference).
TINY = TrainParams(epochs=2, batch_size=8, lr=0.01, log_every=1)
IMAGE = ImageParams(size=28, channels=1, normalize=True)


def prepare_folders(root: Path, source: str, limit: int | None = None, rotations=(10.0,)) -> Path:
    """root/raw, root/augmented, root/annotations.csv from `source`, through the library."""
    download(source, root / "raw", limit=limit)
    augment_dataset(root / "raw", root / "augmented", AugmentParams(rotations=rotations, shear=0.0), seed=0)
    write_split(root / "augmented", root / "annotations.csv", root / "split", SplitParams(0.6, 0.2, 0.2), seed=0)
    return root
