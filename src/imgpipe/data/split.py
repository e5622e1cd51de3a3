"""The split stage: write the annotation file with a train/val/test split per image.

Splits are drawn over *source* images, stratified by class, so every augmented copy
follows its source: no variant of a validation or test image can leak into train. Multi-label
data is split by iterative stratification over label sets, grouped by the `group` column.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from imgpipe.data.augment import MANIFEST
from imgpipe.data.labelsets import is_multilabel, label_matrix, label_names
from imgpipe.data.stratify import SPLITS, iterative_split
from imgpipe.errors import UserError
from imgpipe.outputs import atomic_dir, atomic_file
from imgpipe.params import SplitParams


def split_dataset(manifest: pd.DataFrame, params: SplitParams, seed: int) -> pd.DataFrame:
    """Add a `split` column; val/test keep only originals unless `params.eval_augmented`."""
    if is_multilabel(manifest):
        out = split_multilabel(manifest, params, seed)
    else:
        out = manifest.assign(split=manifest["source"].map(split_by_class(manifest, params, seed)))
    if not params.eval_augmented:
        out = out[(out["split"] == "train") | (out["transform"] == "original")]
    return out.reset_index(drop=True)


def split_by_class(manifest: pd.DataFrame, params: SplitParams, seed: int) -> dict[str, str]:
    """Source image -> split, drawn per class so each class is split in proportion."""
    sources = manifest.drop_duplicates("source")[["source", "label"]]
    assignment = {}
    rng = np.random.default_rng(seed)
    for _, group in sources.groupby("label", sort=True):
        names = group["source"].to_numpy()
        names = names[rng.permutation(len(names))]
        for name, split in zip(names, allocate(len(names), params), strict=True):
            assignment[name] = split
    return assignment


def split_multilabel(manifest: pd.DataFrame, params: SplitParams, seed: int) -> pd.DataFrame:
    """Iterative stratification over label sets, by `group`: all images of one group (every copy
    of a source, every image built from one set of digit instances) share a split."""
    originals = manifest.drop_duplicates("source")
    splits = iterative_split(
        label_matrix(originals), originals["group"].to_numpy(), (params.train, params.val, params.test), seed
    )
    assignment = dict(zip(originals["group"], splits, strict=True))
    return manifest.assign(split=manifest["group"].map(assignment))


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
    """Images per class (multi-label: per label) and split (rows: classes, columns: splits)."""
    if is_multilabel(annotations):
        ones = pd.DataFrame(label_matrix(annotations), columns=label_names(annotations))
        table = ones.groupby(annotations["split"].to_numpy()).sum().T.rename_axis(index="label", columns="split")
    else:
        table = annotations.groupby(["label", "split"]).size().unstack(fill_value=0)
    return table.reindex(columns=list(SPLITS), fill_value=0)


def check_no_split_starved(annotations: pd.DataFrame, params: SplitParams) -> None:
    """A split with a non-zero fraction but no image would only fail later, in train or evaluate."""
    sizes = annotations["split"].value_counts()
    unit = "groups" if "group" in annotations.columns else "source images"
    units = annotations["group" if unit == "groups" else "source"].nunique()
    for split in SPLITS:
        if getattr(params, split) > 0 and sizes.get(split, 0) == 0:
            raise UserError(
                f"split.{split} is {getattr(params, split):g} but no image landed in {split}: only {units} {unit}; "
                "add images (or raise data.limit), or set the fraction to 0"
            )


def read_manifest(folder: Path) -> pd.DataFrame:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserError(f"{path}: manifest not found; run the augment stage first")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def write_split(augmented: Path, annotations_out: Path, metrics_dir: Path, params: SplitParams, seed: int) -> pd.DataFrame:
    """Split the augment stage's manifest; write the annotation file and class counts per split."""
    annotations = split_dataset(read_manifest(augmented), params, seed)
    check_no_split_starved(annotations, params)
    counts = class_counts(annotations)
    long = counts.stack().rename("count").reset_index()  # rows: label, split, count
    with atomic_dir(metrics_dir) as tmp:
        long.to_csv(tmp / "class_counts.csv", index=False)
        sizes = annotations["split"].value_counts()
        summary = {"images": {split: int(sizes.get(split, 0)) for split in SPLITS}, "classes": len(counts)}
        (tmp / "split.json").write_text(json.dumps(summary, indent=2))
        with atomic_file(annotations_out) as tmp_csv:
            annotations.to_csv(tmp_csv, index=False)
    return annotations
