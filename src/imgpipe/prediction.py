"""The predict stage: class name and probability (or label set) for every image in a folder or the test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from imgpipe.checkpoint import ModelSpec, load_checkpoint
from imgpipe.data.annotations import read_annotations
from imgpipe.data.readers import Readable, list_images
from imgpipe.data.tensors import load_images, members
from imgpipe.decision import DecisionRule
from imgpipe.device import resolve_device
from imgpipe.errors import UserError
from imgpipe.inference import predict_logits
from imgpipe.outputs import atomic_file


def images_to_predict(input_dir: str | None, annotations: Path, images_root: Path) -> list[Readable]:
    """The images of `input_dir` (recursively), or the test split's images when it is None."""
    if input_dir is None:
        table = read_annotations(annotations)
        paths = members(table[table["split"] == "test"], images_root)
        if not paths:
            raise UserError(f"{annotations}: the test split is empty; set predict.input or raise split.test")
        return paths
    folder = Path(input_dir)
    if not folder.is_dir():
        raise UserError(f"predict.input: folder '{folder}' does not exist")
    images = list_images(folder)
    if not images:
        raise UserError(f"predict.input: folder '{folder}' has no images")
    return images


def predict(model_path: Path, images: list[Readable], out: Path, batch_size: int = 256) -> pd.DataFrame:
    """Write a TSV with `path`, the predicted `label` (a class name) and its `probability`.

    Multi-label: `labels` (the predicted names joined by a space), `sequence` when the labels
    form `group=value` groups, and one `prob:<label>` column per label.
    """
    model, spec = load_checkpoint(model_path)
    model.to(resolve_device())
    rows = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        pixels = load_images(chunk, spec.image_size, spec.channels, desc="predict")
        logits = predict_logits(model, pixels, spec.mean, spec.std)
        rows += multilabel_rows(spec, chunk, logits) if spec.multilabel else multiclass_rows(spec, chunk, logits)
    table = pd.DataFrame(rows)
    with atomic_file(Path(out)) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return table


def multiclass_rows(spec: ModelSpec, paths: list[Readable], logits: torch.Tensor) -> list[dict]:
    best, index = torch.softmax(logits, dim=1).max(dim=1)
    return [
        {"path": str(p), "label": spec.classes[i], "probability": round(float(q), 6)}
        for p, i, q in zip(paths, index.tolist(), best.tolist(), strict=True)
    ]


def multilabel_rows(spec: ModelSpec, paths: list[Readable], logits: torch.Tensor) -> list[dict]:
    probs = torch.sigmoid(logits).numpy()  # (B, K)
    decided = DecisionRule(spec.thresholds, spec.groups).decide(probs)  # (B, K)
    rows = []
    for path, chosen, p in zip(paths, decided, probs, strict=True):
        names = [spec.classes[k] for k in np.flatnonzero(chosen)]
        row = {"path": str(path), "labels": " ".join(names)}
        if spec.groups:
            row["sequence"] = decode_sequence(spec.classes, spec.groups, chosen)
        row.update({f"prob:{name}": round(float(q), 6) for name, q in zip(spec.classes, p, strict=True)})
        rows.append(row)
    return rows


def decode_sequence(classes: list[str], groups: list[list[int]], chosen: np.ndarray) -> str:
    """The chosen value of each group in order, joined by a space; `blank` values are left out
    (`p1=7 p2=3 p3=blank ...` reads `7 3`)."""
    values = [classes[k].split("=", 1)[1] for members in groups for k in members if chosen[k]]
    return " ".join(v for v in values if v != "blank")
