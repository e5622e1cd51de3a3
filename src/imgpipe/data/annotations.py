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

from imgpipe.core.errors import UserError
from imgpipe.core.layout import ANNOTATION_COLUMNS, LABEL
from imgpipe.data.labelsets import label_columns


def read_annotations(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: annotation file not found; run the split stage first")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ANNOTATION_COLUMNS if c not in table.columns]
    if LABEL not in table.columns and not label_columns(table):
        missing.append("label (or label:<name> columns)")
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; rerun the split stage")
    return table

