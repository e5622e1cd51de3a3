"""`dvc queue`: experiments queued on the session's committed run (`committed_run`) run on two
workers at once, with the real `dvc` CLI. A file of its own, the longest end-to-end check, so
`make test` runs it beside tests/e2e/test_pipeline_dvc.py."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from support.project import command_env, copy_project, queue_status, ran, run


@pytest.fixture
def project(tmp_path: Path, committed_run) -> Path:
    """A private copy of the session's first `dvc repro`, committed (the test adds experiments)."""
    return copy_project(committed_run.repo, tmp_path / "repo")


def test_queued_model_experiments_rerun_only_model_stages_at_once_and_each_lands(project: Path):
    """`-S model=dummy,mlp` queues one experiment per model (the committed run is cnn); two workers
    run them side by side, each reruns only train, evaluate and predict (the data stages are
    unchanged), and each lands in `dvc exp show` with its model and metrics."""
    run(["dvc", "exp", "run", "--queue", "-S", "model=dummy,mlp"], project)
    # The workers outlive `dvc queue start` and hold its stdout: do not wait for that to close.
    subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=project, env=command_env(), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen, deadline = [], time.monotonic() + 300
    while time.monotonic() < deadline:
        seen.append(queue_status(project))
        if len(seen[-1]) == 2 and all(s in ("Success", "Failed") for s in seen[-1].values()):
            break
        time.sleep(1)
    run(["dvc", "queue", "stop", "--kill"], project, check=False)
    logs = {task: run(["dvc", "queue", "logs", task], project, check=False).stdout for task in seen[-1]}
    assert list(seen[-1].values()) == ["Success", "Success"], logs
    assert any(list(s.values()) == ["Running", "Running"] for s in seen), seen  # both at once
    assert all(ran(log) == {"train", "evaluate", "export", "predict"} for log in logs.values()), logs

    rows = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    models = {}
    for exp in (e for r in rows for e in (r.get("experiments") or [])):
        data = exp["revs"][0]["data"]
        model = data["params"]["params.yaml"]["data"]["model"]
        models[model] = data["metrics"]["metrics/evaluate/metrics.json"]["data"]
    assert {"dummy", "mlp"} <= set(models), models
    assert all({"accuracy", "f1_macro"} <= set(metrics) for metrics in models.values()), models
