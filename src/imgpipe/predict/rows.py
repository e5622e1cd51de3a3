"""Predictions as rows: the class name and probability (or label set) for every image in a folder
or the test split, through one function (`prediction_rows`), so `imgpipe predict` and the predict
stage read pixels and decide the same way, whichever model file they were given.

A model is anything that turns a batch of decoded images into probabilities (`Predictor`): the
trained model file (`imgpipe.predict.torch_model`) or its ONNX export (`imgpipe.predict.onnx_model`).
Everything here is numpy, pandas and Pillow: predicting with the ONNX model never imports torch.

An image that cannot be decoded (cut short, empty, not an image) is left out and named with its
reason (`Predicted.unread`); one bad photo among thousands costs its own row only.

A row names its image as every table does (`imgpipe.data.readers.escape_name`): a file of the
user's whose name is not UTF-8, or holds a tab or newline, reads `caf%E9.png`, so each row stays
one line of the TSV; the pipeline's own files (data/raw, the shards) already have such names."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TextIO

import numpy as np
import pandas as pd

from imgpipe.core.atomic import atomic_file
from imgpipe.core.errors import UserError
from imgpipe.core.notes import Note
from imgpipe.data.annotations import read_annotations
from imgpipe.data.decoding import Unread, decode_images
from imgpipe.data.readers import IMAGE_EXTENSIONS, Readable, list_images, shown_path
from imgpipe.data.shards import members
from imgpipe.task.kinds import MulticlassKind, MultilabelKind

PROB_PREFIX = "prob:"  # MultilabelKind.probability_rows: one column per label
TOP_K = "top_k"  # the key of a row's k most probable classes (labels), from prediction_rows(top_k=k)
LABEL_LIST = "label_list"  # multi-label, with top_k: the decided labels as a list (a name may hold a space)
SOME_SKIPPED = 3  # `imgpipe predict`'s exit status when some images could not be read (their rows are missing)


class Predictor(Protocol):
    """A model that predicts: its kind (with the decision rule), the input it takes, and
    probabilities for a batch of images as `imgpipe.data.readers.load_pixels` decodes them."""

    kind: MulticlassKind | MultilabelKind
    image_size: int
    channels: int

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (B, C, image_size, image_size) -> float (B, K)."""
        ...


@dataclass(frozen=True)
class Predicted:
    rows: list[dict]  # one per image read, in input order
    unread: list[Unread]  # the images left out, with why

    def notes(self) -> list[Note]:
        """A warning per image left out."""
        return [Note(f"skipped {u.path}: {u.reason}", warning=True) for u in self.unread]

    def summary(self) -> str:
        """`12 images` or `9999 images, 1 skipped (photos/cut.jpg: truncated or corrupt image data)`."""
        text = f"{len(self.rows)} images"
        if self.unread:
            first = self.unread[0]
            more = f" and {len(self.unread) - 1} more" if len(self.unread) > 1 else ""
            text += f", {len(self.unread)} skipped ({first.path}: {first.reason}{more})"
        return text


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


def prediction_rows(predictor: Predictor, images: Sequence[Readable], top_k: int = 0, batch_size: int = 256) -> Predicted:
    """One row per readable image, as the predict stage writes it (see `probability_rows` in
    `imgpipe.task.kinds`): `path`, the predicted `label` and its `probability`; multi-label:
    `labels`, `sequence` when the labels form groups, one `prob:<label>` per label.

    With `top_k`, each row also holds `top_k`: the k most probable classes (multi-label: labels,
    each probability on its own) as {label, probability}, most probable first.
    """
    kind = predictor.kind
    rows: list[dict] = []
    unread: list[Unread] = []
    for start in range(0, len(images), batch_size):
        chunk = list(images[start : start + batch_size])
        pixels, bad = decode_images(chunk, predictor.image_size, predictor.channels, desc="predict", skip_unreadable=True)
        if bad:
            unread += [dataclasses.replace(u, index=start + u.index) for u in bad]
            keep = sorted(set(range(len(chunk))) - {u.index for u in bad})
            pixels, chunk = pixels[keep], [chunk[i] for i in keep]
        if not chunk:
            continue
        probs = predictor.probabilities(pixels)  # (B, K)
        batch = kind.probability_rows([shown_path(path) for path in chunk], probs)
        if top_k:
            for row, best, chosen in zip(batch, most_probable(kind, probs, top_k), kind.decide_probabilities(probs), strict=True):
                row[TOP_K] = best
                if chosen.ndim:  # multi-label: (K,) 0/1 per label
                    row[LABEL_LIST] = [kind.classes[k] for k in chosen.nonzero()[0]]
        rows += batch
    if unread and not rows:
        first = f"{unread[0].path}: cannot read image ({unread[0].reason})"
        raise UserError(first if len(images) == 1 else f"none of the {len(images)} images could be read; the first: {first}")
    return Predicted(rows, unread)


def most_probable(kind: MulticlassKind | MultilabelKind, probs: np.ndarray, k: int) -> list[list[dict]]:
    """Per image, the min(k, K) most probable classes with their probabilities, rounded as
    `probability_rows` rounds them; ties in the order of the classes."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (B, k)
    return [
        [{"label": kind.classes[i], "probability": round(float(row[i]), 6)} for i in ids]
        for ids, row in zip(order.tolist(), probs, strict=True)
    ]


def predict(predictor: Predictor, images: list[Readable], out: Path, batch_size: int = 256) -> Predicted:
    """Write a TSV with `path`, the predicted `label` (a class name) and its `probability`, one
    row per readable image.

    Multi-label: `labels` (the predicted names joined by a space), `sequence` when the labels
    form `group=value` groups, and one `prob:<label>` column per label.
    """
    result = prediction_rows(predictor, images, batch_size=batch_size)
    with atomic_file(Path(out)) as tmp:
        pd.DataFrame(result.rows).to_csv(tmp, sep="\t", index=False)
    return result


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
