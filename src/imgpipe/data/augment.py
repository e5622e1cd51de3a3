"""The augment stage: every original image plus rotated, inverted and sheared copies.

Each output is recorded in `manifest.csv` with its class, its source image, the transform
that made it and the md5 of its bytes. The split stage keeps all copies of a source together,
and passes the md5 column on to `data/annotations.csv`, so the stages that read images depend
on that one file instead of DVC hashing the 4 x N images of `data/augmented` once for each.
"""

from __future__ import annotations

import functools
import hashlib
import math
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from imgpipe.data.ingest import SOURCES_FILE
from imgpipe.data.labelsets import LABELS_FILE, label_columns
from imgpipe.data.readers import list_images, open_image
from imgpipe.errors import UserError
from imgpipe.outputs import atomic_dir
from imgpipe.params import AugmentParams
from imgpipe.progress import progress

MANIFEST = "manifest.csv"


@dataclass(frozen=True)
class Variant:
    folder: str  # outputs go to <folder>/<class>/<name>.png
    transform: str  # recorded in the manifest
    apply: Callable[[Image.Image], Image.Image]


def augment_dataset(raw: Path, out: Path, params: AugmentParams, seed: int) -> pd.DataFrame:
    """Write originals and variants of every image of the download stage's output to `out`.

    Returns the manifest: one row per output with `path`, its labels (`label`, or `group` and
    the `label:<name>` columns of a multi-label dataset), `source`, `transform` (paths
    relative to `out` and `raw`) and `md5` (of the output file's bytes).
    """
    raw, out = Path(raw), Path(out)
    items = labelled_images(raw)
    if not items:
        raise UserError(f"{raw}: no images to augment; run the download stage first")
    rows = []
    with atomic_dir(out) as tmp:
        for source, labels in progress(items, desc="augment"):
            image = raw / source
            copy = Path("original") / source
            md5 = _write(tmp / copy, functools.partial(shutil.copyfile, image))  # byte for byte
            rows.append({"path": copy.as_posix(), **labels, "source": source, "transform": "original", "md5": md5})
            rng = np.random.default_rng([seed, zlib.crc32(source.encode())])
            original = open_image(image, max_side=params.max_side)
            for variant in variants(params, rng):
                # <transform>/<source>.png keeps every output name unique, whatever the
                # source names (a.png beside a.jpg, or a source already named like a variant).
                path = Path(variant.folder) / f"{source}.png"
                md5 = _write(tmp / path, variant.apply(original).save)
                rows.append({"path": path.as_posix(), **labels, "source": source, "transform": variant.transform, "md5": md5})
        manifest = pd.DataFrame(rows)
        manifest.to_csv(tmp / MANIFEST, index=False)
    return manifest


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
        return [(p, {"label": p.split("/")[0], "group": p, "split_on_disk": ""}) for p in paths]
    table = pd.read_csv(sources_file, dtype=str, keep_default_na=False)
    return [
        (row["path"], {"label": row["path"].split("/")[0], "group": row["group"], "split_on_disk": row["split"]})
        for row in table.to_dict("records")
    ]


def _write(dest: Path, save: Callable[[Path], object]) -> str:
    """Write `dest` with `save`; returns the md5 of its bytes (DVC's hash of the file)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    save(dest)
    return hashlib.md5(dest.read_bytes(), usedforsecurity=False).hexdigest()


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
