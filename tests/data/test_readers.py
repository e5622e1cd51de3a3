"""The shared image reader on messy real-world files, every one built here with Pillow in tmp_path."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageDraw, JpegImagePlugin

from imgpipe.data.readers import (
    IMAGE_EXTENSIONS,
    ImageInfo,
    UnreadableImage,
    inspect_image,
    is_image_file,
    junk_reason,
    list_images,
    load_pixels,
    open_image,
)

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG", ".bmp": "BMP",
           ".gif": "GIF", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}  # fmt: skip
RED, BLUE = (255, 0, 0), (0, 0, 255)


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    """`img` saved in memory as `fmt`."""
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def noisy_rgb(width: int, height: int, seed: int = 0) -> Image.Image:
    """A gradient with noise: enough entropy-coded data that cutting it anywhere loses pixels."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, np.full(x.shape, 128.0)], axis=-1)
    noise = np.random.default_rng(seed).normal(0, 20, base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def close(actual, expected, tol: int) -> bool:
    return bool(np.all(np.abs(np.asarray(actual, dtype=int) - np.asarray(expected, dtype=int)) <= tol))


def strip_adobe_segment(jpeg: bytes) -> bytes:
    """`jpeg` without its APP14 "Adobe" segment (walks the marker segments up to start-of-scan)."""
    out, pos = bytearray(jpeg[:2]), 2
    while jpeg[pos : pos + 2] != b"\xff\xda":
        end = pos + 2 + int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        if not (jpeg[pos + 1] == 0xEE and jpeg[pos + 4 : pos + 9] == b"Adobe"):
            out += jpeg[pos:end]
        pos = end
    return bytes(out + jpeg[pos:])


# --- which files count as images -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.png", "a.PNG", "a.jpg", "a.JPG", "a.Jpeg", "a.JPEG", "a.jpe", "a.JFIF",
                                  "a.bmp", "a.gif", "a.webp", "a.tif", "a.TIF", "a.tiff", "a.Tiff"])  # fmt: skip
def test_every_extension_in_any_case_is_listed_and_decodes(tmp_path, name):
    path = write(tmp_path / name, encode(Image.new("RGB", (6, 4), (200, 100, 50)), FORMATS[Path(name).suffix.lower()]))
    assert is_image_file(path)
    assert list_images(tmp_path) == [path]
    assert inspect_image(path).format == FORMATS[path.suffix.lower()]
    assert open_image(path).size == (6, 4)


def test_image_extensions_cover_the_jpeg_and_tiff_aliases():
    assert {".jpg", ".jpeg", ".jpe", ".jfif", ".tif", ".tiff"} <= IMAGE_EXTENSIONS


def test_non_image_and_hidden_names_are_not_images(tmp_path):
    for name in ("notes.txt", "data.xlsx", ".hidden.jpg", "._photo.jpg"):
        write(tmp_path / name, b"x")
    assert not any(is_image_file(p) for p in tmp_path.iterdir())


def test_list_images_skips_os_metadata(tmp_path):
    png = encode(Image.new("L", (2, 2)), "PNG")
    for rel in ("cats/a.png", "cats/._a.png", "__MACOSX/cats/b.png", ".ipynb_checkpoints/c.png", "dogs/d.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        write(tmp_path / rel, png)
    assert list_images(tmp_path) == [tmp_path / "cats/a.png", tmp_path / "dogs/d.png"]


@pytest.mark.parametrize(
    ("rel", "reason"),
    [
        (".DS_Store", "macOS folder settings (.DS_Store)"),
        ("cats/.DS_Store", "macOS folder settings (.DS_Store)"),
        ("cats/Thumbs.db", "Windows thumbnail cache"),
        ("cats/thumbs.db", "Windows thumbnail cache"),
        ("cats/desktop.ini", "Windows folder settings (desktop.ini)"),
        ("cats/._a.jpg", "AppleDouble resource fork (._*)"),
        ("__MACOSX/cats/._a.jpg", "macOS metadata (__MACOSX)"),
        ("__MACOSX/cats/a.jpg", "macOS metadata (__MACOSX)"),
        ("cats/.cache", "hidden file"),
        (".git/objects/ab.png", "inside a hidden folder"),
        ("cats\\Thumbs.db", "Windows thumbnail cache"),
        ("cats/a.jpg", None),
        ("a.jpg", None),
        ("cats/thumbs.db.jpg", None),
    ],
)
def test_junk_reason(rel, reason):
    assert junk_reason(rel) == reason


# --- content, not name -------------------------------------------------------------------------------


def test_png_named_jpg_is_detected_by_content(tmp_path):
    path = write(tmp_path / "photo.jpg", encode(Image.new("RGB", (5, 3), (1, 2, 3)), "PNG"))
    assert inspect_image(path) == ImageInfo(format="PNG", mode="RGB", width=5, height=3)
    assert open_image(path).getpixel((0, 0)) == (1, 2, 3)


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("empty.jpg", b"", "empty file (0 bytes)"),
        ("noise.png", np.random.default_rng(0).bytes(2000), "not an image file"),
        ("notes.jpg", b"just some text, saved with the wrong extension\n" * 20, "not an image file"),
    ],
)
def test_files_that_are_not_images_are_refused_with_a_reason(tmp_path, name, data, reason):
    path = write(tmp_path / name, data)
    for read in (inspect_image, open_image, lambda p: load_pixels(p, 8, 3)):
        with pytest.raises(UnreadableImage, match=re.escape(reason)):
            read(path)


def test_office_zip_named_jpg_is_not_an_image(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
    path = write(tmp_path / "sheet.jpg", buffer.getvalue())
    with pytest.raises(UnreadableImage, match="not an image file"):
        inspect_image(path)


def test_unreadable_image_is_an_oserror_but_a_missing_file_stays_file_not_found(tmp_path):
    # Callers (tensors.load_images) report OSError as "cannot read image" and FileNotFoundError apart.
    assert issubclass(UnreadableImage, OSError)
    with pytest.raises(FileNotFoundError):
        open_image(tmp_path / "gone.png")


def test_truncated_png_is_refused(tmp_path):
    data = encode(noisy_rgb(64, 64), "PNG")
    path = write(tmp_path / "cut.png", data[: len(data) * 6 // 10])
    with pytest.raises(UnreadableImage, match="truncated or corrupt image data"):
        inspect_image(path)


@pytest.mark.parametrize("side", [40, 50])  # Pillow warns above the limit and raises above twice it
def test_decompression_bomb_is_refused_not_a_crash(tmp_path, monkeypatch, side):
    path = write(tmp_path / "bomb.png", encode(Image.new("L", (side, side)), "PNG"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for read in (inspect_image, open_image):
        with pytest.raises(UnreadableImage, match=r"too large \(over 1000 pixels\)"):
            read(path)


# --- modes -------------------------------------------------------------------------------------------


def _palette_gif_with_transparency() -> bytes:
    img = Image.new("P", (4, 2), 1)
    img.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)
    img.paste(0, (0, 0, 2, 2))  # left half: index 0, declared transparent
    return encode(img, "GIF", transparency=0)


def _alpha(mode: str, colour: tuple, alpha: int) -> Image.Image:
    """A 2x1 image in `mode`: left pixel fully transparent, right pixel `colour` at `alpha`."""
    img = Image.new(mode, (2, 1), (*colour, 0))
    img.putpixel((1, 0), (*colour, alpha))
    return img


def _pa_tiff() -> bytes:
    img = Image.new("PA", (2, 1), (1, 0))
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    img.putpixel((1, 0), (1, 255))
    return encode(img, "TIFF")


def _lab_tiff(rgb: tuple) -> bytes:
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    return encode(ImageCms.applyTransform(Image.new("RGB", (2, 1), rgb), to_lab), "TIFF")


def _array(values: list, dtype: str, fmt: str) -> bytes:
    return encode(Image.fromarray(np.array([values], dtype=dtype)), fmt)


MODE_CASES = {
    # case: (file bytes, the file's own mode, output mode, pixel (x, y), expected value, tolerance)
    "RGB": (encode(Image.new("RGB", (2, 1), (10, 20, 30)), "PNG"), "RGB", "RGB", (1, 0), (10, 20, 30), 0),
    "L": (encode(Image.new("L", (2, 1), 77), "PNG"), "L", "L", (1, 0), 77, 0),
    "1": (encode(Image.new("1", (2, 1), 1), "PNG"), "1", "L", (1, 0), 255, 0),
    "LA transparent": (encode(_alpha("LA", (100,), 255), "PNG"), "LA", "L", (0, 0), 255, 0),
    "LA opaque": (encode(_alpha("LA", (100,), 255), "PNG"), "LA", "L", (1, 0), 100, 0),
    "LA half": (encode(_alpha("LA", (100,), 128), "PNG"), "LA", "L", (1, 0), 177, 1),
    "RGBA transparent": (encode(_alpha("RGBA", RED, 255), "PNG"), "RGBA", "RGB", (0, 0), (255, 255, 255), 0),
    "RGBA half": (encode(_alpha("RGBA", RED, 128), "PNG"), "RGBA", "RGB", (1, 0), (255, 127, 127), 1),
    "P gif transparent": (_palette_gif_with_transparency(), "P", "RGB", (0, 0), (255, 255, 255), 0),
    "P gif opaque": (_palette_gif_with_transparency(), "P", "RGB", (3, 0), RED, 0),
    "P png": (encode(Image.new("RGB", (2, 1), BLUE).convert("P"), "PNG"), "P", "RGB", (1, 0), BLUE, 0),
    "PA transparent": (_pa_tiff(), "PA", "RGB", (0, 0), (255, 255, 255), 0),
    "PA opaque": (_pa_tiff(), "PA", "RGB", (1, 0), BLUE, 0),
    "I;16 png": (_array([0, 25700, 65535], "uint16", "PNG"), "I;16", "L", (1, 0), 100, 0),
    "I;16 holding 8-bit values": (_array([0, 100, 255], "uint16", "PNG"), "I;16", "L", (1, 0), 100, 0),
    "I": (_array([-5, 25700, 70000], "int32", "TIFF"), "I", "L", (1, 0), 100, 0),
    "I clipped": (_array([-5, 25700, 70000], "int32", "TIFF"), "I", "L", (0, 0), 0, 0),
    "F unit range": (_array([0.0, 0.2, 1.0], "float32", "TIFF"), "F", "L", (1, 0), 51, 0),
    "F 8-bit range": (_array([0.0, 51.0, 255.0], "float32", "TIFF"), "F", "L", (1, 0), 51, 0),
    "CMYK tiff": (encode(Image.new("CMYK", (2, 1), (0, 255, 255, 0)), "TIFF"), "CMYK", "RGB", (1, 0), RED, 0),
    "YCbCr tiff": (encode(Image.new("RGB", (2, 1), (200, 100, 50)).convert("YCbCr"), "TIFF"), "YCbCr", "RGB",
                   (1, 0), (200, 100, 50), 3),
    "LAB tiff": (_lab_tiff(RED), "LAB", "RGB", (1, 0), RED, 8),
}  # fmt: skip


@pytest.mark.parametrize("case", MODE_CASES)
def test_every_mode_comes_out_as_l_or_rgb(tmp_path, case):
    data, file_mode, out_mode, xy, expected, tol = MODE_CASES[case]
    path = write(tmp_path / "img.tif", data)
    assert inspect_image(path).mode == file_mode
    img = open_image(path)
    assert img.mode == out_mode
    assert close(img.getpixel(xy), expected, tol), img.getpixel(xy)


def test_16bit_png_keeps_its_gradient(tmp_path):
    path = write(tmp_path / "depth.png", _array(list(range(0, 65536, 4096)), "uint16", "PNG"))
    pixels = load_pixels(path, 16, 1)[0, 0]  # (W,) of the first row
    assert pixels[0] == 0 and pixels[-1] > 230 and np.all(np.diff(pixels.astype(int)) > 0)


def test_cmyk_jpeg_without_adobe_marker_has_true_colours(tmp_path):
    # Stored CMYK values are plain (0 = no ink) when there is no Adobe marker. Pillow writes the
    # inverted form and an Adobe marker, so save the inverted patches and drop the marker.
    true_cmyk = Image.new("CMYK", (32, 16), (0, 255, 255, 0))  # red
    true_cmyk.paste((255, 255, 0, 0), (16, 0, 32, 16))  # blue
    inverted = Image.eval(true_cmyk, lambda v: 255 - v)
    data = strip_adobe_segment(encode(inverted, "JPEG", quality=95))
    assert b"Adobe" not in data
    path = write(tmp_path / "print.jpg", data)
    with Image.open(path) as raw:  # what Pillow alone makes of it: "CMYK;I" turns no ink into full ink
        assert close(raw.convert("RGB").getpixel((4, 8)), (0, 0, 0), 20)
    img = open_image(path)
    assert close(img.getpixel((4, 8)), RED, 20) and close(img.getpixel((28, 8)), BLUE, 20)


def test_cmyk_jpeg_with_adobe_marker_has_true_colours(tmp_path):
    cmyk = Image.new("CMYK", (32, 16), (0, 255, 255, 0))
    cmyk.paste((255, 255, 0, 0), (16, 0, 32, 16))
    data = encode(cmyk, "JPEG", quality=95)
    assert b"Adobe" in data
    path = write(tmp_path / "print.jpg", data)
    img = open_image(path)
    assert inspect_image(path).mode == "CMYK"
    assert close(img.getpixel((4, 8)), RED, 20) and close(img.getpixel((28, 8)), BLUE, 20)


# --- geometry ----------------------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40x20 with a red block in the top-left corner; Orientation 6 means "turn 90 degrees
    # clockwise to view", which carries the top-left corner to the top-right of a 20x40 picture.
    stored = Image.new("RGB", (40, 20), (0, 0, 0))
    stored.paste(RED, (0, 0, 8, 8))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = write(tmp_path / "phone.jpg", encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert inspect_image(path) == ImageInfo(format="JPEG", mode="RGB", width=20, height=40)
    img = open_image(path)
    assert img.size == (20, 40)
    assert close(img.getpixel((16, 4)), RED, 40)
    assert close(img.getpixel((4, 4)), (0, 0, 0), 40)
    assert load_pixels(path, 8, 3).shape == (3, 8, 8)


@pytest.fixture(scope="module")
def huge_jpeg(tmp_path_factory) -> Path:
    """A 6000x4000 photo-sized JPEG: blue left half, red right half."""
    img = Image.new("RGB", (6000, 4000), BLUE)
    ImageDraw.Draw(img).rectangle((3000, 0, 5999, 3999), fill=RED)
    return write(tmp_path_factory.mktemp("huge") / "huge.jpg", encode(img, "JPEG", quality=80))


@pytest.fixture
def decoded_jpeg_sizes(monkeypatch) -> list[tuple[int, int]]:
    """The size of every JPEG at the moment its pixels are decoded (after any draft)."""
    sizes: list[tuple[int, int]] = []
    original = JpegImagePlugin.JpegImageFile.load

    def spy(self):
        sizes.append(self.size)
        return original(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)
    return sizes


def test_huge_jpeg_is_inspected_at_reduced_size(huge_jpeg, decoded_jpeg_sizes):
    assert inspect_image(huge_jpeg) == ImageInfo(format="JPEG", mode="RGB", width=6000, height=4000)
    assert set(decoded_jpeg_sizes) == {(750, 500)}  # 1/8 DCT scale: 64 times fewer pixels


def test_huge_jpeg_opened_with_max_side_never_decodes_full_size(huge_jpeg, decoded_jpeg_sizes):
    img = open_image(huge_jpeg, max_side=64)
    assert img.size == (64, 43)
    assert set(decoded_jpeg_sizes) == {(750, 500)}
    assert close(img.getpixel((8, 20)), BLUE, 30) and close(img.getpixel((56, 20)), RED, 30)


def test_huge_jpeg_load_pixels_drafts_to_at_least_size(huge_jpeg, decoded_jpeg_sizes):
    pixels = load_pixels(huge_jpeg, 32, 3)
    assert pixels.shape == (3, 32, 32) and pixels.dtype == np.uint8
    assert set(decoded_jpeg_sizes) == {(750, 500)}
    assert close(pixels[:, 16, 4], BLUE, 30) and close(pixels[:, 16, 28], RED, 30)


def test_max_side_keeps_aspect_and_never_enlarges(tmp_path):
    path = write(tmp_path / "wide.png", encode(noisy_rgb(300, 100), "PNG"))
    assert open_image(path, max_side=60).size == (60, 20)
    assert open_image(path, max_side=1000).size == (300, 100)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_tiny_3x5_image(tmp_path, fmt):
    path = write(tmp_path / "tiny.img", encode(Image.new("RGB", (3, 5), (90, 90, 90)), fmt))
    assert inspect_image(path) == ImageInfo(format=fmt, mode="RGB", width=3, height=5)
    assert open_image(path, max_side=64).size == (3, 5)
    assert close(load_pixels(path, 8, 3), 90, 2)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_load_pixels_of_small_pngs_is_a_plain_bilinear_resize(tmp_path, mode):
    # The default dataset is small PNGs: their pixels must stay exactly what they were.
    img = noisy_rgb(32, 32, seed=3).convert(mode)
    path = write(tmp_path / "small.png", encode(img, "PNG"))
    flat = img if mode != "RGBA" else Image.alpha_composite(Image.new("RGBA", img.size, "white"), img)
    for size, channels in ((32, 3), (24, 1), (48, 3)):
        resized = flat.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BILINEAR)
        expected = np.asarray(resized)[None] if channels == 1 else np.asarray(resized).transpose(2, 0, 1)
        assert np.array_equal(load_pixels(path, size, channels), expected)


# --- damaged JPEGs -----------------------------------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["baseline", "progressive"])
def jpeg(request) -> bytes:
    data = encode(noisy_rgb(96, 64), "JPEG", quality=90, progressive=request.param)
    assert data.endswith(b"\xff\xd9")
    return data


def test_progressive_jpeg_decodes(tmp_path, jpeg):
    path = write(tmp_path / "ok.jpg", jpeg)
    assert inspect_image(path) == ImageInfo(format="JPEG", mode="RGB", width=96, height=64)
    assert np.array_equal(np.asarray(open_image(path)), np.asarray(Image.open(io.BytesIO(jpeg))))


@pytest.mark.parametrize("cut", [2, 1], ids=["no FFD9", "no D9"])
def test_jpeg_missing_only_its_end_marker_is_repaired_identically_every_time(tmp_path, jpeg, cut):
    whole = write(tmp_path / "whole.jpg", jpeg)
    path = write(tmp_path / "no_end.jpg", jpeg[:-cut])
    assert inspect_image(path).repaired == "missing JPEG end marker"
    assert np.array_equal(np.asarray(open_image(path)), np.asarray(open_image(whole)))
    first = load_pixels(path, 32, 3)
    assert np.array_equal(first, load_pixels(path, 32, 3))
    assert np.array_equal(first, load_pixels(whole, 32, 3))
    assert np.array_equal(np.asarray(open_image(path, max_side=16)), np.asarray(open_image(whole, max_side=16)))


def test_jpeg_with_zero_padding_instead_of_end_marker_decodes_like_the_whole_file(tmp_path, jpeg):
    whole = write(tmp_path / "whole.jpg", jpeg)
    path = write(tmp_path / "padded.jpg", jpeg[:-2] + bytes(100))
    assert inspect_image(path).width == 96
    assert np.array_equal(load_pixels(path, 32, 3), load_pixels(whole, 32, 3))


def _assert_refused(path: Path) -> None:
    for read in (inspect_image, open_image, lambda p: load_pixels(p, 32, 3)):
        with pytest.raises(UnreadableImage, match="truncated or corrupt image data"):
            read(path)


@pytest.mark.parametrize("keep", [0.6, 0.95, 0.99])
def test_jpeg_cut_inside_its_scan_data_is_refused(tmp_path, jpeg, keep):
    # Pillow decodes these without complaint once an end marker is appended (grey blocks fill the
    # rest), so appending one and checking that it decodes cannot tell them from a repairable file.
    _assert_refused(write(tmp_path / "cut.jpg", jpeg[: int(len(jpeg) * keep)]))


def test_progressive_jpeg_cut_between_scans_is_refused(tmp_path):
    data = encode(noisy_rgb(96, 64), "JPEG", quality=90, progressive=True)
    last_scan = data.rindex(b"\xff\xda")  # every earlier scan is complete, the final refinement is gone
    _assert_refused(write(tmp_path / "cut.jpg", data[:last_scan]))


def test_jpeg_with_restart_markers_cut_at_a_restart_is_refused(tmp_path):
    data = encode(noisy_rgb(96, 64), "JPEG", quality=90, restart_marker_rows=1)
    restarts = list(re.finditer(rb"\xff[\xd0-\xd7]", data))
    assert len(restarts) == 3
    _assert_refused(write(tmp_path / "before.jpg", data[: restarts[1].start()]))  # interval done, marker gone
    _assert_refused(write(tmp_path / "after.jpg", data[: restarts[1].end()]))
    assert inspect_image(write(tmp_path / "no_end.jpg", data[:-2])).repaired == "missing JPEG end marker"
