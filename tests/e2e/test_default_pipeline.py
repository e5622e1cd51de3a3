"""The default pipeline (built-in digits, default params) reaches the accuracy README promises."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.project import REPO, run

STAGES = ("download", "augment", "split", "train", "evaluate", "export", "predict")


@pytest.mark.slow
def test_default_params_reach_098_test_accuracy_on_digits(tmp_path: Path):
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    for stage in STAGES:
        run(["python", str(REPO / "stages" / f"{stage}.py")], tmp_path)
    metrics = json.loads((tmp_path / "metrics/evaluate/metrics.json").read_text())
    assert metrics["test_images"] == 179
    assert metrics["accuracy"] >= 0.98, metrics
    split = json.loads((tmp_path / "metrics/split/split.json").read_text())
    assert split["images"] == {"train": 5752, "val": 180, "test": 179} and split["classes"] == 10, split
    assert split["duplicate_sets_across_splits"] == 0, split
