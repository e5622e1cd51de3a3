"""The download stage: materialise `data.source` (builtin, archive URL or folder) as class folders,
or images plus `labels.csv`, with a report of every file it skipped or changed."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from imgpipe.data.archives import (
    ARCHIVE_SUFFIXES,
    GB,
    extract_archive,
    fetch_url,
    file_sha256,
)
from imgpipe.data.builtin import BUILTIN_MULTILABEL
from imgpipe.data.ingest import (
    Report,
    class_folders_as_table,
    keep_first_per_class,
    scan_class_folders,
    scan_table,
    write_class_folders,
    write_files_list,
    write_table,
)
from imgpipe.data.labelfiles import find_annotations, read_label_source
from imgpipe.data.readers import is_image_file, list_images
from imgpipe.errors import UserError
from imgpipe.layout import IMAGES_DIR
from imgpipe.outputs import staged_outputs
from imgpipe.params import DataParams

BUILTIN_DIGITS_SIZE = 32  # sklearn's 8x8 scans are upsampled so rotations and shears stay legible


@dataclass(frozen=True)
class LabelOptions:
    """How to read labels: `task` and the multi-label annotation settings of `data`."""

    task: str = "auto"  # auto | multiclass | multilabel
    annotations: str | None = None  # annotation file or folder inside the source; None = detect
    image_column: str | None = None
    labels_column: str | None = None


def download(
    source: str,
    out: Path,
    sha256: str | None = None,
    limit: int | None = None,
    labels: LabelOptions = LabelOptions(),
    report_dir: Path | None = None,
    max_extract_gb: float = DataParams.max_extract_gb,
) -> Report:
    """Write the dataset named by `source` into `out` and, if given, the report into `report_dir`.

    Single-label data becomes `out/<class>/<image>` plus `out/sources.csv`; multi-label data
    becomes `out/images/...` plus `out/labels.csv` (see `imgpipe.data.labelsets`). Files that are
    not usable images are skipped and reported (see `imgpipe.data.ingest`). With `limit`, only the
    first `limit` images of each class (multi-label: in total), in name order, are kept. Both
    outputs are replaced together, or not at all.
    """
    report = Report(source)
    with staged_outputs() as staged, tempfile.TemporaryDirectory(prefix="imgpipe-download-") as work:
        tmp = staged.folder(out)
        if source.startswith("builtin:"):
            root, table = write_builtin(source, Path(work), labels.task)
        elif source.startswith(("http://", "https://", "file://")):
            root, table = fetch_archive(source, Path(work), sha256, int(max_extract_gb * GB)), None
        else:
            root, table = check_folder(Path(source)), None
        if table is None and labels.task != "multiclass":
            table = read_annotated(root, labels, report)
        if table is not None:
            table = scan_table(root, table, report)
            write_table(root, table.sort_values("path").head(limit) if limit else table, tmp, report)
        else:
            images = scan_class_folders(root, report)
            images = keep_first_per_class(images, limit) if limit else images
            if labels.task == "multilabel":  # one positive label per image
                write_table(root, class_folders_as_table(images), tmp, report)
            else:
                write_class_folders(root, images, tmp, report)
        write_files_list(tmp)
        if report_dir is not None:
            report.write(staged.folder(report_dir))
    return report


def write_builtin(source: str, work: Path, task: str) -> tuple[Path, pd.DataFrame | None]:
    """Generate a builtin dataset in `work`: (its root, its label table or None for class folders)."""
    root = work / "builtin"
    root.mkdir()
    if source == "builtin:digits":
        write_builtin_digits(root)
        return root, None
    if source not in BUILTIN_MULTILABEL:
        names = ", ".join(["builtin:digits", *BUILTIN_MULTILABEL])
        raise UserError(f"params: data.source '{source}' is unknown; builtin datasets: {names}")
    if task == "multiclass":
        raise UserError(f"params: data.source '{source}' is multi-label; set task to auto or multilabel")
    table = BUILTIN_MULTILABEL[source](root)
    return root / IMAGES_DIR, table.assign(path=table["path"].str.removeprefix(f"{IMAGES_DIR}/"))


def check_folder(src: Path) -> Path:
    if not src.exists():
        raise UserError(f"data.source: folder '{src}' does not exist")
    if not src.is_dir():
        raise UserError(f"data.source: '{src}' is not a folder (or a supported archive URL)")
    return src


def read_annotated(src: Path, labels: LabelOptions, report: Report) -> pd.DataFrame | None:
    """The multi-label table of `src`, or None for a folder-per-class dataset.

    With `task: auto` and no `data.annotations`, a CSV beside class folders (a Kaggle
    `metadata.csv`, say) that cannot be read as annotations is ignored, with a note.
    """
    strict = labels.annotations is not None or labels.task == "multilabel" or not has_class_folders(src)
    try:
        if labels.annotations is None and find_annotations(src) is None:
            return None
        table, notes = read_label_source(src, labels.annotations, labels.image_column, labels.labels_column)
    except UserError as err:
        if strict:
            raise
        report.notes.append(f"reading class folders; no usable annotation file ({err})")
        return None
    report.notes.extend(notes)
    return table


def has_class_folders(src: Path) -> bool:
    return any(d.is_dir() and not d.name.startswith(".") and list_images(d) for d in src.iterdir())


def write_builtin_digits(out: Path) -> None:
    """scikit-learn's 1,797 real handwritten digits as PNGs, one folder per class."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        ink = (pixels / 16.0 * 255).round().astype(np.uint8)  # (8, 8), white ink on black
        img = Image.fromarray(ink, mode="L").resize(
            (BUILTIN_DIGITS_SIZE, BUILTIN_DIGITS_SIZE), Image.Resampling.BICUBIC
        )
        folder = out / str(label)
        folder.mkdir(exist_ok=True)
        img.save(folder / f"{i:04d}.png")


def fetch_archive(url: str, work: Path, sha256: str | None, limit_bytes: int) -> Path:
    """Download an archive into `work`, verify its checksum, extract it; returns the dataset root."""
    name = url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    if not name.lower().endswith(ARCHIVE_SUFFIXES):
        raise UserError(f"data.source: '{url}' is not a {', '.join(ARCHIVE_SUFFIXES)} archive")
    archive = work / name
    fetch_url(url, archive)
    digest = file_sha256(archive)
    if sha256 and digest.lower() != sha256.lower():
        raise UserError(
            f"data.sha256: archive '{name}' has sha256 {digest}, expected {sha256}; "
            "fix data.sha256 or the URL"
        )
    extracted = work / "extracted"
    extract_archive(archive, extracted, limit_bytes)
    return dataset_root(extracted)


def dataset_root(folder: Path) -> Path:
    """Descend through single wrapper folders (`archive/digits/<class>/...`) to the class folders."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
        dirs = [p for p in entries if p.is_dir()]
        if len(dirs) == 1 and not any(is_image_file(p) for p in entries):
            folder = dirs[0]
            if any(is_image_file(p) for p in folder.iterdir()):
                return folder.parent
        else:
            return folder
