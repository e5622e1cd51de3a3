"""The download stage: materialise `data.source` as `<out>/<class>/<image>` folders."""

from __future__ import annotations

import hashlib
import math
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from imgpipe.data.readers import is_image_file, list_images
from imgpipe.errors import UserError
from imgpipe.outputs import atomic_dir
from imgpipe.progress import progress

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MIB = 1 << 20
BUILTIN_DIGITS_SIZE = 32  # sklearn's 8x8 scans are upsampled so rotations and shears stay legible


def download(source: str, out: Path, sha256: str | None = None, limit: int | None = None) -> dict[str, int]:
    """Write the dataset named by `source` into `out` (replaced atomically).

    With `limit`, only the first `limit` images of each class (in name order) are kept.
    Returns the number of images per class.
    """
    with atomic_dir(Path(out)) as tmp:
        if source == "builtin:digits":
            write_builtin_digits(tmp)
        elif source.startswith("builtin:"):
            raise UserError(f"params: data.source '{source}' is unknown; builtin datasets: builtin:digits")
        elif source.startswith(("http://", "https://", "file://")):
            fetch_archive(source, tmp, sha256)
        else:
            copy_class_folders(Path(source), tmp)
        if limit is not None:
            keep_first(tmp, limit)
        counts = count_per_class(tmp)
    return counts


def write_builtin_digits(out: Path) -> None:
    """scikit-learn's 1,797 real handwritten digits as PNGs, one folder per class."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        ink = (pixels / 16.0 * 255).round().astype(np.uint8)  # (8, 8), white ink on black
        img = Image.fromarray(ink, mode="L").resize(
            (BUILTIN_DIGITS_SIZE, BUILTIN_DIGITS_SIZE), Image.Resampling.BICUBIC
        )
        folder = out / str(label)
        folder.mkdir(exist_ok=True)
        img.save(folder / f"{i:04d}.png")


def copy_class_folders(src: Path, out: Path) -> None:
    """Copy the images of a folder-per-class dataset; the user's folder is only read."""
    if not src.exists():
        raise UserError(f"data.source: folder '{src}' does not exist")
    if not src.is_dir():
        raise UserError(f"data.source: '{src}' is not a folder (or a supported archive URL)")
    classes = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(f"data.source: '{src}' has no class sub-folders; expected <source>/<class>/<image>")
    for class_dir in classes:
        images = list_images(class_dir)
        if not images:
            raise UserError(f"data.source: class folder '{class_dir}' has no images; add images or remove it")
        for image in images:
            dest = out / class_dir.name / image.relative_to(class_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, dest)


def fetch_archive(url: str, out: Path, sha256: str | None) -> None:
    """Download an archive, verify its checksum, extract it and copy its class folders."""
    name = url.split("?")[0].rstrip("/").rsplit("/", 1)[-1]
    if not name.lower().endswith(ARCHIVE_SUFFIXES):
        raise UserError(f"data.source: '{url}' is not a {', '.join(ARCHIVE_SUFFIXES)} archive")
    with tempfile.TemporaryDirectory(prefix="imgpipe-download-") as work:
        archive = Path(work) / name
        fetch_url(url, archive)
        digest = file_sha256(archive)
        if sha256 and digest.lower() != sha256.lower():
            raise UserError(
                f"data.sha256: archive '{name}' has sha256 {digest}, expected {sha256}; "
                "fix data.sha256 or the URL"
            )
        extracted = Path(work) / "extracted"
        extract_archive(archive, extracted)
        copy_class_folders(dataset_root(extracted), out)


def fetch_url(url: str, dest: Path, timeout: float = 60.0) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as f:
            size = int(response.headers.get("Content-Length") or 0)
            chunks = iter(lambda: response.read(MIB), b"")
            total = math.ceil(size / MIB) if size else None  # in 1 MiB chunks
            for chunk in progress(chunks, desc=f"download {dest.name}", total=total):
                f.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"data.source: could not download '{url}': {reason}") from None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def extract_archive(archive: Path, dest: Path) -> None:
    """Extract a zip or tar archive, refusing members that would land outside `dest`."""
    dest.mkdir(parents=True)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():
                    _check_member(member, dest, archive.name)
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as err:
        raise UserError(f"data.source: cannot extract '{archive.name}': {err}") from None


def _check_member(member: str, dest: Path, archive_name: str) -> None:
    target = (dest / member).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise UserError(f"data.source: archive '{archive_name}' member '{member}' points outside the archive")


def dataset_root(folder: Path) -> Path:
    """Descend through single wrapper folders (`archive/digits/<class>/...`) to the class folders."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
        dirs = [p for p in entries if p.is_dir()]
        if len(dirs) == 1 and not any(is_image_file(p) for p in entries):
            folder = dirs[0]
            if any(is_image_file(p) for p in folder.iterdir()):
                return folder.parent
        else:
            return folder


def keep_first(folder: Path, limit: int) -> None:
    """Delete all but the first `limit` images of each class folder (our own copy, never the source)."""
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for extra in list_images(class_dir)[limit:]:
            extra.unlink()


def count_per_class(folder: Path) -> dict[str, int]:
    return {d.name: len(list_images(d)) for d in sorted(Path(folder).iterdir()) if d.is_dir()}
