"""A dataset whose file names are anything Linux allows, written as a folder, a zip and a tar.

Bytes that are not UTF-8 (a Latin-1 `é`, in a file and in a class folder), a newline, a tab,
quotes, commas, a leading dash, spaces, `%`. `ODD_FILES` and `ODD_CLASSES` say how the tables
must name each one (`imgpipe.data.readers.escape_name`).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from pathlib import Path

from support.datasets import write_shapes_dataset

PER_CLASS = 12
# The circle images, renamed: the name's bytes -> the name the tables show.
ODD_FILES = {
    b"caf\xe9.png": "caf%E9.png",  # Latin-1: not UTF-8
    b"caf\xe8.png": "caf%E8.png",  # differs from the first only in an undecodable byte
    b"caf%E9.png": "caf%25E9.png",  # what the first escapes to, as a real name
    b"line\nbreak.png": "line%0Abreak.png",
    b"tab\tin name.png": "tab%09in name.png",
    b'say "cheese", ok.png': 'say "cheese", ok.png',
    b"-leading dash.png": "-leading dash.png",
    b" spaced  .png": " spaced  .png",
    b"100%.png": "100%.png",
    b"caf\xc3\xa9.png": "café.png",  # UTF-8: kept as it is
}
# Class folders, renamed: shapes' name -> (the folder's bytes, the class name the tables show)
ODD_CLASSES = {"cross": (b"cr\xf6ss", "cr%F6ss"), "square": (b'-sq "uare", x', '-sq "uare", x')}
# Files to skip, with odd names: bytes -> as the report names them
JUNK = {b"circle/._caf\xe9.png": "circle/._caf%E9.png", b"circle/notes \xe9\n.txt": "circle/notes %E9%0A.txt"}


def fs(root: Path, relative: bytes) -> Path:
    """The path `root/relative`, `relative` as bytes (Python reads them back with surrogateescape)."""
    return Path(os.fsdecode(os.fsencode(root) + b"/" + relative))


def write_odd_dataset(root: Path) -> Path:
    """`write_shapes_dataset(root)` (PER_CLASS images per class) with the first circles renamed to
    ODD_FILES, the cross and square folders to ODD_CLASSES, and the JUNK files beside them."""
    write_shapes_dataset(root, per_class=PER_CLASS)
    for i, name in enumerate(ODD_FILES):
        (root / "circle" / f"circle_{i:02d}.png").rename(fs(root, b"circle/" + name))
    for shapes, (folder, _) in ODD_CLASSES.items():
        (root / shapes).rename(fs(root, folder))
    fs(root, next(iter(JUNK))).write_bytes(b"\x00\x05\x16\x07" + bytes(60))
    fs(root, list(JUNK)[1]).write_bytes(b"not an image\n")
    return root


def expected_origins() -> set[str]:
    """Every image of `write_odd_dataset`, as the tables name it."""
    names = {f"circle/{shown}" for shown in ODD_FILES.values()}
    names |= {f"circle/circle_{i:02d}.png" for i in range(len(ODD_FILES), PER_CLASS)}
    for shapes, (_, label) in ODD_CLASSES.items():
        names |= {f"{label}/{shapes}_{i:02d}.png" for i in range(PER_CLASS)}
    return names


def source_files(root: Path) -> dict[bytes, bytes]:
    """Every file below `root`: its relative path as bytes -> its bytes."""
    top = os.fsencode(root)
    return {
        os.path.relpath(os.path.join(folder, name), top): Path(os.fsdecode(os.path.join(folder, name))).read_bytes()
        for folder, _, names in os.walk(top)
        for name in names
    }


def write_tar(root: Path, archive: Path, fmt: int = tarfile.PAX_FORMAT) -> Path:
    """`root` as `archive` (`odd/...` inside), names stored as their bytes (PAX: hdrcharset=BINARY)."""
    with tarfile.open(archive, "w", format=fmt) as tf:
        tf.add(root, arcname="odd")
    return archive


def write_zip(root: Path, archive: Path) -> Path:
    """`root` as `archive` (`odd/...` inside), every name stored as its bytes and without the
    UTF-8 flag, as zip tools on Windows and old macOS write them (zipfile itself would flag or
    refuse them: each is written under an ASCII stand-in of the same length, then patched)."""
    stand_ins = {}
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for i, (name, data) in enumerate(sorted(source_files(root).items())):
            stored = b"odd/" + name
            stand_in = (b"@%d@" % i).ljust(len(stored), b"#")
            stand_ins[stand_in] = stored
            zf.writestr(stand_in.decode("ascii"), data)
    data = archive.read_bytes()
    for stand_in, stored in stand_ins.items():
        assert data.count(stand_in) == 2, stand_in  # the local header and the central directory
        data = data.replace(stand_in, stored)
    archive.write_bytes(data)
    return archive


def zip_reading(name: bytes) -> str:
    """How the download stage reads an unflagged zip name: UTF-8 if it is valid UTF-8, else CP437."""
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        return name.decode("cp437")


def copy_tree(src: Path, dest: Path) -> Path:
    return Path(shutil.copytree(src, dest))
