"""The download stage: materialise `data.source` (builtin, archive URL or folder) as class folders,
or images plus `labels.csv`, with a report of every file it skipped or changed."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from imgpipe.core.atomic import staged_outputs
from imgpipe.core.errors import UserError
from imgpipe.core.layout import IMAGES_DIR
from imgpipe.core.params import DataParams
from imgpipe.data.archives import ARCHIVE_SUFFIXES, GB, extract_archive, fetch_url, file_sha256
from imgpipe.data.builtin import BUILTIN_MULTILABEL
from imgpipe.data.filenames import (
    PATTERN_EXAMPLES,
    as_class_images,
    as_sequence_table,
    compile_pattern,
    is_sequence,
    scan_named_images,
)
from imgpipe.data.ingest import (
    Report,
    class_folders_as_table,
    keep_first_per_class,
    list_files,
    scan_class_folders,
    scan_table,
    source_name,
    write_class_folders,
    write_files_list,
    write_table,
)
from imgpipe.data.labelfiles import find_annotations, read_label_source, resolve_annotations
from imgpipe.data.readers import (
    IMAGE_EXTENSIONS,
    UnreadableImage,
    inspect_image,
    is_image_file,
    junk_reason,
    list_images,
)

UNLISTED = "not named in the annotation file"
BUILTIN_DIGITS_SIZE = 32  # sklearn's 8x8 scans are upsampled so rotations and shears stay legible


@dataclass(frozen=True)
class LabelOptions:
    """How to read labels: `task`, the multi-label annotation settings of `data`, and
    `data.labels_from` with its `filename_pattern` (see `imgpipe.data.filenames`)."""

    task: str = "auto"  # auto | multiclass | multilabel
    annotations: str | None = None  # annotation file or folder inside the source; None = detect
    image_column: str | None = None
    labels_column: str | None = None
    labels_from: str = DataParams.labels_from  # folders | filename
    filename_pattern: str | None = None  # labels_from filename: a regex with a `label` or `sequence` group


def download(
    source: str,
    out: Path,
    sha256: str | None = None,
    limit: int | None = None,
    labels: LabelOptions = LabelOptions(),
    report_dir: Path | None = None,
    max_extract_gb: float = DataParams.max_extract_gb,
    for_training: bool = True,
) -> Report:
    """Write the dataset named by `source` into `out` and, if given, the report into `report_dir`.

    Single-label data becomes `out/<class>/<image>` plus `out/sources.csv`; multi-label data
    becomes `out/images/...` plus `out/labels.csv` (see `imgpipe.data.labelsets`). Files that are
    not usable images are skipped and reported (see `imgpipe.data.ingest`). With `limit`, only the
    first `limit` images of each class (multi-label: in total), in name order, are kept. Data a
    classifier cannot learn from (one class) is refused. Both outputs are replaced together, or
    not at all.
    """
    report = Report(source)
    pattern = check_label_options(source, labels)
    with staged_outputs() as staged, tempfile.TemporaryDirectory(prefix="imgpipe-download-") as work:
        tmp = staged.folder(out)
        if source.startswith("builtin:"):
            root, table = write_builtin(source, Path(work), labels.task)
        elif source.startswith(("http://", "https://", "file://")):
            root, table = fetch_archive(source, Path(work), sha256, int(max_extract_gb * GB)), None
        else:
            root, table = check_folder(Path(source)), None
        images = None
        if pattern is not None:
            found = scan_named_images(root, pattern, report)
            if is_sequence(pattern):
                table = as_sequence_table(found, report)
            else:
                images = as_class_images(found)
        else:
            if table is None and labels.task != "multiclass":
                table = read_annotated(root, labels, report)
            if table is not None:
                table = scan_table(root, table, report)
            else:
                images = scan_class_folders(root, report)
        if table is not None:
            write_table(root, table.sort_values("path").head(limit) if limit else table, tmp, report)
        else:
            images = keep_first_per_class(images, limit) if limit else images
            if labels.task == "multilabel":  # one positive label per image
                write_table(root, class_folders_as_table(images), tmp, report)
            else:
                write_class_folders(root, images, tmp, report)
        if for_training:  # one class is a fine set to score a model on, not to train one
            check_learnable(source, labels, report)
        write_files_list(tmp)
        if report_dir is not None:
            report.write(staged.folder(report_dir))
    return report


def check_label_options(source: str, labels: LabelOptions) -> re.Pattern[str] | None:
    """The compiled `data.filename_pattern` when labels come from file names, else None; a
    UserError for settings that contradict each other."""
    if labels.labels_from != "filename":
        return None
    if labels.filename_pattern is None:
        raise UserError("data.filename_pattern: null, but data.labels_from is filename; set a regex, e.g. "
                        + PATTERN_EXAMPLES)
    pattern = compile_pattern(labels.filename_pattern)
    if source.startswith("builtin:"):
        raise UserError(f"data.labels_from: filename reads your own files, not '{source}'; set it to folders")
    if labels.annotations is not None:
        raise UserError("data.annotations is set but data.labels_from is filename; set one of them")
    if is_sequence(pattern) and labels.task == "multiclass":
        raise UserError("data.filename_pattern: a (?P<sequence>...) group gives one label per character "
                        "(multi-label); set task to auto or multilabel, or use a (?P<label>...) group")
    return pattern


def check_learnable(source: str, labels: LabelOptions, report: Report) -> None:
    """Refuse one class (or, multi-label, the same labels on every image): training would reach
    accuracy 1.0 and mean nothing. Usually data.source points one folder too deep."""
    if report.multilabel and any(0 < n < report.images for n in report.counts.values()):
        return
    if not report.multilabel and len(report.counts) != 1:
        return
    if report.multilabel:
        carried = " ".join(name for name, n in report.counts.items() if n) or "no label"
        raise UserError(
            f"data.source: '{source}': all {report.images} images carry the same labels ({carried}), so there "
            "is nothing to learn; a label needs images with it and images without it"
        )
    (name, n), = report.counts.items()
    if labels.labels_from == "filename":
        raise UserError(
            f"data.filename_pattern: every matching file name under '{source}' gives the class '{name}' "
            f"({n} images); a classifier needs two or more classes: check the pattern's label group"
        )
    raise UserError(
        f"data.source: '{source}' has one class folder ('{name}', {n} images); a classifier needs two or "
        "more: point data.source at the folder holding one sub-folder per class"
    )


def write_builtin(source: str, work: Path, task: str) -> tuple[Path, pd.DataFrame | None]:
    """Generate a builtin dataset in `work`: (its root, its label table or None for class folders)."""
    root = work / "builtin"
    root.mkdir()
    if source in BUILTIN_SINGLE_LABEL:
        write_builtin_digits(root, BUILTIN_SINGLE_LABEL[source])
        return root, None
    if source not in BUILTIN_MULTILABEL:
        names = ", ".join([*BUILTIN_SINGLE_LABEL, *BUILTIN_MULTILABEL])
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
    skip_unlisted(src, set(table["path"]), resolve_annotations(src, labels.annotations), report)
    return table


def skip_unlisted(src: Path, listed: set[str], annotations: Path, report: Report) -> None:
    """Report every file beside the annotations that is not one of the `listed` images: OS junk
    (`._x.jpg`), files that are not images, and images no annotation names."""
    for path in list_files(src):
        origin = source_name(path, src)  # as `listed` names it
        if origin in listed or path == annotations or annotations in path.parents:
            continue
        if reason := junk_reason(origin):
            report.skip(origin, reason)
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            report.skip(origin, UNLISTED)
        else:  # an image without an image extension is not looked up by the annotations either
            try:
                inspect_image(path)
                report.skip(origin, UNLISTED)
            except OSError as err:
                report.skip(origin, str(err) if isinstance(err, UnreadableImage) else f"cannot read file ({err})")


def has_class_folders(src: Path) -> bool:
    return any(d.is_dir() and not d.name.startswith(".") and list_images(d) for d in src.iterdir())


def long_tail(label: int) -> float:
    """`builtin:digits-imbalanced`: the share of its class's scans digit `label` keeps, 10^(-label/9):
    every 0 (178), then a constant ratio down to a tenth of the 9s (18 of 180)."""
    return 10 ** (-label / 9)


MISLABELLED_SHARE = 0.05  # `builtin:digits-mislabelled`: the share of the scans filed under a wrong digit
MISLABELLED_SEED = 0  # fixed: the same scans are wrong on every machine, so a finder can be scored


def mislabelled_scans(labels: np.ndarray, share: float = MISLABELLED_SHARE, seed: int = MISLABELLED_SEED) -> dict[int, int]:
    """`builtin:digits-mislabelled`: scan index -> the wrong digit it is filed under, for a random
    `share` of the scans whose true digits are `labels` (N,); each wrong digit drawn from the other nine."""
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(labels), round(share * len(labels)), replace=False).tolist())
    return {i: int(rng.choice([d for d in range(10) if d != labels[i]])) for i in chosen}


def mislabelled_digits() -> dict[str, int]:
    """The file name of every scan `builtin:digits-mislabelled` files under a wrong digit -> its
    true digit: the answer key a label-issue finder is scored against (docs/cross-validation.md)."""
    from sklearn.datasets import load_digits

    labels = load_digits().target
    return {scan_name(i): int(labels[i]) for i in mislabelled_scans(labels)}


@dataclass(frozen=True)
class Digits:
    """A single-label builtin made of scikit-learn's digits."""

    keep: Callable[[int], float] | None = None  # per digit, the share of its scans kept (the first ones)
    mislabelled: bool = False  # file MISLABELLED_SHARE of the scans under a wrong digit (`mislabelled_scans`)


BUILTIN_SINGLE_LABEL: dict[str, Digits] = {
    "builtin:digits": Digits(),
    "builtin:digits-imbalanced": Digits(keep=long_tail),
    "builtin:digits-mislabelled": Digits(mislabelled=True),
}


def scan_name(index: int) -> str:
    return f"{index:04d}.png"


def write_builtin_digits(out: Path, variant: Digits = Digits()) -> None:
    """scikit-learn's 1,797 real handwritten digits as PNGs, one folder per class; a `variant`
    keeps a share of each digit's scans or files some under a wrong digit."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    kept = np.ones(len(digits.target), dtype=bool)
    if variant.keep is not None:
        for label in np.unique(digits.target):
            scans = np.flatnonzero(digits.target == label)
            kept[scans[round(variant.keep(int(label)) * len(scans)):]] = False
    filed = dict(enumerate(digits.target.tolist())) | (mislabelled_scans(digits.target) if variant.mislabelled else {})
    for i, pixels in enumerate(digits.images):
        if not kept[i]:
            continue
        ink = (pixels / 16.0 * 255).round().astype(np.uint8)  # (8, 8), white ink on black
        img = Image.fromarray(ink, mode="L").resize(
            (BUILTIN_DIGITS_SIZE, BUILTIN_DIGITS_SIZE), Image.Resampling.BICUBIC
        )
        folder = out / str(filed[i])
        folder.mkdir(exist_ok=True)
        img.save(folder / scan_name(i))


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
