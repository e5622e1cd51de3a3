"""The augment stage: rotated, inverted and sheared copies of every original image.

The copies go into a few tar shards (`imgpipe.data.shards`), not one file each: DVC pays per
file, on every push, pull and `dvc repro`. Every image a later stage reads, original or copy, is
a row of `manifest.csv` with its class, its source image, the transform that made it, where its
bytes are and their md5. The split stage keeps all copies of a source together and passes these
columns on to `data/annotations.csv`, so the stages that read images depend on that one file
instead of DVC hashing the images once for each. A sample sheet (a few sources beside their
copies) goes to a separate, small folder that git holds (`metrics/augment`), not to the cache.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from imgpipe.core.atomic import staged_outputs
from imgpipe.core.errors import UserError
from imgpipe.core.layout import LABEL, LABELS_FILE, MANIFEST, SAMPLES, SOURCES_FILE, SPLIT_ON_DISK
from imgpipe.core.params import AugmentParams
from imgpipe.core.progress import progress
from imgpipe.data.labelsets import label_columns, positive_labels
from imgpipe.data.pictures import sample_sheet
from imgpipe.data.readers import escape_name, list_images, open_image, unsafe_in_tables
from imgpipe.data.shards import ShardWriter, shard_count, shard_name

SAMPLE_ROWS = 4  # sources in the sample sheet: few, so the committed PNG stays small
ESTIMATE_FROM = 16  # sources whose copies' size sets the shard count


@dataclass(frozen=True)
class Variant:
    folder: str  # copies are named <folder>/<source>.png
    transform: str  # recorded in the manifest
    apply: Callable[[Image.Image], Image.Image]


def augment_dataset(
    raw: Path, out: Path, params: AugmentParams, seed: int, samples: Path | None = None
) -> pd.DataFrame:
    """Write the variants of every image of the download stage's output to shards under `out`.

    Returns the manifest: one row per image a later stage reads (each original, then its
    variants) with `path` (a unique name: `original/<source>`, `<variant>/<source>.png`), its
    labels (`label`, or `group` and the `label:<name>` columns of a multi-label dataset),
    `source`, `transform`, where its bytes are (`file` relative to `out`, `offset`, `size`) and
    `md5` (of those bytes). Originals stay where they are, in `raw`: a copy would be a second
    object to store and move. With `samples` (a folder: `metrics/augment` in the pipeline),
    dvclive's `plots/images/samples.png` there shows SAMPLE_ROWS sources beside their variants;
    both folders are replaced together, once complete.
    """
    raw, out = Path(raw), Path(out)
    items = labelled_images(raw)
    if not items:
        raise UserError(f"{raw}: no images to augment; run the download stage first")
    made = (copies_of(raw, source, labels, params, seed) for source, labels in progress(items, desc="augment"))
    # The shard count comes from the bytes the copies will take: the sources' bytes, scaled by
    # what the first few sources' copies took (PNG copies of JPEGs take several times more).
    first = list(itertools.islice(made, ESTIMATE_FROM))
    scale = sum(len(c.data) for s in first for c in s.copies) / sum(len(s.data) for s in first)
    shards = shard_count(round(scale * sum((raw / source).stat().st_size for source, _ in items)))
    raw_from_out = Path(os.path.relpath(raw, out))
    shown = sample_sources(items)
    sheet: list[tuple[str, list[tuple[str, Image.Image]]]] = []
    rows = []
    with staged_outputs() as staged:
        tmp = staged.folder(out)
        with ShardWriter(tmp) as writer:
            for source in itertools.chain(first, made):
                where = {"file": (raw_from_out / source.path).as_posix(), "offset": 0, "size": len(source.data)}
                rows.append({"path": f"original/{source.path}", **source.labels, "source": source.path,
                             "transform": "original", **where, "md5": _md5(source.data)})
                shard = shard_name(source.path, shards)
                for copy in source.copies:
                    offset, size = writer.add(shard, copy.name, copy.data)
                    rows.append({"path": copy.name, **source.labels, "source": source.path, "transform": copy.transform,
                                 "file": shard, "offset": offset, "size": size, "md5": _md5(copy.data)})
                if source.path in shown:
                    sheet.append((f"{shown[source.path]}: {source.path}", [("original", source.image)] +
                                  [(c.transform, c.image) for c in source.copies]))
        if samples is not None:  # dvclive's layout for images (log_image), so `dvc plots show` lists it with the others
            images = staged.folder(samples) / "plots" / "images"
            images.mkdir(parents=True)
            sample_sheet(sheet).save(images / SAMPLES)
        manifest = pd.DataFrame(rows)
        manifest.to_csv(tmp / MANIFEST, index=False)
    return manifest


@dataclass(frozen=True)
class Copy:
    name: str  # <variant folder>/<source>.png: unique whatever the source names (a.png beside a.jpg)
    transform: str
    image: Image.Image
    data: bytes  # the PNG


@dataclass(frozen=True)
class Source:
    path: str  # relative to the raw folder
    labels: dict
    data: bytes  # the file as it is
    image: Image.Image  # decoded, at most max_side
    copies: list[Copy]


def copies_of(raw: Path, path: str, labels: dict, params: AugmentParams, seed: int) -> Source:
    """One source image and its copies; random choices are seeded by `seed` and the path."""
    rng = np.random.default_rng([seed, zlib.crc32(path.encode())])
    original = open_image(raw / path, max_side=params.max_side)
    copies = []
    for variant in variants(params, rng):
        image = variant.apply(original)
        copies.append(Copy(f"{variant.folder}/{path}.png", variant.transform, image, _png(image)))
    return Source(path, labels, (raw / path).read_bytes(), original, copies)


def labelled_images(raw: Path) -> list[tuple[str, dict]]:
    """(path relative to `raw`, label fields) for every image the download stage wrote.

    Class folders give `label` (the folder), `group` (shared by byte-identical copies) and
    `split_on_disk` from `sources.csv`; a multi-label `labels.csv` gives its group and 0/1
    label columns.
    """
    labels_file = raw / LABELS_FILE
    if labels_file.is_file():
        table = pd.read_csv(labels_file, dtype=str, keep_default_na=False)
        fields = ["group", *label_columns(table)]
        return [(row["path"], {k: row[k] for k in fields}) for row in table.to_dict("records")]
    sources_file = raw / SOURCES_FILE
    if not sources_file.is_file():  # class folders written by hand: every image its own group
        paths = [p.relative_to(raw).as_posix() for p in list_images(raw)]
        for path in paths:  # the manifest names each file as it is on disk: only names a table can hold
            if unsafe_in_tables(path):
                raise UserError(
                    f"{raw}: the name '{escape_name(path)}' (escaped) is not UTF-8 or holds a control character, which "
                    "the manifest cannot hold; run the download stage on that folder, which copies it under the escaped name"
                )
        return [(p, {LABEL: p.split("/")[0], "group": p, SPLIT_ON_DISK: ""}) for p in paths]
    table = pd.read_csv(sources_file, dtype=str, keep_default_na=False)
    return [
        (row["path"], {LABEL: row["path"].split("/")[0], "group": row["group"], SPLIT_ON_DISK: row["split"]})
        for row in table.to_dict("records")
    ]


def sample_sources(items: list[tuple[str, dict]]) -> dict[str, str]:
    """Up to SAMPLE_ROWS sources for the sample sheet, with a caption: the first of each of the
    first classes, or (multi-label) the first ones, captioned with their labels."""
    chosen: dict[str, str] = {}
    for source, labels in items:
        if LABEL not in labels:
            chosen[source] = " ".join(positive_labels(labels))
        elif labels[LABEL] not in chosen.values():
            chosen[source] = labels[LABEL]
        if len(chosen) == SAMPLE_ROWS:
            break
    return chosen


def _md5(data: bytes) -> str:
    """The md5 of an image's bytes (what DVC would hash for it as a file)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def variants(params: AugmentParams, rng: np.random.Generator) -> list[Variant]:
    """The transforms applied to one image; random ones draw from `rng` (seeded per image)."""
    out = [
        Variant(f"rot{angle:g}", f"rotate({angle:g})", lambda img, a=angle: rotate(img, a))
        for angle in params.rotations
    ]
    if params.invert:
        out.append(Variant("invert", "invert", ImageOps.invert))
    if params.shear > 0:
        angle = float(rng.uniform(-params.shear, params.shear))
        out.append(Variant("shear", f"shear({angle:.2f})", lambda img: shear(img, angle)))
    return out


def background(img: Image.Image) -> int | tuple[int, ...]:
    """The median colour of the image border, used to fill corners uncovered by a transform."""
    arr = np.asarray(img)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])  # (N,) or (N, C)
    median = np.median(border, axis=0).round().astype(int)
    return int(median) if median.ndim == 0 else tuple(median.tolist())


def rotate(img: Image.Image, degrees: float) -> Image.Image:
    """Rotate counter-clockwise about the centre, keeping the size."""
    return img.rotate(degrees, resample=Image.Resampling.BILINEAR, fillcolor=background(img))


def shear(img: Image.Image, degrees: float) -> Image.Image:
    """Horizontal shear about the image centre, keeping the size."""
    k = math.tan(math.radians(degrees))
    cy = img.height / 2
    # Output (x, y) samples input (x + k*(y - cy), y).
    return img.transform(
        img.size,
        Image.Transform.AFFINE,
        (1, k, -k * cy, 0, 1, 0),
        resample=Image.Resampling.BILINEAR,
        fillcolor=background(img),
    )
