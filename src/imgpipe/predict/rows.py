"""The predict stage and `imgpipe predict`: class name and probability (or label set) for every
image in a folder or the test split, through one function (`prediction_rows`), so the command
and the stage read pixels and decide the same way.

A row names its image as every table does (`imgpipe.data.readers.escape_name`): a file of the
user's whose name is not UTF-8, or holds a tab or newline, reads `caf%E9.png`, so each row stays
one line of the TSV; the pipeline's own files (data/raw, the shards) already have such names."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import pandas as pd
import torch

from imgpipe.core.atomic import atomic_file
from imgpipe.core.errors import UserError
from imgpipe.data.annotations import read_annotations
from imgpipe.data.readers import IMAGE_EXTENSIONS, Readable, list_images, shown_path
from imgpipe.feed.device import resolve_device
from imgpipe.feed.inference import predict_logits
from imgpipe.feed.tensors import load_images, members
from imgpipe.models.checkpoint import load_checkpoint
from imgpipe.task.tasks import Task, task_from_spec

PROB_PREFIX = "prob:"  # Multilabel.prediction_rows: one column per label
TOP_K = "top_k"  # the key of a row's k most probable classes (labels), from prediction_rows(top_k=k)
LABEL_LIST = "label_list"  # multi-label, with top_k: the decided labels as a list (a name may hold a space)


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


def images_named(paths: Sequence[Path]) -> list[Path]:
    """The images named on a command line: each file as it is, each folder's images recursively
    (`list_images`: other files and OS metadata are skipped there)."""
    images: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise UserError(f"{shown_path(path)}: the folder has no images ({' '.join(sorted(IMAGE_EXTENSIONS))}, searched recursively)")
            images += found
        elif not path.exists():
            raise UserError(f"{shown_path(path)}: no such file or folder")
        elif path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise UserError(f"{shown_path(path)}: not an image file (expected one of {' '.join(sorted(IMAGE_EXTENSIONS))})")
        else:
            images.append(path)
    return images


def prediction_rows(model_path: Path, images: Sequence[Readable], top_k: int = 0, batch_size: int = 256) -> list[dict]:
    """One row per image, as the predict stage writes it (see `Task.prediction_rows`): `path`,
    the predicted `label` and its `probability`; multi-label: `labels`, `sequence` when the labels
    form groups, one `prob:<label>` per label.

    With `top_k`, each row also holds `top_k`: the k most probable classes (multi-label: labels,
    each probability on its own) as {label, probability}, most probable first.
    """
    model, spec = load_checkpoint(model_path)
    task = task_from_spec(spec)
    model.to(resolve_device())
    rows = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        pixels = load_images(chunk, spec.image_size, spec.channels, desc="predict")  # (B, C, H, W)
        logits = predict_logits(model, pixels, spec.mean, spec.std)  # (B, K)
        batch = task.prediction_rows([shown_path(path) for path in chunk], logits)
        if top_k:
            for row, best, chosen in zip(batch, most_probable(task, logits, top_k), task.decide(logits), strict=True):
                row[TOP_K] = best
                if chosen.ndim:  # multi-label: (K,) 0/1 per label
                    row[LABEL_LIST] = [task.classes[k] for k in chosen.nonzero()[0]]
        rows += batch
    return rows


def most_probable(task: Task, logits: torch.Tensor, k: int) -> list[list[dict]]:
    """Per image, the min(k, K) most probable classes with their probabilities, rounded as
    `prediction_rows` rounds them."""
    probs = task.probabilities(logits)  # (B, K)
    values, index = probs.topk(min(k, probs.shape[1]), dim=1)  # (B, k), sorted
    return [
        [{"label": task.classes[i], "probability": round(float(q), 6)} for i, q in zip(ids, qs, strict=True)]
        for ids, qs in zip(index.tolist(), values.tolist(), strict=True)
    ]


def predict(model_path: Path, images: list[Readable], out: Path, batch_size: int = 256) -> pd.DataFrame:
    """Write a TSV with `path`, the predicted `label` (a class name) and its `probability`.

    Multi-label: `labels` (the predicted names joined by a space), `sequence` when the labels
    form `group=value` groups, and one `prob:<label>` column per label.
    """
    table = pd.DataFrame(prediction_rows(model_path, images, batch_size=batch_size))
    with atomic_file(Path(out)) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    return table


# --- `imgpipe predict`'s output: the stage's decision columns, then the top k ---------------------


def decision(row: dict) -> dict:
    """A row of `prediction_rows` without its per-label probabilities and top k."""
    return {key: value for key, value in row.items() if key not in (TOP_K, LABEL_LIST) and not key.startswith(PROB_PREFIX)}


def write_tsv(rows: list[dict], stream: TextIO) -> None:
    """A header, then per image the decision columns and `top<i>_label`, `top<i>_probability`."""
    flat = [
        {**decision(row), **{f"top{i}_{key}": value for i, best in enumerate(row[TOP_K], 1) for key, value in best.items()}}
        for row in rows
    ]
    pd.DataFrame(flat).to_csv(stream, sep="\t", index=False)


def write_json(rows: list[dict], stream: TextIO) -> None:
    """A list of objects: the decision (multi-label `labels` as a list) and `top_k`."""
    objects = [{**decision(row), **({"labels": row[LABEL_LIST]} if LABEL_LIST in row else {}), TOP_K: row[TOP_K]} for row in rows]
    json.dump(objects, stream, indent=2)
    stream.write("\n")


FORMATS: dict[str, Callable[[list[dict], TextIO], None]] = {"tsv": write_tsv, "json": write_json}
