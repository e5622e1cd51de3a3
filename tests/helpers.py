"""Helpers for tests that run the real stage scripts and the real `dvc` CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
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
    """Run `stages/<name>.py` by hand in `cwd`, as a user would."""
    return run(["python", str(REPO / "stages" / f"{name}.py"), *args], cwd, check=check)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """The command failed with exactly one `error: ...` line holding `fragments`, and no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
