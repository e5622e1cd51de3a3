"""Offline multi-label datasets composed from scikit-learn's 1,797 real handwritten digit scans.

Each composite image draws its digits from one of `GROUPS` disjoint sets of digit instances and
carries that set's id as its `group`, so a split by group never shows a test image a digit
instance that a training image used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image

from imgpipe.core.layout import IMAGES_DIR
from imgpipe.data.labelsets import make_table

GROUPS = 60  # ~30 digit instances each, ~3 per class
CANVAS = 64
POSITIONS = 5  # multidigit: at most five digits in a row
DIGITS = [str(d) for d in range(10)]
MULTIDIGIT_LABELS = [f"p{i}={v}" for i in range(1, POSITIONS + 1) for v in [*DIGITS, "blank"]]
BLANK = 10  # index of `blank` within one position's 11 labels
QUADRANT = CANVAS // 2


class Placement(NamedTuple):
    """One digit instance drawn at (x, y) with the given size on the canvas."""

    instance: int
    x: int
    y: int
    width: int
    height: int


Layout = Callable[[np.ndarray, np.random.Generator], list[Placement]]
Encode = Callable[[np.ndarray], np.ndarray]


def load_digit_scans() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 8, 8) uint8 scans, white ink on black, and their (1797,) digit classes."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    scans = (digits.images / 16.0 * 255).round().astype(np.uint8)  # (1797, 8, 8)
    return scans, digits.target.astype(np.int64)


def partition_instances(labels: np.ndarray, groups: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Split instance indices into `groups` disjoint sets, each holding about the same number of every class.

    Instances are shuffled within their class, laid out class by class, then dealt round-robin.
    """
    labels = np.asarray(labels)
    order = np.concatenate([rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)])  # (N,)
    return [np.sort(order[g::groups]) for g in range(groups)]


MAX_LEFT_MARGIN = 4  # px


def multidigit_layout(members: np.ndarray, rng: np.random.Generator) -> list[Placement]:
    """1 to 5 distinct instances of `members` side by side from the left margin, roughly centred vertically."""
    n = int(rng.integers(1, POSITIONS + 1))
    instances = rng.choice(members, n, replace=False)  # (n,)
    widths = rng.integers(10, 13, n)  # (n,)
    heights = rng.integers(14, 19, n)  # (n,)
    gaps = rng.integers(0, 2, n - 1)  # (n-1,)
    # Written from the left margin, like a number: position i is the i-th digit from the left
    # and sits in roughly the same place in every image (a few px of jitter).
    x0 = rng.integers(0, min(MAX_LEFT_MARGIN, CANVAS - (widths.sum() + gaps.sum())) + 1)
    xs = x0 + np.concatenate([[0], np.cumsum(widths[:-1] + gaps)])  # (n,)
    ys = np.clip((CANVAS - heights) // 2 + rng.integers(-6, 7, n), 0, CANVAS - heights)  # (n,)
    return [Placement(*map(int, row)) for row in zip(instances, xs, ys, widths, heights, strict=True)]


def digit_tags_layout(members: np.ndarray, rng: np.random.Generator) -> list[Placement]:
    """0 to 4 distinct instances of `members`, each square and inside its own 32x32 quadrant."""
    n = int(rng.integers(0, 5))
    instances = rng.choice(members, n, replace=False)  # (n,)
    cells = rng.choice(4, n, replace=False)  # (n,) quadrant index, row-major
    sizes = rng.integers(16, 25, n)  # (n,)
    xs = (cells % 2) * QUADRANT + rng.integers(0, QUADRANT - sizes + 1)  # (n,)
    ys = (cells // 2) * QUADRANT + rng.integers(0, QUADRANT - sizes + 1)  # (n,)
    return [Placement(*map(int, row)) for row in zip(instances, xs, ys, sizes, sizes, strict=True)]


def plan_images(
    labels: np.ndarray, seed: int, images: int, layout: Layout
) -> tuple[list[np.ndarray], np.ndarray, list[list[Placement]]]:
    """The instance groups, each image's (images,) group index and its placements; no pixels yet."""
    rng = np.random.default_rng(seed)
    members = partition_instances(labels, GROUPS, rng)
    # Groups take turns, so the first N images (data.limit) still span every group and split.
    group_of = np.arange(images) % GROUPS  # (images,)
    return members, group_of, [layout(members[g], rng) for g in group_of]


def compose(scans: np.ndarray, placements: list[Placement]) -> np.ndarray:
    """(64, 64) uint8 canvas with each upsampled scan maxed in, so digits never erase each other."""
    canvas = np.zeros((CANVAS, CANVAS), np.uint8)
    for p in placements:
        glyph = Image.fromarray(scans[p.instance]).resize((p.width, p.height), Image.Resampling.BICUBIC)
        region = canvas[p.y : p.y + p.height, p.x : p.x + p.width]  # (height, width) view
        np.maximum(region, np.asarray(glyph), out=region)
    return canvas


def encode_positions(classes: np.ndarray) -> np.ndarray:
    """(55,) one-hot per position: the i-th digit from the left, `blank` after the last."""
    values = np.full(POSITIONS, BLANK)
    values[: len(classes)] = classes
    targets = np.zeros((POSITIONS, len(DIGITS) + 1), np.uint8)  # (5, 11)
    targets[np.arange(POSITIONS), values] = 1
    return targets.reshape(-1)


def encode_present(classes: np.ndarray) -> np.ndarray:
    """(10,) 1 for every digit class that appears at least once."""
    targets = np.zeros(len(DIGITS), np.uint8)
    targets[classes] = 1
    return targets


def write_composites(
    out: Path, seed: int, images: int, layout: Layout, labels: list[str], encode: Encode
) -> pd.DataFrame:
    """Render the planned images to `out/images/<i>.png` and return their label table."""
    scans, classes = load_digit_scans()
    _, group_of, plans = plan_images(classes, seed, images, layout)
    (Path(out) / IMAGES_DIR).mkdir(exist_ok=True)
    paths = [f"{IMAGES_DIR}/{i:05d}.png" for i in range(images)]
    targets = np.zeros((images, len(labels)), np.uint8)  # (images, K)
    for i, placements in enumerate(plans):
        Image.fromarray(compose(scans, placements), mode="L").save(Path(out) / paths[i])
        targets[i] = encode(classes[[p.instance for p in placements]])
    return make_table(paths, labels, targets, [f"g{g:02d}" for g in group_of])


def write_multidigit(out: Path, seed: int = 0, images: int = 4800) -> pd.DataFrame:
    """Rows of 1 to 5 real digits; labels `p{i}={0..9|blank}` say which digit sits at each position."""
    return write_composites(out, seed, images, multidigit_layout, MULTIDIGIT_LABELS, encode_positions)


def write_digit_tags(out: Path, seed: int = 0, images: int = 4000) -> pd.DataFrame:
    """0 to 4 scattered real digits; labels `0`..`9` say which digits appear."""
    return write_composites(out, seed, images, digit_tags_layout, DIGITS, encode_present)


BUILTIN_MULTILABEL: dict[str, Callable[[Path], pd.DataFrame]] = {
    "builtin:multidigit": write_multidigit,
    "builtin:digit-tags": write_digit_tags,
}
