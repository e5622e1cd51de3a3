"""The multi-label table every stage passes on: one row per image, one 0/1 column per label.

Columns are `path`, `group` (images that must stay in one split, e.g. built from the same digit
instances) and `label:<name>` for each label in vocabulary order. Labels live in their own
columns, so a name may hold any character (`,`, spaces, `=`) and a label with no examples is
still part of the vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

LABEL_PREFIX = "label:"
LABELS_FILE = "labels.csv"  # written by the download stage beside `images/`
IMAGES_DIR = "images"


def make_table(
    paths: Sequence[str], labels: Sequence[str], targets: np.ndarray, groups: Sequence[str] | None = None
) -> pd.DataFrame:
    """The normalised table; `targets` is (N, K) 0/1 in the order of `labels`."""
    targets = np.asarray(targets, dtype=np.uint8).reshape(len(paths), len(labels))
    table = pd.DataFrame({"path": list(paths), "group": list(groups) if groups is not None else list(paths)})
    ones = pd.DataFrame(targets, columns=[LABEL_PREFIX + name for name in labels])
    return pd.concat([table, ones], axis=1)


def label_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith(LABEL_PREFIX)]


def label_names(table: pd.DataFrame) -> list[str]:
    return [c.removeprefix(LABEL_PREFIX) for c in label_columns(table)]


def is_multilabel(table: pd.DataFrame) -> bool:
    return bool(label_columns(table))


def label_matrix(table: pd.DataFrame) -> np.ndarray:
    """(N, K) uint8 targets in vocabulary order."""
    columns = label_columns(table)
    return table[columns].astype(np.uint8).to_numpy() if columns else np.zeros((len(table), 0), np.uint8)


def label_groups(labels: Sequence[str]) -> dict[str, list[int]]:
    """Labels named `group=value` (`p1=7`) by group, in order; groups of one label are left out."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(labels):
        if "=" in name:
            groups.setdefault(name.split("=", 1)[0], []).append(i)
    return {g: members for g, members in groups.items() if len(members) > 1}
