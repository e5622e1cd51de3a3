"""The one image reader every stage uses, so train, evaluate and predict see identical pixels.

Real folders hold more than clean RGB files: PNGs named .jpg, CMYK and 16-bit scans, palette GIFs,
phone photos stored sideways with an EXIF Orientation tag, downloads cut short, OS metadata files.
Everything here decodes by content, returns 'L' or 'RGB' upright, and refuses what it cannot read
with `UnreadableImage` and a short reason, instead of a Pillow traceback or silently grey pixels.
"""

from __future__ import annotations

import io
import os
import re
import struct
import unicodedata
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

import numpy as np
from PIL import ExifTags, Image, ImageChops, ImageOps, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

# Pillow signals damaged data with any of these, depending on the format and where the damage is.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_JPEG_END = b"\xff\xd9"
# Junk that a cut-off scan decodes as coefficients: no 0xFF (that starts a marker), and no leading
# zero bits, which in many Huffman tables spell end-of-block, just like libjpeg's own zero fill.
_JPEG_JUNK = (b"\x5a\xa5" * 32, bytes(range(0x80, 0xFF)))
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # not a stuffed byte, restart or fill
_JPEG_RESTART = re.compile(rb"\xff[\xd0-\xd7]")


class UnreadableImage(OSError):
    """A file that cannot be decoded into pixels; the message is a short reason for a person.

    An OSError, like the errors Pillow raises for bad files, so callers that already handle those
    keep working.
    """


@dataclass(frozen=True)
class ImageInfo:
    """What a file holds, found by decoding it."""

    format: str  # Pillow's format name, from the content: "PNG" for a PNG named .jpg
    mode: str  # the file's own mode before conversion: "CMYK", "P", "I;16", "LA", ...
    width: int  # upright, after EXIF orientation
    height: int
    repaired: str | None = None  # damage worked around while decoding, e.g. "missing JPEG end marker"


def is_image_file(path: Path) -> bool:
    """True for a visible file with an image extension (any case)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """All image files under `folder`, recursively, in a stable sorted order; OS metadata is skipped."""
    folder = Path(folder)
    return sorted(
        p for p in folder.rglob("*") if is_image_file(p) and junk_reason(p.relative_to(folder).as_posix()) is None
    )


def junk_reason(relative_path: str) -> str | None:
    """Why `relative_path` is OS metadata to skip without decoding, or None for an ordinary file.

    Zips made on macOS and folders copied from Windows carry these next to the real images; some
    (AppleDouble `._photo.jpg`) even share an image extension.
    """
    parts = PurePosixPath(relative_path.replace("\\", "/")).parts
    name = parts[-1]
    if "__MACOSX" in parts:
        return "macOS metadata (__MACOSX)"
    if name.startswith("._"):
        return "AppleDouble resource fork (._*)"
    if name == ".DS_Store":
        return "macOS folder settings (.DS_Store)"
    if name.lower() in ("thumbs.db", "ehthumbs.db"):
        return "Windows thumbnail cache"
    if name.lower() == "desktop.ini":
        return "Windows folder settings (desktop.ini)"
    if name.startswith("."):
        return "hidden file"
    if any(part.startswith(".") and part != ".." for part in parts[:-1]):
        return "inside a hidden folder"
    return None


# --- file names in tables ----------------------------------------------------------------------
# Linux allows any bytes but `/` and NUL in a name, and archives made on Windows or old macOS carry
# Latin-1 or CP437 ones; Python reads the bytes that are not UTF-8 as lone surrogates, which no
# UTF-8 table can hold, and a tab or newline in a name breaks the lines of a TSV. So every name a
# stage writes, into a table or as a file of its own output, is `escape_name`d: one rule for
# data/raw, every CSV, TSV and JSON and the shard members, reversed by `unescape_name`.

_HEX = frozenset("0123456789abcdefABCDEF")
_CONTROL = frozenset({"Cc", "Zl", "Zp", "Cs"})  # C0, DEL and C1 controls, line/paragraph separators, surrogates


def escape_name(name: str) -> str:
    """`name` (a path as Python reads it from the file system) as the stages write it.

    Percent-encoding, per byte: a byte that is not UTF-8 becomes `%XX` (`caf%E9.png`), and so
    does each byte of a control character (tab `%09`, newline `%0A`, DEL, C1, U+2028); a `%`
    followed by two hex digits becomes `%25`, so the escape is reversible. Everything else stays
    as it is: unicode, spaces, quotes, commas, leading dashes, a `%` not followed by two hex digits.
    """
    if name.isprintable() and "%" not in name:  # the usual name: nothing to do
        return name
    out = []
    for i, ch in enumerate(name):
        if "\udc80" <= ch <= "\udcff":  # os.fsdecode's surrogateescape: one undecodable byte
            out.append(f"%{ord(ch) - 0xDC00:02X}")
        elif unicodedata.category(ch) in _CONTROL:
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass")))
        elif ch == "%" and name[i + 1 : i + 2] in _HEX and name[i + 2 : i + 3] in _HEX:
            out.append("%25")
        else:
            out.append(ch)
    return "".join(out)


def unsafe_in_tables(name: str) -> bool:
    """Whether `name` holds what a UTF-8 table cannot (bytes that are not UTF-8) or what breaks its
    lines (a control character): what `escape_name` must change, `%` aside."""
    return not name.isprintable() and any(unicodedata.category(ch) in _CONTROL for ch in name)


def unescape_name(text: str) -> str:
    """The name `escape_name` was given: `os.fsdecode(urllib.parse.unquote_to_bytes(text))`."""
    return os.fsdecode(urllib.parse.unquote_to_bytes(text))


def inspect_image(path: Path) -> ImageInfo:
    """Identify `path` by content and check that it decodes completely, cheaply.

    JPEGs decode at 1/8 scale (DCT scaling still reads every byte of the scans), so checking a
    6000x4000 photo costs about as much as decoding a 750x500 one. Raises UnreadableImage.
    """
    return _read(Path(path), draft_box=1)[1]


def open_image(path: Path | Readable, max_side: int | None = None) -> Image.Image:
    """Decode an image (a file, or one inside a shard) upright (EXIF orientation applied), as 'L' or 'RGB'.

    With `max_side`, the longer side is shrunk to at most `max_side` (aspect kept); JPEGs are then
    decoded at a reduced DCT scale to begin with, so a huge photo never exists at full size in memory.
    Raises UnreadableImage.
    """
    img = _upright(Path(path) if isinstance(path, str) else path, draft_box=max_side)
    if max_side is not None:
        img.thumbnail((max_side, max_side))
    return img


class Readable(Protocol):
    """A file, or part of one (`imgpipe.data.shards.Member`); str() names it in messages."""

    def read_bytes(self) -> bytes: ...


def shown_path(path: Readable) -> str:
    """How rows and messages name an image: a file (a Path, maybe the user's) `escape_name`d; an
    image the pipeline wrote (`imgpipe.data.shards.Member`, named by escaped names) as it is."""
    return escape_name(str(path)) if isinstance(path, Path) else str(path)


def load_pixels(path: Readable, size: int, channels: int) -> np.ndarray:
    """Read `path` (a Path, or an image inside a shard) as a uint8 array of shape (channels, size, size).

    JPEGs decode at the smallest DCT scale that still leaves both sides >= size.
    """
    img = _upright(path, draft_box=size).convert("L" if channels == 1 else "RGB")
    img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)  # (C, H, W)


def _upright(path: Readable, draft_box: int | None) -> Image.Image:
    """Decode `path` as upright 'L' or 'RGB' with correct colours."""
    img = _read(path, draft_box)[0]
    return _to_l_or_rgb(ImageOps.exif_transpose(_fix_cmyk_polarity(img)))


def _read(path: Readable, draft_box: int | None) -> tuple[Image.Image, ImageInfo]:
    """Decode `path` in its own mode, drafting JPEGs so both sides stay >= draft_box.

    A JPEG whose only damage is a missing end marker is decoded with the marker appended, so every
    stage reads it the same way; anything else that fails to decode is refused.
    """
    data = path.read_bytes()  # not found / permission errors pass through as they are
    if not data:
        raise UnreadableImage("empty file (0 bytes)")
    img = _open(data)
    width, height = img.size  # before drafting shrinks it
    repaired = None
    try:
        _load(img, draft_box)
    except _DECODE_ERRORS as err:
        fixed = _jpeg_with_end_marker(data) if isinstance(img, JpegImageFile) else None
        if fixed is None:
            raise UnreadableImage("truncated or corrupt image data") from err
        img = _load(_open(fixed), draft_box)
        repaired = "missing JPEG end marker"
    if img.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8):  # stored turned by 90 degrees
        width, height = height, width
    return img, ImageInfo(img.format or "", img.mode, width, height, repaired)


def _open(data: bytes) -> Image.Image:
    """Identify `data` by content; refuse decompression bombs before any pixel is decoded."""
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse both the same way.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UnreadableImage(f"too large (over {Image.MAX_IMAGE_PIXELS} pixels)") from None
    except UnidentifiedImageError:
        raise UnreadableImage("not an image file") from None
    except _DECODE_ERRORS as err:
        raise UnreadableImage("truncated or corrupt image data") from err


def _load(img: Image.Image, draft_box: int | None) -> Image.Image:
    """Decode the pixels of a just-opened image; `draft` is a no-op for formats other than JPEG."""
    if draft_box is not None:
        img.draft(None, (draft_box, draft_box))
    img.load()
    return img


def _jpeg_with_end_marker(data: bytes) -> bytes | None:
    """`data` with its end-of-image marker restored, or None when more than the marker is missing.

    Decoding with the marker appended proves nothing: libjpeg fills a cut-off scan with flat blocks
    and Pillow hides its warning. So (1) the scan headers must bring every coefficient to full
    precision (a progressive file cut between scans lacks some), and (2) junk inserted before the
    marker must not change the pixels: after a complete scan libjpeg skips it, while a cut-off scan
    decodes it as coefficients. A cut at a restart boundary only decodes junk that follows the
    restart marker the decoder expects next, so that variant is tried too. The decodes are at full
    scale, where every coefficient counts.
    """
    body = data.rstrip(b"\xff")  # a dangling 0xFF would turn the first junk byte into a marker
    try:
        complete, next_restart = _jpeg_scan_state(body)
        if not complete:
            return None
        junks = list(_JPEG_JUNK)
        if next_restart is not None:
            junks.append(bytes((0xFF, 0xD0 + next_restart)) + _JPEG_JUNK[0])
        reference = _full_pixels(body + _JPEG_END)
        unchanged = all(np.array_equal(reference, _full_pixels(body + junk + _JPEG_END)) for junk in junks)
    except _DECODE_ERRORS:  # including headers too short to parse
        return None
    return body + _JPEG_END if unchanged else None


def _full_pixels(data: bytes) -> np.ndarray:
    """The pixels of `data` decoded at full scale, in the file's own mode."""
    return np.asarray(_load(_open(data), None))


def _jpeg_scan_state(data: bytes) -> tuple[bool, int | None]:
    """Whether the scan headers in `data` cover every DCT coefficient of every component at full
    precision, and which restart marker (0-7) the last scan expects next, None without restarts."""
    missing: dict[int, set[int]] = {}
    progressive = False
    restart_interval = 0
    next_restart = None
    pos = 2  # after the start-of-image marker
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment = data[pos + 4 : end]
        if end > len(data):
            break
        if marker in _JPEG_SOF:
            progressive = marker in _JPEG_PROGRESSIVE_SOF
            missing = {segment[6 + 3 * i]: set(range(64)) for i in range(segment[5])}
        elif marker == 0xDD:  # define restart interval, in MCUs; 0 turns restarts off
            restart_interval = int.from_bytes(segment[:2], "big")
        elif marker == 0xDA:  # start of scan: components, then spectral start/end and approximation
            count = segment[0]
            first, last, approx = segment[1 + 2 * count : 4 + 2 * count]
            if not progressive or approx & 0x0F == 0:  # sequential scans are always full precision
                span = range(first, last + 1) if progressive else range(64)
                for component in segment[1 : 1 + 2 * count : 2]:
                    missing.get(component, set()).difference_update(span)
            found = _JPEG_NEXT_MARKER.search(data, end)  # skip the entropy-coded data
            if found is None:  # the data ends inside this scan
                if restart_interval:
                    next_restart = len(_JPEG_RESTART.findall(data, end)) % 8
                break
            end = found.start()
        pos = end
    return bool(missing) and not any(missing.values()), next_restart


def _fix_cmyk_polarity(img: Image.Image) -> Image.Image:
    """Undo Pillow's inversion of CMYK JPEGs that lack an Adobe APP14 marker.

    Pillow decodes every CMYK JPEG with rawmode "CMYK;I" (Adobe's inverted convention), but only
    files with the Adobe marker are stored inverted; the rest come out as a colour negative.
    """
    if img.mode == "CMYK" and isinstance(img, JpegImageFile) and "adobe" not in img.info:
        return ImageChops.invert(img)
    return img


def _to_l_or_rgb(img: Image.Image) -> Image.Image:
    """'L' for greyscale-ish modes, 'RGB' for the rest; transparency is composited onto white."""
    target = "L" if img.mode in _GREY_MODES else "RGB"
    if img.mode.startswith("I") or img.mode == "F":
        return _scale_to_uint8(img)
    if img.has_transparency_data:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    return img if img.mode == target else img.convert(target)


def _scale_to_uint8(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale -> 'L', scaled rather than clipped.

    The full-scale value is the smallest usual one the data fits under (1.0 for float only, then 255,
    then 65535), so 8-bit data stored in a wide mode keeps its values and 16-bit data is not clipped.
    """
    arr = np.nan_to_num(np.asarray(img, dtype=np.float64))
    peaks = (1.0, 255.0, 65535.0) if img.mode == "F" else (255.0, 65535.0)
    peak = next((p for p in peaks if arr.max() <= p), peaks[-1])
    return Image.fromarray((np.clip(arr, 0, peak) / peak * 255).round().astype(np.uint8))
