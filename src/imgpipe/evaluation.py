"""The evaluate stage: test-split metrics, a per-class table and a confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from dvclive import Live

from imgpipe.checkpoint import load_checkpoint
from imgpipe.data.annotations import read_annotations
from imgpipe.data.tensors import load_split
from imgpipe.errors import UserError
from imgpipe.inference import predict_logits
from imgpipe.metrics import classification_metrics, confusion_counts, per_class_table
from imgpipe.outputs import atomic_dir


def evaluate(model_path: Path, annotations: Path, images_root: Path, out_dir: Path) -> dict[str, float]:
    """Score the model on the test split; writes metrics.json, per_class.csv, confusion.json."""
    model, spec = load_checkpoint(model_path)
    table = read_annotations(annotations)
    unknown = sorted(set(table["label"]) - set(spec.classes))
    if unknown:
        raise UserError(f"{annotations}: label(s) {', '.join(unknown[:5])} unknown to the model {model_path}; retrain")
    test = load_split(table, "test", images_root, spec.classes, spec.image_size, spec.channels)
    if len(test.targets) == 0:
        raise UserError(f"{annotations}: the test split is empty; raise split.test or add images")
    y_pred = predict_logits(model, test.images, spec.mean, spec.std).argmax(1).numpy()
    y_true = test.targets.numpy()
    metrics = {**classification_metrics(y_true, y_pred), "test_images": int(len(y_true))}
    with atomic_dir(out_dir) as tmp:
        with Live(str(tmp), dvcyaml=None, save_dvc_exp=False) as live:
            live.summary.update(metrics)
        pd.DataFrame(per_class_table(y_true, y_pred, spec.classes)).to_csv(tmp / "per_class.csv", index=False)
        (tmp / "confusion.json").write_text(json.dumps(confusion_counts(y_true, y_pred, spec.classes), indent=1))
    return metrics
