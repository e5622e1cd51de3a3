"""The evaluate stage: test-split metrics, a per-class (per-label) table, confusion counts,
each test image's outcome (`imgpipe.task.outcomes`, for the review of a pull request) and pictures of
the test images the model got most wrong (`imgpipe.evaluate.gallery`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
from dvclive import Live

from imgpipe.core.atomic import atomic_dir, scratch_dir
from imgpipe.core.errors import UserError
from imgpipe.core.layout import OUTCOMES_FILE, RELIABILITY_FILE
from imgpipe.core.notes import say
from imgpipe.data.annotations import read_annotations
from imgpipe.evaluate.gallery import mistake_tiles
from imgpipe.feed.device import resolve_device
from imgpipe.feed.inference import predict_logits
from imgpipe.feed.tensors import load_split
from imgpipe.models.checkpoint import load_checkpoint
from imgpipe.task.calibration import Calibration
from imgpipe.task.metrics import label_confusion_counts
from imgpipe.task.outcomes import record_outcomes, write_outcomes
from imgpipe.task.tasks import Task, check_task_matches, task_from_spec, task_of


def evaluate(model_path: Path, annotations: Path, images_root: Path, out_dir: Path) -> dict:
    """Score the model on the test split; writes metrics.json, per_class.csv, confusion.json,
    label_confusion.json (a 2x2 matrix per class or label), reliability.json (the reliability
    diagram's bins, `imgpipe.task.calibration`), outcomes.json and, through dvclive,
    plots/images/mistake_<rank>.png: the worst test images as the model saw them (`imgpipe.evaluate.gallery`)."""
    model, spec = load_checkpoint(model_path)
    task = task_from_spec(spec)
    table = read_annotations(annotations)
    check_task_matches(task, task_of(table), annotations, model_path)
    rows = table[table["split"] == "test"]
    if rows.empty:
        raise UserError(f"{annotations}: the test split is empty; raise split.test or add images")
    with scratch_dir(out_dir) as pixels:  # decoded test images, memory-mapped
        test = load_split(rows, "test", images_root, task, spec.image_size, spec.channels, cache_dir=pixels)
        logits = predict_logits(model.to(resolve_device()), test.images, spec.mean, spec.std)
        y_true, y_pred = test.targets.numpy(), task.decide(logits)
        # The pixels the model was given, not the files: a mistake on a 16 px grey input is
        # explained by seeing that input. Drawn here, while the memory-mapped images exist.
        mistakes = mistake_tiles(task, test.images, logits.numpy(), y_true, y_pred)
    scores = task.test_scores(y_true, y_pred)
    say("evaluate", scores.notes)
    calibration = task.calibration(y_true, logits.numpy())
    metrics = {**scores.metrics, "calibration": calibration_metrics(task, y_true, logits.numpy(), calibration)}
    per_class = [row | {"ece": e} for row, e in zip(scores.per_class, calibration.per_label_ece, strict=True)] \
        if calibration.per_label_ece else scores.per_class
    outcomes = record_outcomes(rows["md5"].tolist(), task.classes, y_true, y_pred, task.name)
    with atomic_dir(out_dir) as tmp:
        with Live(str(tmp), dvcyaml=None, save_dvc_exp=False) as live:
            live.summary.update(metrics)
            for name, tile in mistakes.items():
                live.log_image(name, tile)
        pd.DataFrame(per_class).to_csv(tmp / "per_class.csv", index=False)
        (tmp / RELIABILITY_FILE).write_text(json.dumps(calibration.bins, indent=1))
        (tmp / "confusion.json").write_text(json.dumps(scores.confusion, indent=1))
        bits_true, bits_pred = task.one_hot(y_true), task.one_hot(y_pred)  # (N, K): single-label is one-vs-rest
        label_confusion = label_confusion_counts(bits_true.astype(np.uint8), bits_pred.astype(np.uint8), task.classes)
        (tmp / "label_confusion.json").write_text(json.dumps(label_confusion, indent=1))
        write_outcomes(tmp / OUTCOMES_FILE, outcomes)
    return metrics


def calibration_metrics(task: Task, y_true: np.ndarray, logits: np.ndarray, calibration: Calibration) -> dict:
    """ECE, NLL and Brier of the probabilities as served; with a temperature, also `before` it."""
    found: dict = dict(calibration.scores)
    if task.temperature:
        found["before"] = dataclasses.replace(task, temperature=()).calibration(y_true, logits).scores
    return found
