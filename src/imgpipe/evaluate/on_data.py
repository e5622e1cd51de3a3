"""`imgpipe evaluate --data`: score a labelled folder or archive that was never part of the pipeline.

The data goes through the pipeline's own steps, into a temporary folder: the download stage's
ingestion (`imgpipe.data.sources.download`: class folders or an annotation file, unusable files
skipped and counted), the augment stage's manifest with no copies (originals only), every image
in the `test` split, then the evaluate stage's `evaluate`. So the metrics mean what
`metrics/evaluate/metrics.json` means, on other images.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

from imgpipe.core.errors import UserError
from imgpipe.core.layout import LABEL_PREFIX, METRICS_FILE
from imgpipe.core.params import AugmentParams
from imgpipe.data.archives import ARCHIVE_SUFFIXES
from imgpipe.data.augment import augment_dataset
from imgpipe.data.labelsets import label_columns, label_names
from imgpipe.data.sources import LabelOptions, download
from imgpipe.evaluate.stage import evaluate
from imgpipe.models.checkpoint import load_checkpoint
from imgpipe.task.tasks import check_task_matches, task_from_spec, task_of

# No copies: the manifest lists the originals only (a small max_side keeps the one decode per image cheap).
ORIGINALS_ONLY = AugmentParams(rotations=(), invert=False, shear=0.0, max_side=64)
REPORT_DIR = "download"  # with --out: the download stage's report of skipped files, beside evaluate's files


def evaluate_data(model_path: Path, data: str, out_dir: Path | None) -> dict:
    """Evaluate's metrics on `data` (a folder, an archive path, an archive URL or `builtin:...`);
    with `out_dir`, evaluate's files and the download report stay there."""
    if out_dir is not None:
        check_out(Path(out_dir), data)
    _, spec = load_checkpoint(model_path)  # a bad model file fails before any download
    model_task = task_from_spec(spec)
    source = source_of(data)
    with tempfile.TemporaryDirectory(prefix="imgpipe-evaluate-") as tmp:
        work = Path(tmp)
        try:
            done = download(source, work / "raw", labels=LabelOptions(task=model_task.name), report_dir=work / REPORT_DIR,
                            for_training=False)
        except UserError as err:
            raise UserError(str(err).replace("params: data.source", "--data").replace("data.source", "--data")) from None
        table = test_table(augment_dataset(work / "raw", work / "augmented", ORIGINALS_ONLY, seed=0), spec.classes)
        try:  # names --data, not the temporary table
            check_task_matches(model_task, task_of(table), Path(data), model_path)
        except UserError as err:
            raise UserError(f"{err} (or leave them out of --data)") from None
        table.to_csv(work / "annotations.csv", index=False)
        metrics = evaluate(model_path, work / "annotations.csv", work / "augmented", out_dir or work / "evaluate")
        if out_dir is not None:
            shutil.copytree(work / REPORT_DIR, Path(out_dir) / REPORT_DIR, dirs_exist_ok=True)
    for note in done.notes:  # once it worked: bad input stays one line
        print(f"evaluate: {note}", file=sys.stderr)
    print(f"evaluate: {done.summary()}", file=sys.stderr)
    return metrics


def check_out(out: Path, data: str) -> None:
    """`--out` is replaced whole: refuse a folder that holds anything but an earlier result, and
    one that is, holds or lies inside `--data` (nothing the user gave is modified)."""
    if not data.startswith(("builtin:", "http://", "https://", "file://")):
        given, target = Path(data).resolve(), out.resolve()
        if target == given or target.is_relative_to(given) or given.is_relative_to(target):
            raise UserError(f"--out '{out}' is, holds or lies inside --data '{data}'; give a folder of its own")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / METRICS_FILE).is_file())):
        raise UserError(
            f"--out '{out}' exists and is not an earlier imgpipe evaluate result (no {METRICS_FILE}); it would be "
            "replaced whole: give a new or empty folder"
        )


def source_of(data: str) -> str:
    """`data` as the download stage's `data.source`: a local archive becomes a file:// URL."""
    if data.startswith(("builtin:", "http://", "https://", "file://")):
        return data
    path = Path(data)
    if not path.exists():
        raise UserError(f"--data: '{data}' does not exist (a folder, a {'/'.join(ARCHIVE_SUFFIXES)} archive or its URL)")
    if path.is_file():
        if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
            raise UserError(f"--data: '{data}' is a file but not a {'/'.join(ARCHIVE_SUFFIXES)} archive; give a folder or an archive")
        return path.resolve().as_uri()
    return data


def test_table(manifest: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """The augment stage's manifest as the split stage's annotation file, every image in `test`.

    Multi-label: labels the model knows but the data never names get a column of zeros, in the
    model's order, so a small set need not show every label; unknown labels stay, to be refused.
    """
    table = manifest.assign(split="test")
    columns = label_columns(table)
    if columns and set(label_names(table)) <= set(classes):
        labels = pd.DataFrame({LABEL_PREFIX + name: table.get(LABEL_PREFIX + name, "0") for name in classes}, index=table.index)
        at = table.columns.get_loc(columns[0])
        rest = table.drop(columns=columns)
        table = pd.concat([rest.iloc[:, :at], labels, rest.iloc[:, at:]], axis=1)
    return table
