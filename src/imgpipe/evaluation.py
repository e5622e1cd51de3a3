"""The evaluate stage: test-split metrics, a per-class (per-label) table, confusion counts and
each test image's outcome (`imgpipe.outcomes`, for the review of a pull request)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from dvclive import Live

from imgpipe.checkpoint import ModelSpec, load_checkpoint
from imgpipe.data.annotations import class_names, read_annotations
from imgpipe.data.labelsets import is_multilabel
from imgpipe.data.tensors import load_split
from imgpipe.decision import DecisionRule
from imgpipe.device import resolve_device
from imgpipe.errors import UserError
from imgpipe.inference import predict_logits
from imgpipe.metrics import (
    classification_metrics,
    confusion_counts,
    cooccurrence_counts,
    group_accuracy,
    label_confusion_counts,
    labels_without_examples,
    multilabel_metrics,
    per_class_table,
    per_label_table,
)
from imgpipe.outcomes import FILE as OUTCOMES_FILE
from imgpipe.outcomes import record_outcomes, write_outcomes
from imgpipe.outputs import atomic_dir, scratch_dir


def evaluate(model_path: Path, annotations: Path, images_root: Path, out_dir: Path) -> dict:
    """Score the model on the test split; writes metrics.json, per_class.csv, confusion.json,
    label_confusion.json (a 2x2 matrix per class or label) and outcomes.json."""
    model, spec = load_checkpoint(model_path)
    table = read_annotations(annotations)
    check_labels_match(table, spec, annotations, model_path)
    rows = table[table["split"] == "test"]
    if rows.empty:
        raise UserError(f"{annotations}: the test split is empty; raise split.test or add images")
    with scratch_dir(out_dir) as pixels:  # decoded test images, memory-mapped
        test = load_split(rows, "test", images_root, spec.classes, spec.image_size, spec.channels, cache_dir=pixels)
        logits = predict_logits(model.to(resolve_device()), test.images, spec.mean, spec.std)
    if spec.multilabel:
        metrics, per_class, confusion, y_true, y_pred = score_multilabel(spec, logits, test.targets)
        bits_true, bits_pred = y_true, y_pred  # (N, K)
    else:
        y_true, y_pred = test.targets.numpy(), logits.argmax(1).numpy()
        metrics = {**classification_metrics(y_true, y_pred), "test_images": int(len(y_true))}
        per_class = per_class_table(y_true, y_pred, spec.classes)
        confusion = confusion_counts(y_true, y_pred, spec.classes)
        bits_true, bits_pred = (np.eye(len(spec.classes), dtype=np.uint8)[y] for y in (y_true, y_pred))  # one-vs-rest
    outcomes = record_outcomes(rows["md5"].tolist(), spec.classes, y_true, y_pred, spec.task)
    with atomic_dir(out_dir) as tmp:
        with Live(str(tmp), dvcyaml=None, save_dvc_exp=False) as live:
            live.summary.update(metrics)
        pd.DataFrame(per_class).to_csv(tmp / "per_class.csv", index=False)
        (tmp / "confusion.json").write_text(json.dumps(confusion, indent=1))
        label_confusion = label_confusion_counts(bits_true, bits_pred, spec.classes)
        (tmp / "label_confusion.json").write_text(json.dumps(label_confusion, indent=1))
        write_outcomes(tmp / OUTCOMES_FILE, outcomes)
    return metrics


def check_labels_match(table: pd.DataFrame, spec: ModelSpec, annotations: Path, model_path: Path) -> None:
    if is_multilabel(table) != spec.multilabel:
        kinds = ("single-label", "multi-label")
        raise UserError(
            f"{annotations} is {kinds[is_multilabel(table)]} but the model {model_path} is "
            f"{kinds[spec.multilabel]}; retrain (dvc repro)"
        )
    labels = class_names(table) if spec.multilabel else table["label"].unique().tolist()
    unknown = [name for name in labels if name not in spec.classes]
    if unknown or (spec.multilabel and labels != spec.classes):
        shown = ", ".join(unknown[:5]) or "in a different order"
        raise UserError(f"{annotations}: label(s) {shown} do not match the model {model_path}; retrain")


def score_multilabel(spec: ModelSpec, logits: torch.Tensor, targets: torch.Tensor):
    """Metrics, per-label rows and co-occurrence counts, plus the (N, K) truth and decisions."""
    y_true = targets.numpy().astype(np.uint8)  # (N, K)
    y_pred = DecisionRule(spec.thresholds, spec.groups).decide(torch.sigmoid(logits).numpy())  # (N, K)
    metrics: dict = {**multilabel_metrics(y_true, y_pred), "test_images": int(len(y_true))}
    if spec.groups:
        groups = {spec.classes[m[0]].split("=", 1)[0]: m for m in spec.groups}
        metrics.update(group_accuracy(y_true, y_pred, groups))
    missing = labels_without_examples(y_true, spec.classes)
    metrics["labels_without_test_examples"] = len(missing)
    if missing:  # also visible in per_class.csv: support 0, recall and F1 empty
        print(f"evaluate: {len(missing)} label(s) have no test example (left out of macro averages): "
              + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
    per_label = per_label_table(y_true, y_pred, spec.classes)
    for row, threshold in zip(per_label, spec.thresholds, strict=True):
        row["threshold"] = round(threshold, 6)
    return metrics, per_label, cooccurrence_counts(y_true, y_pred, spec.classes), y_true, y_pred
