"""The one image reader every stage uses, so train, evaluate and predict see identical pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def is_image_file(path: Path) -> bool:
    """True for a visible file with an image extension (any case)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """All image files under `folder`, recursively, in a stable sorted order."""
    return sorted(p for p in Path(folder).rglob("*") if is_image_file(p))


def open_image(path: Path) -> Image.Image:
    """Decode an image upright (EXIF orientation applied), as 'L' or 'RGB'."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("L", "RGB"):
            return img.copy()
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit greyscale: scale to 8 bit instead of clipping.
            arr = np.asarray(img, dtype=np.float64)
            peak = 65535.0 if arr.max() > 255 else 255.0
            return Image.fromarray((arr / peak * 255).round().astype(np.uint8), mode="L")
        if "A" in img.getbands() or img.mode == "P":
            rgba = img.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return img.convert("RGB")


def load_pixels(path: Path, size: int, channels: int) -> np.ndarray:
    """Read `path` as a uint8 array of shape (channels, size, size)."""
    img = open_image(path).convert("L" if channels == 1 else "RGB")
    img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)  # (C, H, W)
