"""Read the annotation file the split stage writes (path, label, source, transform, split)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from imgpipe.errors import UserError

COLUMNS = ("path", "label", "source", "transform", "split")


def read_annotations(path: Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: annotation file not found; run the split stage first")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    return table


def class_names(annotations: pd.DataFrame) -> list[str]:
    """Class names in a stable order: numeric names numerically, others alphabetically."""
    names = annotations["label"].unique().tolist()
    return sorted(names, key=lambda s: (0, int(s), s) if s.isdigit() else (1, 0, s))
