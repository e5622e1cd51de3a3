"""End to end: the real `dvc` CLI runs the six stages in a temporary git repo on tiny data.
(Queued experiments, the longest check, are in tests/e2e/test_pipeline_queue.py, so `make test` runs
the two files on two processes.)"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from support.project import PIPELINE_STAGES, copy_project, ran, run, stage_in_process

from imgpipe.task.outcomes import loads


def cache_object(repo: Path, md5: str) -> Path:
    return repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]


def cached_files(repo: Path, out: str) -> list[tuple[Path, Path]]:
    """(workspace file, its cache object) for every file of directory output `out`, per dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    md5 = next(o["md5"] for s in lock["stages"].values() for o in s.get("outs", []) if o["path"] == out)
    entries = json.loads(cache_object(repo, md5).read_text())
    return [(repo / out / e["relpath"], cache_object(repo, e["md5"])) for e in entries]


def assert_linked_to_cache(repo: Path, out: str) -> None:
    """Every file of `out` is its cache object (same inode, read-only): no second copy."""
    files = cached_files(repo, out)
    assert len(files) >= 2  # data/augmented: manifest.csv and one shard
    copies = [str(w) for w, c in files if not os.path.samefile(w, c)]
    assert not copies, f"{len(copies)} of {len(files)} files in {out} are copies of the cache, e.g. {copies[:3]}"
    assert not [w for w, _ in files if os.stat(w).st_mode & 0o222], f"{out}: writable links into the cache"


def assert_cache_intact(objects: list[Path]) -> None:
    """Each cache object still holds the bytes its name (md5) says."""
    for obj in objects:
        assert hashlib.md5(obj.read_bytes()).hexdigest() == obj.parent.name + obj.name, obj


@pytest.fixture(scope="module")
def project(tmp_path_factory, committed_run) -> Path:
    """This module's copy of the session's first `dvc repro`, committed (the tests below change it)."""
    return copy_project(committed_run.repo, tmp_path_factory.mktemp("e2e") / "repo")


def test_repro_from_clean_writes_every_output(project: Path, committed_run):
    assert ran(committed_run.repro_output) == set(PIPELINE_STAGES), committed_run.repro_output
    metrics = json.loads((project / "metrics/evaluate/metrics.json").read_text())
    assert set(metrics) >= {"accuracy", "precision_macro", "recall_macro", "f1_macro"}
    assert 0.0 <= metrics["accuracy"] <= 1.0
    outcomes = loads((project / "metrics/evaluate/outcomes.json").read_text())  # what imgpipe review pairs
    assert len(outcomes) == metrics["test_images"] and outcomes.classes == ["circle", "cross", "square"]
    assert outcomes.correct().mean() == pytest.approx(metrics["accuracy"])

    predictions = pd.read_csv(project / "predictions/predictions.tsv", sep="\t", dtype=str)
    annotations = pd.read_csv(project / "data/annotations.csv", dtype=str)
    assert len(predictions) == (annotations["split"] == "test").sum()
    assert set(predictions["label"]) <= {"circle", "cross", "square"}  # names, never indices
    assert predictions["probability"].astype(float).between(0, 1).all()

    checkpoint = torch.load(project / "models/model.pt", weights_only=True)
    assert checkpoint["classes"] == ["circle", "cross", "square"]
    assert checkpoint["model"] == "cnn" and checkpoint["image_size"] == 28

    train_metrics = json.loads((project / "metrics/train/metrics.json").read_text())
    assert train_metrics["epoch"] == 2
    assert set(train_metrics["val"]) == {"loss", "accuracy", "f1_macro"}
    assert (project / "metrics/train/plots/metrics/train/batch_loss.tsv").is_file()
    # Data, models and predictions belong to DVC; the small results are committed to git.
    tracked = run(["git", "ls-files"], project).stdout.split()
    assert not [f for f in tracked if f.startswith(("data/", "models/", "predictions/"))]
    results = {f for f in tracked if f.startswith("metrics/")}
    assert {"metrics/evaluate/metrics.json", "metrics/evaluate/outcomes.json", "metrics/train/metrics.json",
            "metrics/train/plots/metrics/val/accuracy.tsv", "metrics/split/split.json"} <= results
    linked = [f for f in results if os.stat(project / f).st_nlink > 1]
    assert not linked, f"results linked into the DVC cache: {linked}"


def test_second_repro_runs_nothing(project: Path):
    second = run(["dvc", "repro"], project)
    assert ran(second.stdout) == set(), second.stdout
    assert run(["dvc", "status"], project).stdout.strip() == "Data and pipelines are up to date."


def test_outputs_are_hard_links_into_the_cache(project: Path, committed_run):
    # .dvc/config's cache.type: the cache holds the only copy of data/raw and data/augmented.
    assert_linked_to_cache(project, "data/raw")
    assert_linked_to_cache(project, "data/augmented")
    # The download stage copied the user's images: theirs are never linked, nor made read-only.
    for image in committed_run.source.rglob("*.png"):
        st = image.stat()
        assert st.st_nlink == 1 and st.st_mode & 0o200, image


def test_rerun_over_read_only_linked_outputs(project: Path):
    old_objects = [c for _, c in cached_files(project, "data/augmented")]
    # By hand, the stage moves the read-only links aside and deletes them (imgpipe.core.atomic).
    stage_in_process("augment", cwd=project, check=True)
    assert_cache_intact(old_objects)
    assert run(["dvc", "status"], project).stdout.strip() == "Data and pipelines are up to date."
    # Through DVC after a param change: new outputs are linked too, old cache objects untouched.
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["augment"]["shear"] = 5
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    rerun = run(["dvc", "repro", "augment"], project)
    assert ran(rerun.stdout) == {"augment"}, rerun.stdout
    assert_linked_to_cache(project, "data/augmented")
    assert_cache_intact(old_objects)
    # Back to the committed run, for the tests below: checked out from the cache as links again.
    run(["git", "checkout", "--", "params.yaml", "dvc.lock", "metrics/augment"], project)
    run(["dvc", "checkout"], project)
    assert_linked_to_cache(project, "data/augmented")
    assert run(["dvc", "status"], project).stdout.strip() == "Data and pipelines are up to date."


def test_plots_render_confusion_matrix_with_class_names(project: Path):
    import vl_convert

    shown = json.loads(run(["dvc", "plots", "show", "--json"], project).stdout)
    confusion = json.dumps(shown["data"]["Confusion matrix (test)"])
    for name in ("circle", "cross", "square"):
        assert f'"actual": "{name}"' in confusion
    assert "Images per class and split" in shown["data"]
    # confusion.json skips zero cells off the diagonal; the template imputes them: 3 x 3 drawn.
    spec = shown["data"]["Confusion matrix (test)"][0]["content"]
    cells = [mark for mark in walk(vl_convert.vegalite_to_scenegraph(spec)) if mark.get("name") == "child_layer_0_marks"]
    assert [len(mark["items"]) for mark in cells] == [9]


def walk(node):
    """Every dict in a nested structure (a Vega scenegraph)."""
    if isinstance(node, dict):
        yield node
        node = list(node.values())
    if isinstance(node, list):
        for child in node:
            yield from walk(child)


