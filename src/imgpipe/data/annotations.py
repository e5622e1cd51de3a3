"""Read the annotation file the split stage writes.

Single-label files have a `label` column; multi-label files have one 0/1 `label:<name>` column
per label instead (see `imgpipe.data.labelsets`). Both have path, source, transform, split,
where each image's bytes are (`file`, relative to the augment stage's folder, `offset`, `size`:
see `imgpipe.data.shards`) and their md5, which train, evaluate and predict depend on instead of
the image files, and which keys the evaluate stage's per-image outcomes.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from imgpipe.data.labelsets import is_multilabel, label_names
from imgpipe.errors import UserError

COLUMNS = ("path", "source", "transform", "file", "offset", "size", "split", "md5")


def read_annotations(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: annotation file not found; run the split stage first")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in table.columns]
    if "label" not in table.columns and not is_multilabel(table):
        missing.append("label (or label:<name> columns)")
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; rerun the split stage")
    return table


def class_names(annotations: pd.DataFrame) -> list[str]:
    """Class names in a stable order: numeric names numerically, others alphabetically.

    For a multi-label table, the labels in vocabulary order.
    """
    if is_multilabel(annotations):
        return label_names(annotations)
    return natural_sorted(annotations["label"].unique().tolist())


def natural_sorted(names: list[str]) -> list[str]:
    return sorted(names, key=lambda s: (0, int(s), s) if s.isdigit() else (1, 0, s))
