"""The predict stage: class name and probability for every image in a folder or the test split."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from imgpipe.checkpoint import load_checkpoint
from imgpipe.data.annotations import read_annotations
from imgpipe.data.readers import list_images
from imgpipe.data.tensors import load_images
from imgpipe.errors import UserError
from imgpipe.inference import predict_logits
from imgpipe.outputs import atomic_file


def images_to_predict(input_dir: str | None, annotations: Path, images_root: Path) -> list[Path]:
    """The images of `input_dir` (recursively), or the test split's images when it is None."""
    if input_dir is None:
        table = read_annotations(annotations)
        return [Path(images_root) / p for p in table.loc[table["split"] == "test", "path"]]
    folder = Path(input_dir)
    if not folder.is_dir():
        raise UserError(f"predict.input: folder '{folder}' does not exist")
    images = list_images(folder)
    if not images:
        raise UserError(f"predict.input: folder '{folder}' has no images")
    return images


def predict(model_path: Path, images: list[Path], out: Path, batch_size: int = 256) -> pd.DataFrame:
    """Write a TSV with `path`, predicted `label` (a class name) and its `probability`."""
    model, spec = load_checkpoint(model_path)
    rows = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        pixels = load_images(chunk, spec.image_size, spec.channels, desc="predict")
        probs = torch.softmax(predict_logits(model, pixels, spec.mean, spec.std), dim=1)
        best, index = probs.max(dim=1)
        rows += [
            {"path": p.as_posix(), "label": spec.classes[i], "probability": round(float(q), 6)}
            for p, i, q in zip(chunk, index.tolist(), best.tolist(), strict=True)
        ]
    table = pd.DataFrame(rows, columns=["path", "label", "probability"])
    with atomic_file(Path(out)) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return table
