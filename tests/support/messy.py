"""A messy real-world dataset, written file by file: every odd case the download stage must take.

`write_messy_dataset(root)` builds `Training/`, `Validation/`, `test/` folders (the split the
dataset ships with) above three class folders, and puts in them images in every extension case,
mode and oddity, plus files that must be skipped. `EXPECTED` says what the download report must
say about each odd file.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from support.datasets import draw_shape

CLASSES = {"cat": "circle", "dog": "cross", "bird": "square"}  # class -> the shape its images show
SPLITS = {"Training": 8, "Validation": 2, "test": 3}  # folder -> plain images per class


def shape_image(kind: str, seed: int, size: int = 40, mode: str = "RGB") -> Image.Image:
    """A learnable image: the class's shape in white on a dark noisy background."""
    return draw_shape(kind, size, np.random.default_rng(seed)).convert(mode)


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def cmyk_jpeg_without_adobe_marker(img: Image.Image) -> bytes:
    """A CMYK JPEG holding plain (non-inverted) CMYK and no Adobe APP14 segment.

    Pillow writes CMYK inverted with an Adobe marker; saving the inverted image and dropping
    the marker leaves the plain values of `img` in the file, as other encoders write them.
    """
    cmyk = Image.fromarray(255 - np.asarray(img.convert("CMYK")), mode="CMYK")
    data = encode(cmyk, "JPEG", quality=95)
    out, i = bytearray(data[:2]), 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        segment = data[i : i + 2 + length]
        if marker == 0xDA:  # start of scan: the rest is image data
            return bytes(out + data[i:])
        if not (marker == 0xEE and segment[4:9] == b"Adobe"):
            out += segment
        i += 2 + length
    raise AssertionError("no scan data")


def exif_rotated_jpeg(img: Image.Image) -> bytes:
    """`img` stored sideways (rotated 90 degrees clockwise) with EXIF Orientation 6, as phones do."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif.tobytes())


def sixteen_bit_png(img: Image.Image) -> bytes:
    deep = (np.asarray(img.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    return encode(Image.fromarray(deep), "PNG")


def odd_images(kind: str) -> dict[str, bytes]:
    """Usable images of one class, one per oddity: name -> bytes."""
    img = shape_image(kind, seed=100)
    big = shape_image(kind, seed=101, size=400).resize((4200, 3000), Image.Resampling.BILINEAR)
    full_jpeg = encode(shape_image(kind, seed=102), "JPEG", quality=90)
    rgba = img.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.full((40, 40), 128, np.uint8)))
    return {
        "IMG_0001.JPG": encode(img, "JPEG", quality=90),
        "photo (1).Jpeg": encode(shape_image(kind, 103), "JPEG", quality=90),
        "really a png.jpg": encode(shape_image(kind, 104), "PNG"),
        "scan_no_extension": encode(shape_image(kind, 105), "PNG"),
        "palette.gif": encode(shape_image(kind, 106).convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
        "alpha.PNG": encode(rgba, "PNG"),
        "grey_alpha.png": encode(shape_image(kind, 107, mode="L").convert("LA"), "PNG"),
        "cmyk.jpg": cmyk_jpeg_without_adobe_marker(shape_image(kind, 108)),
        "deep16.png": sixteen_bit_png(shape_image(kind, 109)),
        "sideways.jpg": exif_rotated_jpeg(shape_image(kind, 110)),
        "huge.jpg": encode(big, "JPEG", quality=80),
        "tiny.png": encode(shape_image(kind, 111, size=12), "PNG"),
        "progressive.jpg": encode(shape_image(kind, 112), "JPEG", quality=90, progressive=True),
        "no end marker.jpg": full_jpeg[:-2],
        "bitmap.bmp": encode(shape_image(kind, 113), "BMP"),
        "web.webp": encode(shape_image(kind, 114), "WEBP", lossless=True),
        "scan.TIF": encode(shape_image(kind, 115), "TIFF"),
        "café ünïcode.png": encode(shape_image(kind, 116), "PNG"),
    }


def junk_files(seed: int) -> dict[str, bytes]:
    """Files that must be skipped, each for its own reason: name -> bytes."""
    rng = np.random.default_rng(seed)
    jpeg = encode(shape_image("circle", 120), "JPEG", quality=90)
    return {
        "zero.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "noise.png": rng.bytes(3000),
        "notes.xlsx": b"PK\x03\x04" + rng.bytes(300),
        "readme.txt": b"cats, as you can see\n",
        ".DS_Store": rng.bytes(100),
        "Thumbs.db": rng.bytes(100),
        "._IMG_0001.JPG": b"\x00\x05\x16\x07" + rng.bytes(100),
    }


def write_messy_dataset(root: Path) -> Path:
    """Write the dataset under `root`; returns `root`."""
    seed = 0
    for split, count in SPLITS.items():
        for label, kind in CLASSES.items():
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                seed += 1
                # The same file names in every class and split folder.
                shape_image(kind, seed).save(folder / f"{i:03d}.png")
    for label, kind in CLASSES.items():
        for name, data in odd_images(kind).items():
            (root / "Training" / label / name).write_bytes(data)
    for name, data in junk_files(1).items():
        (root / "Training" / "dog" / name).write_bytes(data)
    (root / "__MACOSX" / "Training" / "cat").mkdir(parents=True)
    (root / "__MACOSX" / "Training" / "cat" / "._IMG_0001.JPG").write_bytes(os.urandom(80))
    # Byte-identical copies: one shipped in train and test (kept apart, as shipped, and flagged),
    # one filed under two classes (a conflict).
    (root / "test" / "cat" / "copy of 000.png").write_bytes((root / "Training" / "cat" / "000.png").read_bytes())
    (root / "Training" / "bird" / "dog_or_bird.png").write_bytes((root / "Training" / "dog" / "001.png").read_bytes())
    return root


SKIPPED = {
    "Training/dog/zero.jpg": "empty",
    "Training/dog/truncated.jpg": "truncated",
    "Training/dog/noise.png": "not an image",
    "Training/dog/notes.xlsx": "not an image",
    "Training/dog/readme.txt": "not an image",
    "Training/dog/.DS_Store": "macOS",
    "Training/dog/Thumbs.db": "Windows",
    "Training/dog/._IMG_0001.JPG": "AppleDouble",
    "__MACOSX/Training/cat/._IMG_0001.JPG": "macOS",
}
CONVERTED_MODES = {"CMYK", "I;16", "LA", "P", "RGBA"}  # each once per class
PLAIN_PER_CLASS = sum(SPLITS.values())
