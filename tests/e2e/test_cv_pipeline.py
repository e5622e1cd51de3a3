"""End to end: cross-validation through the real `dvc` CLI. Off by default (the DAG is the seven
stages); `dvc exp run -S cv.folds=[0,1,2] -S cv.summary=[3]` adds three fold stages and the
summary, runs only those, and a rerun with nothing changed runs none."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from support.project import (
    PIPELINE_STAGES,
    assert_one_line_error,
    command_env,
    copy_project,
    dvc_json,
    imgpipe,
    queue_status,
    run,
    stage_in_process,
)

FOLDS = 3
CV_STAGES = {f"cv_fold@{f}" for f in range(FOLDS)} | {f"cv_summary@{FOLDS}"}


def stage_names(repo: Path) -> set[str]:
    return {line.split()[0] for line in run(["dvc", "stage", "list"], repo).stdout.splitlines() if line.strip()}


def ran_stages(output: str) -> set[str]:
    return {s for s in set(PIPELINE_STAGES) | CV_STAGES if f"Running stage '{s}'" in output}


@pytest.fixture(scope="module")
def project(tmp_path_factory, committed_run) -> Path:
    return copy_project(committed_run.repo, tmp_path_factory.mktemp("cv") / "repo")


def test_off_by_default_the_dag_and_lock_have_no_cv_stage(committed_run):
    assert stage_names(committed_run.repo) == set(PIPELINE_STAGES)
    lock = yaml.safe_load((committed_run.repo / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(PIPELINE_STAGES)
    assert not (committed_run.repo / "metrics/cv").exists()


def test_folds_as_stages_run_alone_then_not_at_all(project: Path):
    first = run(["dvc", "exp", "run", "-S", f"cv.folds={list(range(FOLDS))}", "-S", f"cv.summary=[{FOLDS}]"], project)
    assert ran_stages(first.stdout) == CV_STAGES, first.stdout  # the six stages were cached: nothing else reruns
    assert stage_names(project) == set(PIPELINE_STAGES) | CV_STAGES

    summary = json.loads((project / "metrics/cv/metrics.json").read_text())
    per_fold = pd.read_csv(project / "metrics/cv/folds.csv")
    assert summary["folds"] == FOLDS and list(per_fold["fold"]) == list(range(FOLDS))
    accuracy = summary["metrics"]["accuracy"]
    assert accuracy["min"] <= accuracy["mean"] <= accuracy["max"] and accuracy["std"] >= 0
    assert accuracy["mean"] == pytest.approx(per_fold["accuracy"].mean())
    issues = pd.read_csv(project / "metrics/cv/label_issues.tsv", sep="\t")
    assert list(issues.columns) == ["path", "given", "suggested", "self_confidence", "fold"]
    assert list(issues["self_confidence"]) == sorted(issues["self_confidence"])
    assert (project / "metrics/cv/plots/images").is_dir()
    held_out = sum(json.loads((project / f"cv/folds/{f}/metrics.json").read_text())["images"] for f in range(FOLDS))
    assert summary["images"] == held_out

    again = run(["dvc", "repro"], project)
    assert ran_stages(again.stdout) == set(), again.stdout
    shown = dvc_json(project, "metrics", "show")
    assert "metrics/cv/metrics.json" in json.dumps(shown)

    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "3-fold cross-validation"], project)

    # one param of the training changes: every fold (and the summary after them) is out of date
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["lr"] = 0.0005
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = set(dvc_json(project, "status"))
    assert CV_STAGES - {f"cv_summary@{FOLDS}"} <= changed and "train" in changed
    rerun = run(["dvc", "repro"], project)
    assert CV_STAGES <= ran_stages(rerun.stdout)

    # the review pairs the folds: the same images held out on both sides
    text = imgpipe(project, "review", "--base", "HEAD").stdout
    section = text.split("### Cross-validation", 1)[1].split("###", 1)[0]
    assert f"base ({FOLDS} folds)" in section and f"head ({FOLDS} folds)" in section
    assert "The same images held out fold by fold" in section and "by fold:" in section
    print(section)


def test_folds_queued_as_experiments_come_back_from_the_run_cache(tmp_path: Path, committed_run):
    """docs/cross-validation.md's parallel folds: with cv on in params.yaml, one queued experiment
    per fold stage, two workers at once; then `dvc repro` restores every fold from the run cache
    the workers filled and runs only the summary."""
    project = copy_project(committed_run.repo, tmp_path / "repo")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["cv"] = {"folds": list(range(FOLDS)), "summary": [FOLDS]}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "commit", "-qam", "cv on"], project)
    for fold in range(FOLDS):
        run(["dvc", "exp", "run", "--queue", f"cv_fold@{fold}"], project)
    # The workers outlive `dvc queue start` and hold its stdout: do not wait for that to close.
    subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=project, env=command_env(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    status, deadline = {}, time.monotonic() + 300
    while time.monotonic() < deadline:
        status = queue_status(project)
        if len(status) == FOLDS and all(s in ("Success", "Failed") for s in status.values()):
            break
        time.sleep(1)
    run(["dvc", "queue", "stop", "--kill"], project, check=False)
    logs = {task: run(["dvc", "queue", "logs", task], project, check=False).stdout for task in status}
    assert sorted(status.values()) == ["Success"] * FOLDS, logs
    assert sorted(ran_stages(log).pop() for log in logs.values()) == sorted(CV_STAGES - {f"cv_summary@{FOLDS}"}), logs

    repro = run(["dvc", "repro"], project)
    assert ran_stages(repro.stdout) == {f"cv_summary@{FOLDS}"}, repro.stdout
    for fold in range(FOLDS):
        assert f"Stage 'cv_fold@{fold}' is cached - skipping run, checking out outputs" in repro.stdout
    assert json.loads((project / "metrics/cv/metrics.json").read_text())["folds"] == FOLDS


def test_more_folds_than_a_class_has_images_is_one_error_line(tmp_path, prepared_shapes):
    work = Path(tmp_path / "work")
    run(["cp", "-a", str(prepared_shapes), str(work)], tmp_path)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["cv"] = {"folds": list(range(12)), "summary": [12]}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = stage_in_process("cv_fold", "--fold", "0", cwd=work)
    assert_one_line_error(result, "cv.folds asks for 12 folds", "class '", "group(s) of images in train+val")
    assert not (work / "cv/folds/0").exists()
    params["cv"] = {"folds": [0], "summary": [1]}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert_one_line_error(stage_in_process("cv_fold", "--fold", "0", cwd=work), "'cv.folds'", "at least two folds")
