"""The download stage: materialise `data.source` as class folders or images plus `labels.csv`."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from imgpipe.data.annotations import natural_sorted
from imgpipe.data.builtin import BUILTIN_MULTILABEL
from imgpipe.data.labelfiles import find_annotations, read_label_source
from imgpipe.data.labelsets import IMAGES_DIR, LABELS_FILE, label_matrix, label_names, make_table
from imgpipe.data.readers import is_image_file, list_images
from imgpipe.errors import UserError
from imgpipe.outputs import atomic_dir
from imgpipe.progress import progress

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MIB = 1 << 20
BUILTIN_DIGITS_SIZE = 32  # sklearn's 8x8 scans are upsampled so rotations and shears stay legible


@dataclass(frozen=True)
class LabelOptions:
    """How to read labels: `task` and the multi-label annotation settings of `data`."""

    task: str = "auto"  # auto | multiclass | multilabel
    annotations: str | None = None  # annotation file or folder inside the source; None = detect
    image_column: str | None = None
    labels_column: str | None = None


@dataclass(frozen=True)
class DatasetSummary:
    images: int
    counts: dict[str, int]  # images per class; multi-label: images carrying each label
    multilabel: bool


def download(
    source: str, out: Path, sha256: str | None = None, limit: int | None = None, labels: LabelOptions = LabelOptions()
) -> DatasetSummary:
    """Write the dataset named by `source` into `out` (replaced atomically).

    Single-label data becomes `out/<class>/<image>`; multi-label data becomes `out/images/...`
    plus `out/labels.csv` (see `imgpipe.data.labelsets`). With `limit`, only the first `limit`
    images of each class (multi-label: in total), in name order, are kept.
    """
    with atomic_dir(Path(out)) as tmp:
        if source.startswith("builtin:"):
            write_builtin(source, tmp, labels.task)
        elif source.startswith(("http://", "https://", "file://")):
            with tempfile.TemporaryDirectory(prefix="imgpipe-download-") as work:
                import_folder(fetch_archive(source, Path(work), sha256), tmp, labels)
        else:
            import_folder(Path(source), tmp, labels)
        if limit is not None:
            keep_first(tmp, limit)  # per class while still in class folders
        if labels.task == "multilabel" and not (tmp / LABELS_FILE).exists():
            class_folders_to_labels(tmp)
        summary = summarize(tmp)
    return summary


def write_builtin(source: str, out: Path, task: str) -> None:
    if source == "builtin:digits":
        write_builtin_digits(out)
        return
    if source not in BUILTIN_MULTILABEL:
        names = ", ".join(["builtin:digits", *BUILTIN_MULTILABEL])
        raise UserError(f"params: data.source '{source}' is unknown; builtin datasets: {names}")
    if task == "multiclass":
        raise UserError(f"params: data.source '{source}' is multi-label; set task to auto or multilabel")
    BUILTIN_MULTILABEL[source](out).to_csv(out / LABELS_FILE, index=False)


def import_folder(src: Path, out: Path, labels: LabelOptions) -> None:
    """Copy a folder-per-class dataset, or images plus an annotation file (multi-label)."""
    if not src.exists():
        raise UserError(f"data.source: folder '{src}' does not exist")
    if not src.is_dir():
        raise UserError(f"data.source: '{src}' is not a folder (or a supported archive URL)")
    if labels.task == "multiclass" and labels.annotations is not None:
        raise UserError("params: data.annotations is set, which means multi-label data; set task to auto or multilabel")
    found = read_annotated(src, labels) if labels.task != "multiclass" else None
    if found is None:
        copy_class_folders(src, out)
        return
    table, report = found
    for line in report:
        print(f"download: {line}", file=sys.stderr)
    for rel in table["path"]:
        dest = out / IMAGES_DIR / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dest)
    table = table.assign(path=IMAGES_DIR + "/" + table["path"], group=IMAGES_DIR + "/" + table["group"])
    table.to_csv(out / LABELS_FILE, index=False)


def read_annotated(src: Path, labels: LabelOptions) -> tuple[pd.DataFrame, list[str]] | None:
    """The multi-label table of `src`, or None for a folder-per-class dataset.

    With `task: auto` and no `data.annotations`, a CSV beside class folders (a Kaggle
    `metadata.csv`, say) that cannot be read as annotations is ignored, with a note.
    """
    strict = labels.annotations is not None or labels.task == "multilabel" or not has_class_folders(src)
    try:
        if labels.annotations is None and find_annotations(src) is None:
            return None
        return read_label_source(src, labels.annotations, labels.image_column, labels.labels_column)
    except UserError as err:
        if strict:
            raise
        print(f"download: reading class folders; no usable annotation file ({err})", file=sys.stderr)
        return None


def has_class_folders(src: Path) -> bool:
    return any(d.is_dir() and not d.name.startswith(".") and list_images(d) for d in src.iterdir())


def class_folders_to_labels(out: Path) -> None:
    """`task: multilabel` on class folders: one positive label per image, under `images/`."""
    classes = natural_sorted([d.name for d in out.iterdir() if d.is_dir()])
    (out / IMAGES_DIR).mkdir()
    for name in classes:
        os.replace(out / name, out / IMAGES_DIR / name)
    paths = [p.relative_to(out).as_posix() for p in list_images(out / IMAGES_DIR)]
    index = {name: k for k, name in enumerate(classes)}
    targets = np.eye(len(classes), dtype=np.uint8)[[index[p.split("/")[1]] for p in paths]]
    make_table(paths, classes, targets).to_csv(out / LABELS_FILE, index=False)


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


def copy_class_folders(src: Path, out: Path) -> None:
    """Copy the images of a folder-per-class dataset; the user's folder is only read."""
    if not src.exists():
        raise UserError(f"data.source: folder '{src}' does not exist")
    if not src.is_dir():
        raise UserError(f"data.source: '{src}' is not a folder (or a supported archive URL)")
    classes = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"data.source: '{src}' has no class sub-folders; expected <source>/<class>/<image>")
    for class_dir in classes:
        images = list_images(class_dir)
        if not images:
            raise UserError(f"data.source: class folder '{class_dir}' has no images; add images or remove it")
        for image in images:
            dest = out / class_dir.name / image.relative_to(class_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, dest)


def fetch_archive(url: str, work: Path, sha256: str | None) -> Path:
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
    extract_archive(archive, extracted)
    return dataset_root(extracted)


def fetch_url(url: str, dest: Path, timeout: float = 60.0) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as f:
            size = int(response.headers.get("Content-Length") or 0)
            chunks = iter(lambda: response.read(MIB), b"")
            total = math.ceil(size / MIB) if size else None  # in 1 MiB chunks
            for chunk in progress(chunks, desc=f"download {dest.name}", total=total):
                f.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"data.source: could not download '{url}': {reason}") from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract a zip or tar archive, refusing members that would land outside `dest`."""
    dest.mkdir(parents=True)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    _check_member(member, dest, archive.name)
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise UserError(f"data.source: cannot extract '{archive.name}': {err}") from None


def _check_member(member: str, dest: Path, archive_name: str) -> None:
    target = (dest / member).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise UserError(f"data.source: archive '{archive_name}' member '{member}' points outside the archive")


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


def keep_first(folder: Path, limit: int) -> None:
    """Delete all but the first `limit` images of each class folder (multi-label: of the table),
    in our own copy, never the source."""
    labels_file = folder / LABELS_FILE
    if labels_file.exists():
        table = pd.read_csv(labels_file, dtype=str, keep_default_na=False).sort_values("path")
        for rel in table["path"].iloc[limit:]:
            (folder / rel).unlink()
        table.iloc[:limit].to_csv(labels_file, index=False)
        return
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for extra in list_images(class_dir)[limit:]:
            extra.unlink()


def summarize(folder: Path) -> DatasetSummary:
    labels_file = folder / LABELS_FILE
    if labels_file.exists():
        table = pd.read_csv(labels_file, dtype=str, keep_default_na=False)
        counts = dict(zip(label_names(table), label_matrix(table).sum(axis=0).tolist(), strict=True))
        return DatasetSummary(len(table), counts, multilabel=True)
    counts = {d.name: len(list_images(d)) for d in sorted(Path(folder).iterdir()) if d.is_dir()}
    return DatasetSummary(sum(counts.values()), counts, multilabel=False)
