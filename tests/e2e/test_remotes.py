"""A team shares one DVC remote: the real `dvc` and `git` CLIs between "machines" (clones, each
with its own cache), through a shared-folder remote and an S3 API server on loopback (moto).

Machine A is a copy of the session's `committed_run` (the pipeline run once on a tiny dataset, and
committed); it pushes to a bare git repository that stands in for the hosting service.
Interrupted transfers and failed pushes are in tests/e2e/test_remotes_faults.py (another file, so
`make test` runs the two on two processes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support.project import copy_project, dvc_json, run, stage_in_process
from support.remotes import REVIEWER_PULL, S3, assert_up_to_date, tree_md5


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
