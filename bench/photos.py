"""Realistic benchmark images: JPEG crops of the two real photographs that ship with scikit-learn.

    .venv/bin/python bench/photos.py OUT [--images 2000] [--width 500] [--height 375] [--classes 10]

Constant-colour or noise images decode at unrealistic speeds (JPEG cost depends on content), so
each image is a random crop of `china.jpg` or `flower.jpg` (427x640 camera photos), resized to
width x height, randomly mirrored and with brightness/contrast jitter, saved at JPEG quality 90.
The class is the photo and the region of it the crop is centred in, so the task is learnable.
Class folders `c00`..`c09` (one sub-folder per class, like a Kaggle dataset). Deterministic per seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps
from sklearn.datasets import load_sample_images


def make_photos(out: Path, images: int, width: int = 500, height: int = 375, classes: int = 10, seed: int = 0) -> Path:
    """Write `images` JPEGs into `out/<class>/`; returns `out`. Skips work when already complete."""
    out = Path(out)
    if len(list(out.glob("*/*.jpg"))) == images:
        return out
    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(a) for a in load_sample_images().images]
    regions = classes // len(photos)  # vertical bands per photo
    for k in range(classes):
        (out / f"c{k:02d}").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        k = i % classes
        photo = photos[k // regions]
        band = k % regions
        pw, ph = photo.size
        scale = rng.uniform(0.35, 0.7)
        cw, ch = int(pw * scale), int(pw * scale * height / width)
        ch = min(ch, ph)
        band_w = pw / regions
        cx = rng.uniform(band * band_w, (band + 1) * band_w)
        left = int(np.clip(cx - cw / 2, 0, pw - cw))
        top = int(rng.uniform(0, ph - ch))
        img = photo.crop((left, top, left + cw, top + ch)).resize((width, height), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
        img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.7, 1.3))
        img.save(out / f"c{k:02d}" / f"img{i:06d}.jpg", quality=90)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    make_photos(args.out, args.images, args.width, args.height, args.classes)
    print(f"{args.images} JPEGs of {args.width}x{args.height} in {args.out}")


if __name__ == "__main__":
    main()
