"""Tiny real image datasets, written as files: the tests' (and their fixtures') one source of data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def draw_shape(kind: str, size: int, rng: np.random.Generator) -> Image.Image:
    """A white shape on black with random position, size and noise: learnable, not constant."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, size=2))
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "circle":
        draw.ellipse(box, outline=255, width=2)
    elif kind == "square":
        draw.rectangle(box, outline=255, width=2)
    else:  # cross
        draw.line((cx - r, cy, cx + r, cy), fill=255, width=2)
        draw.line((cx, cy - r, cx, cy + r), fill=255, width=2)
    noise = rng.integers(0, 40, size=(size, size), dtype=np.uint8)
    return Image.fromarray(np.maximum(np.asarray(img), noise))


def write_shapes_dataset(root: Path, per_class: int = 10, size: int = 28, seed: int = 0) -> Path:
    """root/<circle|square|cross>/<i>.png: a folder-per-class dataset of real PNG files."""
    rng = np.random.default_rng(seed)
    for kind in ("circle", "cross", "square"):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw_shape(kind, size, rng).save(root / kind / f"{kind}_{i:02d}.png")
    return root


SHAPES = ("circle", "cross", "square")


def write_multilabel_shapes(root: Path, count: int = 36, size: int = 32, seed: int = 0) -> Path:
    """root/images/img_<i>.png with 0 to 3 shapes (one per quadrant) and root/labels.csv with an
    `image,tags` header and space-joined tags: a multi-label dataset of real PNG files."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = ["image,tags"]
    half = size // 2
    for i in range(count):
        present = [kind for kind in SHAPES if rng.random() < 0.5]
        canvas = np.asarray(Image.new("L", (size, size), 0)).copy()
        for kind, (x, y) in zip(present, rng.permutation([(0, 0), (half, 0), (0, half), (half, half)]), strict=False):
            canvas[y : y + half, x : x + half] = np.asarray(draw_shape(kind, half, rng))
        Image.fromarray(canvas).save(root / "images" / f"img_{i:03d}.png")
        rows.append(f"img_{i:03d}.png,{' '.join(present)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def write_photo_dataset(
    root: Path, per_class: int = 8, width: int = 160, height: int = 120, grey: bool = False, seed: int = 0
) -> Path:
    """root/<china|flower>/<i>.jpg: JPEG crops of scikit-learn's two sample photographs (real
    camera photos, as bench/photos.py makes at scale). `grey`: the same crops as grey scans saved
    as RGB JPEGs, so only their pixels say they carry no colour."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    for name, photo in zip(("china", "flower"), load_sample_images().images, strict=True):
        (root / name).mkdir(parents=True, exist_ok=True)
        ph, pw = photo.shape[:2]
        for i in range(per_class):
            left, top = int(rng.integers(0, pw - width)), int(rng.integers(0, ph - height))
            img = Image.fromarray(photo[top : top + height, left : left + width])
            if grey:
                img = img.convert("L").convert("RGB")
            img.save(root / name / f"{name}_{i:02d}.jpg", quality=90)
    return root
