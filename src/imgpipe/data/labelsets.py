"""The multi-label table every stage passes on: one row per image, one 0/1 column per label.

Columns are `path`, `group` (images that must stay in one split, e.g. built from the same digit
instances) and `label:<name>` for each label in vocabulary order. Labels live in their own
columns, so a name may hold any character (`,`, spaces, `=`) and a label with no examples is
still part of the vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from imgpipe.core.layout import LABEL, LABEL_PREFIX


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


def positive_labels(row: Mapping[str, str]) -> list[str]:
    """The labels one row of a label table (column -> "0"/"1", as read from CSV) carries."""
    return [c.removeprefix(LABEL_PREFIX) for c, v in row.items() if c.startswith(LABEL_PREFIX) and v == "1"]


def is_multilabel(table: pd.DataFrame) -> bool:
    """The one test of a table's task: `label:<name>` columns (else one `label` column).
    Training and later stages ask `imgpipe.task.tasks.task_of(table)`, which uses it."""
    return bool(label_columns(table))


def label_sets(table: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Class (multi-label: label) names and the (N, K) 0/1 matrix of either kind of table; a
    single-label row is one-hot, its classes in `natural_sorted` order."""
    if is_multilabel(table):
        return label_names(table), label_matrix(table)
    classes = natural_sorted(table[LABEL].unique().tolist())
    index = {name: k for k, name in enumerate(classes)}
    return classes, np.eye(len(classes), dtype=np.uint8)[[index[label] for label in table[LABEL]]]


def label_matrix(table: pd.DataFrame) -> np.ndarray:
    """(N, K) uint8 targets in vocabulary order."""
    columns = label_columns(table)
    return table[columns].astype(np.uint8).to_numpy() if columns else np.zeros((len(table), 0), np.uint8)


def split_group(name: str) -> tuple[str, str] | None:
    """`p1=7` -> ("p1", "7"): a label's one-of group and its value; None outside any group."""
    group, sep, value = name.partition("=")
    return (group, value) if sep else None


def label_groups(labels: Sequence[str]) -> dict[str, list[int]]:
    """Labels named `group=value` (`p1=7`) by group, in order; groups of one label are left out."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(labels):
        if parts := split_group(name):
            groups.setdefault(parts[0], []).append(i)
    return {g: members for g, members in groups.items() if len(members) > 1}


def natural_key(name: str) -> tuple[list, str]:
    """Sort key reading digit runs as numbers (p2 < p10, 9 < 10); ties by the name itself."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)], name


def natural_sorted(names: Sequence[str]) -> list[str]:
    """Class and label names in the order people expect: `natural_key`."""
    return sorted(names, key=natural_key)
