"""What the bench scripts share: commands in a clean environment, a git + DVC copy of this repo's
pipeline, params.yaml with overrides, and a folder the data stages have run in.

Built on the pipeline itself (the stage scripts in stages/, run with this venv's python, each with
its default paths from `imgpipe.core.layout`), never on tests/. A bench imports it as `common`:
`python bench/<name>.py` puts bench/ first on sys.path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # this venv: python, dvc, imgpipe
PROJECT_FILES = ("dvc.yaml", ".dvcignore", ".gitignore", "stages", "src", ".dvc")  # a pipeline, as a clone has it
DATA_STAGES = ("download", "augment", "split")


def command_env() -> dict[str, str]:
    """This venv first on PATH (dvc.yaml's commands call `python`), a git identity for the
    throwaway repositories, no DVC analytics."""
    identity = {f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
                for what, value in (("NAME", "bench"), ("EMAIL", "bench@localhost"))}
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1", **identity}


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run a command in `cwd` with `command_env`; stop the bench with its output if it fails."""
    done = subprocess.run(args, cwd=cwd, env=command_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, args))} in {cwd} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def stage(name: str, work: Path) -> float:
    """Run `stages/<name>.py` in `work` as a user would by hand (its default paths, a new
    interpreter); its seconds."""
    start = time.perf_counter()
    run([sys.executable, str(REPO / "stages" / f"{name}.py")], work)
    return time.perf_counter() - start


def write_params(path: Path, overrides: dict) -> None:
    """The repo's params.yaml with `overrides` merged in, one level deep: a dict value updates that
    section (`{"train": {"epochs": 1}}`), any other value replaces the key (`{"model": "mlp"}`)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in overrides.items():
        params[key] = {**params.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def prepare(work: Path, overrides: dict) -> Path:
    """`work` as the data stages leave it: params.yaml (`write_params`), then download, augment
    and split run in it; their outputs are layout's RAW, AUGMENTED and ANNOTATIONS under `work`."""
    work.mkdir(parents=True, exist_ok=True)
    write_params(work / "params.yaml", overrides)
    for name in DATA_STAGES:
        stage(name, work)
    return work


def make_project(dest: Path, overrides: dict) -> Path:
    """A copy of this repo's pipeline (dvc.yaml, stages, src, .dvc/config) and params.yaml
    (`write_params`) in a fresh git + DVC repository, committed."""
    dest.mkdir(parents=True)
    skip = shutil.ignore_patterns("tmp", "cache", "__pycache__", "config.local")
    for name in PROJECT_FILES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, dest / name, ignore=skip)
        else:
            shutil.copy2(REPO / name, dest / name)
    write_params(dest / "params.yaml", overrides)
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "pipeline"], dest)
    return dest
