"""A team shares one DVC remote: the real `dvc` and `git` CLIs between "machines" (clones, each
with its own cache), through a shared-folder remote and an S3 API server on loopback (moto).

Machine A is a copy of the session's `committed_run` (the pipeline run once on a tiny dataset, and
committed); it pushes to a bare git repository that stands in for the hosting service.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers import command_env, copy_project, dvc_json, make_project, run, stage_in_process, tiny_overrides
from remotes import REVIEWER_PULL, S3, credentials_checked


@dataclass(frozen=True)
class Team:
    origin: Path  # bare git repository: the hosting service
    a: Path  # machine A: ran the pipeline, holds every output in its cache
    source: Path


@pytest.fixture(scope="module")
def team(tmp_path_factory, committed_run) -> Team:
    """Machine A: a copy of the session's committed run, pushed to a new bare origin."""
    root = tmp_path_factory.mktemp("team")
    a = copy_project(committed_run.repo, root / "a")
    run(["git", "branch", "-M", "main"], a)
    origin = root / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], root)
    run(["git", "remote", "add", "origin", str(origin)], a)
    run(["git", "push", "-q", "-u", "origin", "main"], a)
    return Team(origin, a, committed_run.source)


def clone(team: Team, dest: Path) -> Path:
    run(["git", "clone", "-q", str(team.origin), str(dest)], dest.parent)
    return dest


def assert_up_to_date(repo: Path) -> None:
    """`dvc status` clean and `dvc repro` runs no stage: nothing is recomputed after a pull."""
    assert dvc_json(repo, "status") == {}
    out = run(["dvc", "repro"], repo).stdout
    assert "Running stage" not in out, out


def tree_md5(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_a_shared_folder_remote_carries_data_and_models(team: Team, tmp_path: Path):
    remote = tmp_path / "shared-folder"
    run(["dvc", "remote", "add", "--local", "-f", "shared", str(remote)], team.a)
    run(["dvc", "push", "-r", "shared"], team.a)

    b = clone(team, tmp_path / "b")
    run(["dvc", "remote", "add", "--local", "-d", "shared", str(remote)], b)
    run(["dvc", "pull"], b)
    assert_up_to_date(b)
    for out in ("data/raw", "data/augmented", "data/annotations.csv", "models/model.pt", "predictions/predictions.tsv"):
        assert tree_md5(b / out) == tree_md5(team.a / out) if (b / out).is_dir() else \
            (b / out).read_bytes() == (team.a / out).read_bytes(), out


def test_s3_round_trip_between_two_machines(team: Team, s3: S3, tmp_path: Path):
    bucket = s3.new_bucket()
    s3.add_remote(team.a, bucket, local=True)
    run(["dvc", "push"], team.a)
    assert dvc_json(team.a, "status", "-c") == {}  # cloud status: everything is on the remote
    pushed = s3.objects(bucket)
    assert any(key.endswith(".dir") for key in pushed) and len(pushed) > 5

    # Machine B: a fresh clone with its own empty cache pulls, and nothing reruns.
    b = clone(team, tmp_path / "b")
    s3.add_remote(b, bucket, local=True)
    run(["dvc", "pull"], b)
    assert_up_to_date(b)
    # The model and the data behind it came through whole: predict gives the same bytes.
    predicted = stage_in_process("predict", "--out", str(tmp_path / "again.tsv"), cwd=b, check=True)
    assert "predict:" in predicted.stdout
    assert (tmp_path / "again.tsv").read_bytes() == (team.a / "predictions/predictions.tsv").read_bytes()

    # B changes one param, reruns, pushes data and git; A pulls both and has B's results.
    params = yaml.safe_load((b / "params.yaml").read_text())
    params["train"]["epochs"] = 3
    (b / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = run(["dvc", "repro"], b).stdout
    assert "Running stage 'train'" in ran and "Running stage 'augment'" not in ran
    run(["git", "commit", "-qam", "train 3 epochs"], b)
    run(["dvc", "push"], b)
    run(["git", "push", "-q", "origin", "main"], b)

    run(["git", "pull", "-q", "--ff-only", "origin", "main"], team.a)
    run(["dvc", "pull"], team.a)
    assert_up_to_date(team.a)
    assert (team.a / "models/model.pt").read_bytes() == (b / "models/model.pt").read_bytes()
    assert dvc_json(team.a, "metrics", "show") == dvc_json(b, "metrics", "show")
    assert yaml.safe_load((team.a / "params.yaml").read_text())["train"]["epochs"] == 3


def test_reviewer_pulls_the_model_and_predictions_not_the_images(team: Team, s3: S3, tmp_path: Path):
    bucket = s3.new_bucket()
    s3.add_remote(team.a, bucket, local=True)
    run(["dvc", "push"], team.a)
    reviewer = clone(team, tmp_path / "reviewer")
    s3.add_remote(reviewer, bucket, local=True)
    run(["dvc", *REVIEWER_PULL], reviewer)
    assert (reviewer / "models/model.pt").read_bytes() == (team.a / "models/model.pt").read_bytes()
    assert (reviewer / "predictions/predictions.tsv").is_file()
    assert not (reviewer / "data").exists()
    files = [p for p in (reviewer / ".dvc/cache").rglob("*") if p.is_file()]
    assert len(files) == 2, files  # the two objects and nothing else came down


def test_an_experiment_moves_between_machines(team: Team, s3: S3, tmp_path: Path):
    bucket = s3.new_bucket()
    s3.add_remote(team.a, bucket, local=True)
    run(["dvc", "push"], team.a)  # the baseline's data, as a teammate would have pushed it
    start = time.perf_counter()
    run(["dvc", "exp", "run", "-n", "mlp-try", "-S", "model=mlp"], team.a)
    run(["dvc", "exp", "push", "origin", "mlp-try"], team.a)  # git refs to origin, outputs to S3
    model = (team.a / "models/model.pt").read_bytes()
    predictions = (team.a / "predictions/predictions.tsv").read_bytes()

    b = clone(team, tmp_path / "b")
    s3.add_remote(b, bucket, local=True)
    run(["dvc", "exp", "pull", "origin", "mlp-try"], b)
    shown = dvc_json(b, "exp", "show")
    exps = [e for row in shown for e in row.get("experiments") or []]
    (exp,) = [e for e in exps if e.get("name") == "mlp-try"]
    data = exp["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["model"] == "mlp"
    assert "accuracy" in data["metrics"]["metrics/evaluate/metrics.json"]["data"]

    run(["dvc", "exp", "apply", "mlp-try"], b)
    run(["dvc", "pull"], b)
    assert_up_to_date(b)  # the experiment's model is back and nothing retrains
    assert (b / "models/model.pt").read_bytes() == model
    stage_in_process("predict", "--out", str(tmp_path / "again.tsv"), cwd=b, check=True)
    assert (tmp_path / "again.tsv").read_bytes() == predictions
    print(f"experiment round trip: {time.perf_counter() - start:.1f} s")


# --- faults: interrupted transfers -------------------------------------------------------------


@pytest.fixture(scope="module")
def data_stages_ran(tmp_path_factory) -> Path:
    """A project whose data stages (download, augment) made a few hundred files, committed. Read only."""
    from conftest import write_shapes_dataset

    root = tmp_path_factory.mktemp("many-files")
    source = write_shapes_dataset(root / "shapes", per_class=100, size=16)
    repo = make_project(root / "a", tiny_overrides(source))
    run(["dvc", "repro", "augment"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "data"], repo)
    return repo


@pytest.fixture
def many_files(data_stages_ran: Path, tmp_path: Path) -> Path:
    """A private copy of `data_stages_ran` for a test that pushes, pulls and configures it."""
    return copy_project(data_stages_ran, tmp_path / "a")


def kill_when(args: list[str], cwd: Path, started, timeout: float = 60) -> bool:
    """Run `args`, SIGKILL it (and its children) once `started()` is true; False when it ended first."""
    proc = subprocess.Popen(args, cwd=cwd, env=command_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if started():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.wait()
    return False


def test_an_interrupted_push_then_pull_complete_when_run_again(many_files: Path, s3: S3, tmp_path: Path):
    bucket = s3.new_bucket()
    s3.add_remote(many_files, bucket, local=True)
    expected = len(list((many_files / "data/raw").rglob("*.png")))
    assert kill_when(["dvc", "push", "-j", "1"], many_files, lambda: len(s3.objects(bucket)) > 10)
    assert 0 < len(s3.objects(bucket)) < expected  # killed halfway
    run(["dvc", "push"], many_files)
    assert dvc_json(many_files, "status", "-c") == {}

    b = tmp_path / "b"
    run(["git", "clone", "-q", str(many_files), str(b)], tmp_path)
    s3.add_remote(b, bucket, local=True)
    cache = b / ".dvc/cache/files"
    data_stages = ["download", "augment"]  # the only stages this project ran
    assert kill_when(["dvc", "pull", "-j", "1", *data_stages], b,
                     lambda: cache.exists() and sum(1 for _ in cache.rglob("*")) > 40)
    assert not (b / "data/raw").exists() or len(tree_md5(b / "data/raw")) < expected  # killed halfway
    run(["dvc", "pull", *data_stages], b)
    for out in ("data/raw", "data/augmented"):
        assert tree_md5(b / out) == tree_md5(many_files / out), out
    assert dvc_json(b, "status", *data_stages) == {}


def test_push_failures_are_dvc_one_liners_and_lose_nothing(many_files: Path, s3: S3, tmp_path: Path):
    before = {out: tree_md5(many_files / out) for out in ("data", ".dvc/cache")}

    def push_fails(*message: str, env: dict | None = None) -> None:
        result = subprocess.run(["dvc", "push"], cwd=many_files, env={**command_env(), **(env or {})},
                                capture_output=True, text=True, timeout=120)
        assert result.returncode != 0
        assert all(m in result.stderr for m in message), result.stderr
        assert "Traceback" not in result.stderr

    push_fails("no remote specified", "dvc remote add -d <remote name> <remote url>")  # README: Troubleshooting
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # a port nothing listens on: connections are refused
    port = closed.getsockname()[1]
    s3.add_remote(many_files, "bucket-x", name="refused", local=True)
    run(["dvc", "remote", "modify", "--local", "refused", "endpointurl", f"http://127.0.0.1:{port}"], many_files)
    push_fails("Could not connect to the endpoint URL", env={"AWS_MAX_ATTEMPTS": "1"})
    closed.close()
    s3.add_remote(many_files, s3.new_bucket(), local=True)
    with credentials_checked(s3):
        push_fails("Forbidden: An error occurred (403)")
    assert {out: tree_md5(many_files / out) for out in before} == before  # nothing local changed
    run(["dvc", "push"], many_files)  # with the credentials accepted again, the same push goes through
