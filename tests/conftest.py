"""Shared fixtures: tiny real image datasets written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture
def shapes_dir(tmp_path: Path) -> Path:
    return write_shapes_dataset(tmp_path / "shapes")
