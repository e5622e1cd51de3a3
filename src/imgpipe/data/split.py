"""The split stage: write the annotation file with a train/val/test split per image.

Splits are drawn over *source* images, stratified by class, so every augmented copy
follows its source: no variant of a validation or test image can leak into train.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from imgpipe.data.augment import MANIFEST
from imgpipe.errors import UserError
from imgpipe.outputs import atomic_dir, atomic_file
from imgpipe.params import SplitParams

SPLITS = ("train", "val", "test")


def split_dataset(manifest: pd.DataFrame, params: SplitParams, seed: int) -> pd.DataFrame:
    """Add a `split` column; val/test keep only originals unless `params.eval_augmented`."""
    sources = manifest.drop_duplicates("source")[["source", "label"]]
    assignment = {}
    rng = np.random.default_rng(seed)
    for label, group in sources.groupby("label", sort=True):
        names = group["source"].to_numpy()
        names = names[rng.permutation(len(names))]
        for name, split in zip(names, allocate(len(names), params), strict=True):
            assignment[name] = split
    out = manifest.assign(split=manifest["source"].map(assignment))
    if not params.eval_augmented:
        out = out[(out["split"] == "train") | (out["transform"] == "original")]
    return out.reset_index(drop=True)


def allocate(n: int, params: SplitParams) -> list[str]:
    """Split names for `n` shuffled items of one class, in proportion to the fractions.

    Every split with a non-zero fraction gets at least one item when the class has enough.
    """
    fractions = np.array([params.train, params.val, params.test])
    counts = np.floor(fractions * n).astype(int)
    # Hand out the remainder by largest fractional part, then make sure no non-empty
    # split is starved while another split has items to spare.
    for i in np.argsort(-(fractions * n - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    for i in np.flatnonzero((fractions > 0) & (counts == 0)):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    return [name for name, c in zip(SPLITS, counts, strict=True) for _ in range(c)]


def class_counts(annotations: pd.DataFrame) -> pd.DataFrame:
    """Images per class and split (rows: classes, columns: splits)."""
    table = annotations.groupby(["label", "split"]).size().unstack(fill_value=0)
    return table.reindex(columns=list(SPLITS), fill_value=0)


def read_manifest(folder: Path) -> pd.DataFrame:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserError(f"{path}: manifest not found; run the augment stage first")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def write_split(augmented: Path, annotations_out: Path, metrics_dir: Path, params: SplitParams, seed: int) -> pd.DataFrame:
    """Split the augment stage's manifest; write the annotation file and class counts per split."""
    annotations = split_dataset(read_manifest(augmented), params, seed)
    counts = class_counts(annotations)
    long = counts.stack().rename("count").reset_index()  # rows: label, split, count
    with atomic_dir(metrics_dir) as tmp:
        long.to_csv(tmp / "class_counts.csv", index=False)
        summary = {"images": {split: int(counts[split].sum()) for split in SPLITS}, "classes": len(counts)}
        (tmp / "split.json").write_text(json.dumps(summary, indent=2))
        with atomic_file(annotations_out) as tmp_csv:
            annotations.to_csv(tmp_csv, index=False)
    return annotations
