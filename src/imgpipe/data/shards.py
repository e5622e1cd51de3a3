"""Augmented images packed into a few tar shards, read back by offset.

A folder of one file per image costs DVC one object per image: one request each to push, pull
and check a remote, and a stat each on every `dvc repro`. So the augment stage writes its
variants into plain (uncompressed) tar files, WebDataset style, and records where each image's
bytes lie (`offset`, `size`) in its manifest; readers seek there and read them, no tar parsing.
`tar -tvf` lists a shard and `tar -xf` unpacks it, so the images stay plain files to look at.

Each source image's variants go to shard hash(source) mod S, S a power of two chosen from the
expected bytes, so adding or editing one source image rewrites one shard, not all of them. Tar
headers carry no time, owner or mode from the machine, so the same images give the same bytes
(the same DVC hash) anywhere.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self

from imgpipe.core.layout import SHARDS_DIR

if TYPE_CHECKING:
    import pandas as pd

SHARD_BYTES = 64 * 2**20  # about this many bytes per shard (from an estimate: see augment_dataset)


@dataclass(frozen=True)
class Member:
    """`size` bytes at `offset` of `file`: an image inside a shard, or (offset 0) a whole file."""

    file: Path
    offset: int
    size: int
    name: str = ""  # the member's name inside a shard; "" for a whole file

    def read_bytes(self) -> bytes:
        with open(self.file, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise OSError(f"{self.size} bytes expected, {len(data)} found; rerun the augment stage")
        return data

    def __str__(self) -> str:
        file = os.path.normpath(self.file)
        return f"{file}:{self.name}" if self.name else file


def shard_count(expected_bytes: int) -> int:
    """The smallest power of two of shards of at most about SHARD_BYTES each."""
    return 1 << max(0, math.ceil(math.log2(max(1, math.ceil(expected_bytes / SHARD_BYTES)))))


def shard_name(source: str, shards: int) -> str:
    """The shard (relative to the augmented folder) holding every variant of `source`."""
    width = max(2, len(str(shards - 1)))
    digest = hashlib.md5(source.encode(), usedforsecurity=False).digest()  # crc32's low bits cluster on similar names
    return f"{SHARDS_DIR}/{int.from_bytes(digest[:8], 'big') % shards:0{width}d}.tar"


class ShardWriter:
    """Append images to tar shards under `root`, opened as they are first needed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._open: dict[str, tarfile.TarFile] = {}

    def add(self, shard: str, name: str, data: bytes) -> tuple[int, int]:
        """Append `data` as member `name` of `shard`; returns its (offset, size) in the shard."""
        tar = self._open.get(shard)
        if tar is None:
            (self.root / shard).parent.mkdir(parents=True, exist_ok=True)
            tar = self._open[shard] = tarfile.open(self.root / shard, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 (closed by close())
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o444, 0  # no owner, time or umask of this machine
        tar.addfile(info, io.BytesIO(data))
        # The data ends where the tar does now, padded up to whole 512-byte blocks.
        padded = -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        return tar.offset - padded, len(data)

    def close(self) -> None:
        for tar in self._open.values():
            tar.close()
        self._open.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def members(rows: pd.DataFrame, images_root: Path) -> list[Member]:
    """Where each row of an annotation table (or manifest) has its image: `file` (relative to
    the augment stage's folder), `offset`, `size`."""
    root = Path(images_root)
    return [
        Member(root / file, int(offset), int(size), path if file.startswith(f"{SHARDS_DIR}/") else "")
        for path, file, offset, size in zip(rows["path"], rows["file"], rows["offset"], rows["size"], strict=True)
    ]
