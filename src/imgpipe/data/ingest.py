"""Take a user's image folder as it is: keep every image that decodes, skip the rest with a reason.

Used by the download stage for every source (builtin, archive, folder). The source is only read.
It decides, and reports in `metrics/download/report.json` (totals in `metrics.json` beside it):

- which files are images, by content (a PNG named `.jpg` is an image; `notes.txt`, `.DS_Store`,
  `Thumbs.db`, `._x.jpg`, `__MACOSX/` and undecodable bytes are skipped, each with its reason);
- the class of each image (its folder below the dataset root, or below `train/`, `val/`, `test/`
  folders when the dataset ships already split; the on-disk split is recorded);
- byte-identical duplicates, which get one `group` so the split stage keeps them together, and
  which are flagged when their labels disagree (the copies leave their groups for one of their
  own; the groups they came from are not merged, so blank images repeated across 60 groups stay
  together without chaining those groups into one);
- which images decode from a mode other than L/RGB (palette, alpha, CMYK, 16-bit) and are
  converted by `imgpipe.data.readers` whenever they are read;
- how each name is written: `imgpipe.data.readers.escape_name`, so a name that is not UTF-8 or
  holds a tab or newline is copied as `caf%E9.png` and recorded so in every table and the report
  (`origin` gives the name back with `unescape_name`; the copies are read from the real names).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from imgpipe.core.errors import UserError
from imgpipe.core.layout import FILES_LIST, IMAGES_DIR, LABELS_FILE, METRICS_FILE, REPORT_FILE, SOURCES_FILE
from imgpipe.core.progress import progress
from imgpipe.data.archives import file_sha256
from imgpipe.data.labelsets import label_matrix, label_names, make_table, natural_sorted
from imgpipe.data.readers import (
    IMAGE_EXTENSIONS,
    ImageInfo,
    UnreadableImage,
    escape_name,
    inspect_image,
    is_image_file,
    junk_reason,
    unescape_name,
    unsafe_in_tables,
)

SPLIT_FOLDERS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}  # fmt: skip
PLAIN_MODES = ("L", "RGB")
EXAMPLES = 20  # files listed per converted mode in the report
FORMAT_SUFFIX = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}


@dataclass(frozen=True)
class SourceImage:
    """One usable image of the source."""

    origin: str  # path relative to the source root, as the user named it (`escape_name`d)
    dest: str  # path relative to the download stage's output
    info: ImageInfo
    digest: str  # sha256 of the file's bytes
    label: str = ""  # class (single-label)
    split: str = ""  # train | val | test when the dataset ships split on disk


@dataclass
class Report:
    """What the download stage did with every file; written as `report.json` and `metrics.json`."""

    source: str
    images: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # per class; multi-label: per label
    multilabel: bool = False
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"file", "reason"}
    duplicates: list[dict] = field(default_factory=list)  # {"files", "labels", "conflict"}
    converted: dict[str, list[str]] = field(default_factory=dict)  # file mode -> files
    repaired: list[dict[str, str]] = field(default_factory=list)  # {"file", "repair"}
    renamed: list[dict[str, str]] = field(default_factory=list)  # {"file", "to"}: extension from content
    escaped: list[str] = field(default_factory=list)  # images whose names `escape_name` changed
    splits_on_disk: dict[str, int] | None = None  # images per on-disk split folder
    notes: list[str] = field(default_factory=list)  # annotation-file anomalies

    @property
    def unit(self) -> str:
        """What `counts` counts."""
        return "labels" if self.multilabel else "classes"

    def skip(self, origin: str, reason: str) -> None:
        self.skipped.append({"file": origin, "reason": reason})

    @property
    def skip_reasons(self) -> Counter[str]:
        return Counter(entry["reason"] for entry in self.skipped)

    @property
    def conflicts(self) -> int:
        return sum(d["conflict"] for d in self.duplicates)

    def as_json(self) -> dict:
        return {
            "source": shown(self.source),
            "images": self.images,
            self.unit: self.counts,
            "skipped_files": len(self.skipped),
            "skipped_by_reason": dict(sorted(self.skip_reasons.items())),
            "duplicate_sets": len(self.duplicates),
            "duplicate_conflicts": self.conflicts,
            "converted_by_mode": {mode: len(files) for mode, files in sorted(self.converted.items())},
            "splits_on_disk": self.splits_on_disk,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            "converted_examples": {mode: files[:EXAMPLES] for mode, files in sorted(self.converted.items())},
            "repaired": self.repaired,
            "renamed": self.renamed,
            "escaped": self.escaped,
            "notes": [shown(note) for note in self.notes],
        }

    def metrics(self) -> dict[str, int]:
        """The totals, for `dvc metrics diff` and `dvc exp show` (the details stay in the report)."""
        return {
            "images": self.images,
            self.unit: len(self.counts),
            "skipped_files": len(self.skipped),
            "duplicate_sets": len(self.duplicates),
            "duplicate_conflicts": self.conflicts,
            "converted_images": sum(len(files) for files in self.converted.values()),
            "repaired_images": len(self.repaired),
            "renamed_images": len(self.renamed),
        }

    def write(self, folder: Path) -> None:
        """`report.json` (everything) and `metrics.json` (the totals) into `folder`."""
        (folder / REPORT_FILE).write_text(json.dumps(self.as_json(), indent=2, ensure_ascii=False) + "\n", "utf-8")
        (folder / METRICS_FILE).write_text(json.dumps(self.metrics(), indent=2) + "\n", "utf-8")

    def summary(self) -> str:
        """One line for the terminal."""
        kind = "labels (multi-label)" if self.multilabel else "classes"
        parts = [f"{self.images} images, {len(self.counts)} {kind}"]
        if self.skipped:
            reasons = ", ".join(f"{n} {r}" for r, n in self.skip_reasons.most_common())
            parts.append(f"skipped {len(self.skipped)} files ({reasons})")
        if self.duplicates:
            parts.append(f"{len(self.duplicates)} duplicate sets ({self.conflicts} with conflicting labels)")
        if self.converted:
            parts.append("converted " + ", ".join(f"{len(f)} {m}" for m, f in sorted(self.converted.items())))
        if self.repaired:
            parts.append(f"repaired {len(self.repaired)}")
        if self.renamed:
            parts.append(f"renamed {len(self.renamed)} (extension from content)")
        if self.escaped:
            parts.append(f"escaped {len(self.escaped)} names (not UTF-8, a control character or %XX)")
        if self.splits_on_disk:
            parts.append("split on disk " + "/".join(f"{s} {n}" for s, n in self.splits_on_disk.items()))
        return "; ".join(parts)


def shown(text: str) -> str:
    """A message or `data.source` for the report: as it is, or `escape_name`d when it holds what
    the JSON file cannot (a `--data` path that is not UTF-8)."""
    return escape_name(text) if unsafe_in_tables(text) else text


def split_folders(root: Path) -> dict[str, str]:
    """`{folder name: split}` when `root` holds train/val/test folders (any case) above the classes.

    Other folders with images beside them make the layout ambiguous: an error.
    """
    dirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not _is_junk_folder(d.name)]
    found = {d.name: SPLIT_FOLDERS[d.name.lower()] for d in dirs if d.name.lower() in SPLIT_FOLDERS}
    if not found:
        return {}
    if len(set(found.values())) < len(found):
        raise UserError(f"data.source: '{root}' has two folders for one split ({', '.join(found)}); merge them")
    others = [d.name for d in dirs if d.name not in found and any(f.is_file() for f in d.rglob("*"))]
    if others:
        raise UserError(
            f"data.source: '{root}' mixes split folders ({', '.join(found)}) with other folders "
            f"({', '.join(others[:5])}); move the class folders into the split folders or out of them all"
        )
    return found


def scan_class_folders(root: Path, report: Report) -> list[SourceImage]:
    """Every usable image of a folder-per-class dataset (maybe split on disk), skipping the rest."""
    splits = split_folders(root)
    class_dirs: dict[str, str] = {}  # class -> its first folder, for the error when it ends up empty
    for top in [root / name for name in splits] or [root]:
        for d in sorted(top.iterdir()):
            where = d.relative_to(root).as_posix()
            if d.is_dir() and not _is_junk_folder(where):
                class_dirs.setdefault(escape_name(d.name), escape_name(where))
    if not class_dirs:
        loose = sum(is_image_file(p) and junk_reason(p.name) is None for p in root.iterdir())
        raise UserError(
            f"data.source: '{root}' has no class sub-folders" + (f" ({loose} images directly inside)" if loose else "")
            + "; point data.source at the folder holding one sub-folder per class: <source>/<class>/<image>"
        )
    images: list[SourceImage] = []
    for path in progress(list_files(root), desc="check images"):
        origin = source_name(path, root)
        parts = PurePosixPath(origin).parts
        split = splits.get(parts[0], "")
        inner = parts[1:] if split else parts  # below the split folder: <class>/...
        if reason := junk_reason(origin):
            report.skip(origin, reason)
        elif splits and not split:  # beside the split folders: a README, a sample submission
            report.skip(origin, "outside the train/val/test folders")
        elif len(inner) == 1:
            report.skip(origin, "not inside a class folder")
        elif found := inspect_file(path, origin, report):
            info, digest = found
            dest = PurePosixPath(inner[0], *parts[:1] if split else (), *inner[1:])  # <class>/[<split>/]...
            images.append(SourceImage(origin, dest.as_posix(), info, digest, label=inner[0], split=split))
    labels = {image.label for image in images}
    for name, where in class_dirs.items():
        if name not in labels:
            raise UserError(
                f"data.source: class folder '{root}/{where}' has no usable images "
                "(the download report lists what was skipped); add images or remove the folder"
            )
    if splits:
        counts = Counter(image.split for image in images)
        report.splits_on_disk = {s: counts[s] for s in ("train", "val", "test") if s in splits.values()}
    return images


def class_folders_as_table(images: list[SourceImage]) -> pd.DataFrame:
    """`task: multilabel` on class folders: a label table with one positive label per image."""
    classes = natural_sorted({image.label for image in images})
    index = {name: k for k, name in enumerate(classes)}
    targets = np.eye(len(classes), dtype=np.uint8)[[index[image.label] for image in images]]
    table = make_table([image.dest for image in images], classes, targets)
    return table.assign(
        origin=[image.origin for image in images],
        digest=[image.digest for image in images],
        info=[image.info for image in images],
    )


def scan_table(root: Path, table: pd.DataFrame, report: Report) -> pd.DataFrame:
    """Drop the multi-label table's rows whose image is unusable; add `origin` (the path in the
    source), `digest` and `info` columns."""
    keep, digests, infos = [], [], []
    for path in progress(table["path"], desc="check images"):  # `escape_name`d, as labelfiles reads them
        found = inspect_file(root / unescape_name(path), path, report)
        keep.append(found is not None)
        if found:
            infos.append(found[0])
            digests.append(found[1])
    out = table[keep].reset_index(drop=True)
    if out.empty:
        raise UserError(f"data.source: '{root}' has no usable images named by the annotations")
    return out.assign(origin=out["path"], digest=digests, info=infos)


def list_files(top: Path) -> list[Path]:
    return sorted(p for p in top.rglob("*") if p.is_file())


def source_name(path: Path, root: Path) -> str:
    """`path` relative to `root`, as tables and the report name it (`escape_name`)."""
    return escape_name(path.relative_to(root).as_posix())


def escaped_names(origins: Iterable[str]) -> list[str]:
    """The names among `origins` that `escape_name` changed (the report lists them)."""
    return [origin for origin in origins if unescape_name(origin) != origin]


def _is_junk_folder(relative_path: str) -> bool:
    """A folder whose files are all OS metadata (`__MACOSX`, a hidden folder), so never a class."""
    return junk_reason(f"{relative_path}/file") is not None


def inspect_file(path: Path, origin: str, report: Report) -> tuple[ImageInfo, str] | None:
    """(info, sha256) for a usable image; None, with the reason in the report, otherwise."""
    try:
        info = inspect_image(path)
    except UnreadableImage as err:
        report.skip(origin, str(err))
        return None
    except OSError as err:  # unreadable file (permissions, I/O): the user's problem to see
        report.skip(origin, f"cannot read file ({err.strerror or err})")
        return None
    if info.mode not in PLAIN_MODES:
        report.converted.setdefault(info.mode, []).append(origin)
    if info.repaired:
        report.repaired.append({"file": origin, "repair": info.repaired})
    return info, file_sha256(path)


def with_content_suffix(dest: str, info: ImageInfo) -> str:
    """`dest`, plus the extension of its real format when its own extension is not an image's."""
    if PurePosixPath(dest).suffix.lower() in IMAGE_EXTENSIONS:
        return dest
    return dest + FORMAT_SUFFIX.get(info.format, "." + info.format.lower())


def duplicate_sets(digests: Iterable[str]) -> list[list[int]]:
    """Indices of items with equal digests, one list per set of two or more, in first-seen order."""
    seen: dict[str, list[int]] = defaultdict(list)
    for i, digest in enumerate(digests):
        seen[digest].append(i)
    return [members for members in seen.values() if len(members) > 1]


def group_duplicates(groups: Sequence[str], sets: Iterable[list[int]], names: Sequence[str]) -> list[str]:
    """`groups` with each duplicate set in one group: its members' own, or `names[first member]`.

    A set whose members already share a group stays there. A set spanning several groups moves, as
    a whole, into a group of its own named after its first member, and the groups it came from are
    left as they were: merging them instead chains every group that holds one copy of a common
    image (a blank, a placeholder) into one, and the split has nothing left to divide.
    """
    out = list(groups)
    for members in sets:
        if len({groups[i] for i in members}) > 1:
            for i in members:
                out[i] = names[members[0]]
    return out


def keep_first_per_class(images: list[SourceImage], limit: int) -> list[SourceImage]:
    """The first `limit` images of each class in output-path order (`data.limit`)."""
    by_class: dict[str, list[SourceImage]] = defaultdict(list)
    for image in sorted(images, key=lambda im: im.dest):
        by_class[image.label].append(image)
    return [image for members in by_class.values() for image in members[:limit]]


def write_class_folders(root: Path, images: list[SourceImage], out: Path, report: Report) -> None:
    """Copy the images to `out/<class>/...` and write `sources.csv` (origin, group, on-disk split)."""
    images = _renamed(images, report)
    sets = duplicate_sets(image.digest for image in images)
    for members in sets:
        labels = [images[i].label for i in members]
        report.duplicates.append(
            {"files": [images[i].origin for i in members], "labels": labels, "conflict": len(set(labels)) > 1}
        )
    dests = [image.dest for image in images]
    groups = group_duplicates(dests, sets, dests)  # each image is its own group until then
    copy_files(root, [(image.origin, image.dest) for image in images], out)
    pd.DataFrame(
        {
            "path": [image.dest for image in images],
            "origin": [image.origin for image in images],
            "group": groups,
            "split": [image.split for image in images],
        }
    ).to_csv(out / SOURCES_FILE, index=False)
    counts = Counter(image.label for image in images)
    report.escaped = escaped_names(image.origin for image in images)
    report.images = len(images)
    report.counts = {name: counts[name] for name in natural_sorted(list(counts))}


def copy_files(root: Path, pairs: list[tuple[str, str]], out: Path) -> None:
    """Copy each (path in `root`, path in `out`) byte for byte; the source is only read. Both are
    `escape_name`d: the copy keeps the escaped name, the original is read by its real one."""
    for origin, dest in progress(pairs, desc="copy"):
        target = out / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / unescape_name(origin), target)


def _renamed(images: list[SourceImage], report: Report) -> list[SourceImage]:
    """Give images without an image extension (`scan` holding a PNG) the extension of their format."""
    taken = {image.dest for image in images}
    out = []
    for image in images:
        dest = with_content_suffix(image.dest, image.info)
        if dest != image.dest:
            stem, n = dest, 2
            while dest in taken:
                dest = f"{PurePosixPath(stem).with_suffix('')} ({n}){PurePosixPath(stem).suffix}"
                n += 1
            taken.add(dest)
            report.renamed.append({"file": image.origin, "to": dest})
            image = SourceImage(image.origin, dest, image.info, image.digest, image.label, image.split)
        out.append(image)
    return out


def write_table(root: Path, table: pd.DataFrame, out: Path, report: Report) -> None:
    """Copy a multi-label table's images (`origin` in `root`) to `out/images/<path>` and write `labels.csv`.

    Byte-identical images share a group (`group_duplicates`), so they land in one split.
    """
    names = label_names(table)
    targets = label_matrix(table)
    sets = duplicate_sets(table["digest"])
    for members in sets:
        conflict = len({targets[i].tobytes() for i in members}) > 1
        labels = [" ".join(n for n, on in zip(names, targets[i], strict=True) if on) for i in members]
        report.duplicates.append({"files": table["origin"].iloc[members].tolist(), "labels": labels, "conflict": conflict})
    groups = group_duplicates(table["group"].tolist(), sets, table["path"].tolist())
    dests = [with_content_suffix(p, info) for p, info in zip(table["path"], table["info"], strict=True)]
    report.renamed += [{"file": o, "to": d} for o, p, d in zip(table["origin"], table["path"], dests, strict=True) if d != p]
    copy_files(root, [(o, f"{IMAGES_DIR}/{d}") for o, d in zip(table["origin"], dests, strict=True)], out)
    result = make_table([f"{IMAGES_DIR}/{d}" for d in dests], names, targets, [f"{IMAGES_DIR}/{g}" for g in groups])
    result.to_csv(out / LABELS_FILE, index=False)
    report.escaped = escaped_names(table["origin"])
    report.images = len(result)
    report.multilabel = True
    report.counts = dict(zip(names, targets.sum(axis=0).tolist(), strict=True))


def write_files_list(out: Path) -> None:
    """`out/files.csv`: the path and md5 of every other file under `out`, in sorted order.

    The augment stage depends on this one file instead of the folder (dvc.yaml): DVC then checks
    N files once per `dvc repro` (as the download stage's output), not twice.
    """
    paths = sorted(p for p in Path(out).rglob("*") if p.is_file() and p.name != FILES_LIST)
    pd.DataFrame(
        {
            "path": [p.relative_to(out).as_posix() for p in paths],
            "md5": [hashlib.md5(p.read_bytes(), usedforsecurity=False).hexdigest() for p in paths],
        }
    ).to_csv(Path(out) / FILES_LIST, index=False)
