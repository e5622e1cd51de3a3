"""What a review reads: two revisions of the project, their committed results, DVC's own diffs
of params, metrics and plots, and whether the head's results match its params and code."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from imgpipe.core.errors import UserError
from imgpipe.review.defaults import WORKSPACE


@dataclass(frozen=True)
class Revision:
    name: str  # as the user gave it: main, origin/main, workspace
    sha: str  # the commit (the workspace: HEAD's)

    @property
    def workspace(self) -> bool:
        return self.name == WORKSPACE

    def describe(self) -> str:
        return f"workspace (on {self.sha[:8]})" if self.workspace else f"`{self.name}` ({self.sha[:8]})"


def find_repo(start: Path) -> Path:
    """The top of the git repository holding `start`."""
    found = _run(["git", "rev-parse", "--show-toplevel"], Path(start))
    if found.returncode != 0:
        raise UserError(f"{Path(start).resolve()} is not inside a git repository; run imgpipe review in the project")
    return Path(found.stdout.strip())


def resolve(repo: Path, rev: str, option: str) -> Revision:
    """A commit, branch or tag (or `workspace`); a one-line error naming `option` otherwise.

    Like DVC, a branch only a remote has (`main` in a fresh clone of a pull-request branch) is
    that remote's branch (`origin/main`) when exactly one remote has it.
    """
    if rev == WORKSPACE:
        return Revision(WORKSPACE, _commit(repo, "HEAD") or "")
    sha = _commit(repo, rev)
    if sha is None:
        remotes = _run(["git", "for-each-ref", "--format=%(refname)", f"refs/remotes/*/{rev}"], repo).stdout.split()
        sha = _commit(repo, remotes[0]) if len(remotes) == 1 else None
    if sha is None:
        raise UserError(
            f"{option} {rev!r} is not a commit, branch or tag of this repository; "
            "fetch it first (git fetch origin main) or pass a SHA"
        )
    return Revision(rev, sha)


def _commit(repo: Path, rev: str) -> str | None:
    found = _run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], repo)
    return found.stdout.strip() if found.returncode == 0 else None


def read_text(repo: Path, revision: Revision, path: str) -> str | None:
    """A file as committed at `revision` (the workspace: as on disk); None when absent."""
    if revision.workspace:
        file = repo / path
        return file.read_text() if file.is_file() else None
    shown = _run(["git", "show", f"{revision.sha}:{path}"], repo)
    return shown.stdout if shown.returncode == 0 else None


def declared_outputs(repo: Path, revision: Revision) -> dict[str, bool]:
    """Every output the revision's dvc.yaml declares (outs, metrics, plots), in pipeline order,
    -> whether DVC caches it (else git holds it: `cache: false`)."""
    text = read_text(repo, revision, "dvc.yaml")
    where = f"dvc.yaml at {revision.describe()}"
    stages = _mapping(_load_yaml(text or "", where), where).get("stages") or {}
    outputs = {}
    for name, stage in _mapping(stages, where).items():
        for kind in ("outs", "metrics", "plots"):
            entries = _mapping(stage, f"{where}, stage {name}").get(kind) or []
            if not isinstance(entries, list):
                raise UserError(f"{where}: stage {name}'s {kind} is not a list; fix it (dvc.yaml reference)")
            for entry in entries:
                path, options = next(iter(entry.items())) if isinstance(entry, dict) and entry else (entry, None)
                outputs[str(path)] = (options or {}).get("cache", True) if isinstance(options, dict) else True
    return outputs


def _load_yaml(text: str, where: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(f"{where} is not valid YAML ({str(err).splitlines()[0]}); fix it") from None


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where} is not a DVC pipeline file (expected a mapping, found a {type(value).__name__}); fix it")
    return value


def params_diff(repo: Path, base: Revision, head: Revision) -> dict[str, tuple]:
    """`dvc params diff`: param -> (base value, head value), changed params only."""
    found = dvc_json(repo, "params", "diff", *_revs(base, head))
    return {key: (d.get("old"), d.get("new")) for changes in found.values() for key, d in changes.items()}


def metrics_diff(repo: Path, base: Revision, head: Revision) -> dict[str, dict[str, tuple]]:
    """`dvc metrics diff --all`: file -> metric -> (base value, head value), every metric."""
    found = dvc_json(repo, "metrics", "diff", "--all", *_revs(base, head))
    return {path: {key: (d.get("old"), d.get("new")) for key, d in metrics.items()} for path, metrics in found.items()}


def plots_diff(repo: Path, base: Revision, head: Revision) -> dict:
    """`dvc plots diff --json`: the top-level plots of dvc.yaml as filled Vega-Lite specs."""
    return dvc_json(repo, "plots", "diff", *_revs(base, head)).get("data", {})


def _revs(base: Revision, head: Revision) -> list[str]:
    """DVC's diffs take revisions by the user's names (and label plots with them); the
    workspace is their default head."""
    return [base.name] if head.workspace else [base.name, head.name]


def stale_stages(repo: Path, head: Revision, outputs: dict[str, bool]) -> dict[str, list[str]]:
    """Stages whose committed results do not match the params, code and inputs committed with
    them at `head` (whose `declared_outputs` are `outputs`): stage -> what changed.

    Judged by `dvc status` and by dvc.lock itself. A clone without the DVC cache lacks data,
    models and predictions, which `dvc status` lists as deleted or not in cache; that says
    nothing about the results in git and is left out. What counts: a changed param, source file
    or command; a git-tracked result edited or missing; an input made by another stage that is
    present and differs (after `dvc pull`, or in the workspace that ran). dvc.lock alone, with
    no data, shows a stage that ran on a file another stage has since rewritten (a train rerun
    without evaluate); inputs inside another stage's output folder (split's
    data/augmented/manifest.csv) can be checked only with the data present.
    """
    with _checkout(repo, head) as tree:
        status = dvc_json(tree, "status")
        lock = _mapping(_load_yaml((tree / "dvc.lock").read_text(), "dvc.lock"), "dvc.lock") if (tree / "dvc.lock").is_file() else {}
    stale: dict[str, list[str]] = {}
    for stage, entries in status.items():
        for entry in entries if isinstance(entries, list) else [entries]:
            stale.setdefault(stage, []).extend(_status_changes(entry, outputs))
    for stage, changes in lock_mismatches(lock).items():
        stale.setdefault(stage, []).extend(changes)
    return {stage: changes for stage, changes in stale.items() if changes}


def _status_changes(entry, outputs: dict[str, bool]) -> list[str]:
    """What one `dvc status` entry says about the committed results (see `stale_stages`)."""
    if not isinstance(entry, dict):  # "changed checksum", "always changed"
        return [str(entry)]
    changes = []
    for path, state in entry.get("changed deps", {}).items():
        if isinstance(state, dict):  # a params file: section or key -> state
            changes += [f"{path}: {key} {how}" for key, how in state.items()]
        elif not _inside_any(path, outputs):  # a source file
            changes.append(f"{path} {state}")
        elif state == "modified":  # data that is present and is not what the stage ran on
            changes.append(f"{path} modified (or the workspace holds another revision's data: dvc checkout)")
    for path, state in entry.get("changed outs", {}).items():
        if outputs.get(path) is False:  # `cache: false`: a result in git
            changes.append(f"{path} {state}")
    if "changed command" in entry:
        changes.append("command changed")
    return changes


def _inside_any(path: str, outputs: dict[str, bool]) -> bool:
    """`path` is a declared output, or inside one (a folder)."""
    return any(path == out or path.startswith(out.rstrip("/") + "/") for out in outputs)


def lock_mismatches(lock: dict) -> dict[str, list[str]]:
    """Stages that ran on another stage's output as it no longer is, per dvc.lock."""
    stages = lock.get("stages") or {}
    written = {out["path"]: (name, out.get("md5")) for name, stage in stages.items() for out in stage.get("outs", [])}
    found: dict[str, list[str]] = {}
    for name, stage in stages.items():
        for dep in stage.get("deps", []):
            producer, md5 = written.get(dep["path"], (None, None))
            if producer is not None and dep.get("md5") != md5:
                found.setdefault(name, []).append(f"ran on a {dep['path']} that {producer} has since rewritten")
    return found


def uncommitted_results(repo: Path, outputs: dict[str, bool]) -> list[str]:
    """Results (dvc.lock and the `cache: false` ones of the workspace's `declared_outputs`) and
    params.yaml changed in the workspace but not committed."""
    results = [path for path, cached in outputs.items() if not cached]
    found = _run(["git", "status", "--porcelain", "--untracked-files=all", "--", "dvc.lock", "params.yaml", *results], repo)
    return [line[3:] for line in found.stdout.splitlines()]


@contextlib.contextmanager
def _checkout(repo: Path, revision: Revision) -> Iterator[Path]:
    """The revision's files: the workspace itself, or a temporary git worktree of the commit."""
    if revision.workspace:
        yield repo
        return
    with tempfile.TemporaryDirectory(prefix="imgpipe-review-") as tmp:
        tree = Path(tmp) / "tree"
        _git(["worktree", "add", "--detach", "--quiet", str(tree), revision.sha], repo)
        try:
            yield tree
        finally:
            if _run(["git", "worktree", "remove", "--force", str(tree)], repo).returncode != 0:
                _run(["git", "worktree", "prune"], repo)


def dvc_json(repo: Path, *args: str) -> dict:
    """Run a DVC command with `--json` (the DVC installed beside this Python) and parse its output."""
    done = _run([sys.executable, "-m", "dvc", *args, "--json"], repo)
    with contextlib.suppress(json.JSONDecodeError):
        if done.returncode == 0:
            return json.loads(done.stdout)
    raise UserError(f"dvc {' '.join(args)} failed: {_reason(done)}")


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    done = _run(["git", *args], cwd)
    if done.returncode != 0:
        raise UserError(f"git {args[0]} failed: {_reason(done)}")
    return done


def _reason(done: subprocess.CompletedProcess) -> str:
    """The line of a failed command's output that says why: DVC's `ERROR:` line, else the first."""
    lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    found = next((line for line in lines if line.startswith(("ERROR", "fatal:"))), lines[0] if lines else f"exit {done.returncode}")
    return found.removeprefix("ERROR: ")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError(f"{args[0]} not found; install it (imgpipe review runs git and dvc)") from None
