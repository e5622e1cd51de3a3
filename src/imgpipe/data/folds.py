"""Cross-validation folds over the train and val images (the cv_fold stages, docs/cross-validation.md).

Folds are drawn like the split: over groups (every augmented copy of a source, byte-identical
duplicates, the images built from one set of digit instances), so no group straddles two folds;
and stratified: single-label per class (each class's groups, shuffled, dealt round the folds in
turn, the deal going on from class to class so the folds end the same size), multi-label by
iterative stratification over label sets (`imgpipe.data.stratify`). The test split stays out of
every fold. A fold trains on the others' images, copies included, and is scored on its own
originals: a copy of a held-out image is never trained on and never scored.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from imgpipe.core.errors import UserError
from imgpipe.core.layout import LABEL
from imgpipe.data.labelsets import is_multilabel, label_matrix, label_names
from imgpipe.data.stratify import iterative_assign

OUT_OF_FOLDS = -1  # the fold of a test image


def assign_folds(table: pd.DataFrame, k: int, seed: int) -> np.ndarray:
    """A fold in 0..k-1 per row of the annotation table, (N,); OUT_OF_FOLDS for the test split.

    A UserError when some class (multi-label: some label) has fewer groups than `k` in train+val.
    """
    pooled = (table["split"] != "test").to_numpy()
    key = "group" if "group" in table.columns else "source"
    firsts = table[pooled].drop_duplicates(key)  # one row per group: its first image's labels
    if is_multilabel(table):
        targets = label_matrix(firsts)
        check_enough(dict(zip(label_names(firsts), targets.sum(axis=0).tolist(), strict=True)), k, "label")
        fold_of_group = iterative_assign(targets, firsts[key].to_numpy(), [1 / k] * k, seed)
    else:
        check_enough(firsts[LABEL].value_counts().to_dict(), k, "class")
        fold_of_group = deal(firsts[LABEL].to_numpy(), k, np.random.default_rng(seed))
    fold_of = dict(zip(firsts[key], fold_of_group.tolist(), strict=True))
    folds = np.full(len(table), OUT_OF_FOLDS)
    folds[pooled] = table.loc[pooled, key].map(fold_of).to_numpy()
    return folds


def deal(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """A fold per item (N,) of the given class labels: per class in sorted order, the items
    shuffled and dealt round the folds, the deal carrying on where the last class stopped."""
    folds = np.empty(len(labels), dtype=int)
    dealt = 0
    for name in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == name)
        members = members[rng.permutation(len(members))]
        folds[members] = (dealt + np.arange(len(members))) % k
        dealt += len(members)
    return folds


def check_enough(groups_per_name: dict[str, int], k: int, kind: str) -> None:
    """Every class (label) needs a group of images in each of the `k` folds."""
    if not groups_per_name:
        raise UserError("cv.folds: the train and val splits hold no images to cross-validate")
    name, fewest = min(groups_per_name.items(), key=lambda item: (item[1], str(item[0])))
    if fewest < k:
        raise UserError(
            f"cv.folds asks for {k} folds but {kind} '{name}' has {fewest} group(s) of images in train+val "
            f"(an image and its copies and duplicates are one group); use at most {max(fewest, 2)} folds, or add images"
        )


def fold_table(table: pd.DataFrame, folds: np.ndarray, fold: int) -> pd.DataFrame:
    """The annotation table one fold trains with: the other folds' images as `train`, the fold's
    own originals as `val` (its held-out images); no test image."""
    held = folds == fold
    keep = (folds != OUT_OF_FOLDS) & (~held | (table["transform"] == "original").to_numpy())
    return table[keep].assign(split=np.where(held[keep], "val", "train")).reset_index(drop=True)


def folds_digest(table: pd.DataFrame, folds: np.ndarray) -> str:
    """Identifies an assignment: the same images (by md5) in the same folds. Two runs with the
    same digest were scored on the same held-out images, fold by fold."""
    pairs = sorted(zip(table["md5"].tolist(), folds.tolist(), strict=True))
    return hashlib.sha256(repr([p for p in pairs if p[1] != OUT_OF_FOLDS]).encode()).hexdigest()[:16]
