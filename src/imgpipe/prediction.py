"""The predict stage: class name and probability (or label set) for every image in a folder or the test split."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from imgpipe.checkpoint import load_checkpoint
from imgpipe.data.annotations import read_annotations
from imgpipe.data.readers import Readable, list_images
from imgpipe.data.tensors import load_images, members
from imgpipe.device import resolve_device
from imgpipe.errors import UserError
from imgpipe.inference import predict_logits
from imgpipe.outputs import atomic_file
from imgpipe.task import task_from_spec


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
    task = task_from_spec(spec)
    model.to(resolve_device())
    rows = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        pixels = load_images(chunk, spec.image_size, spec.channels, desc="predict")
        logits = predict_logits(model, pixels, spec.mean, spec.std)
        rows += task.prediction_rows(chunk, logits)
    table = pd.DataFrame(rows)
    with atomic_file(Path(out)) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return table

