"""Decode many images into one (N, C, size, size) uint8 array with the one reader
(`imgpipe.data.readers.load_pixels`), on one thread per core: Pillow releases the GIL while it
decodes and resizes.

The stages decode the pipeline's own files and stop at the first that fails (it means an earlier
stage's output is damaged). Predicting on a user's folder is different: one cut-off photo among
ten thousand must not cost the other 9,999 rows, so there the failures are collected instead
(`skip_unreadable`) and the caller leaves those images out and names them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgpipe.core.errors import UserError
from imgpipe.core.progress import progress
from imgpipe.data.readers import Readable, load_pixels, shown_path

DECODE_CHUNK = 256  # images handed to the decoding threads at a time


@dataclass(frozen=True)
class Unread:
    """An image that could not be decoded: its position in the input, its name, why."""

    index: int
    path: str  # as rows and messages name it (`shown_path`)
    reason: str  # "truncated or corrupt image data", "empty file (0 bytes)", "not found", ...


def decode_images(
    paths: Sequence[Readable],
    size: int,
    channels: int,
    desc: str = "decode",
    out: Path | None = None,
    skip_unreadable: bool = False,
) -> tuple[np.ndarray, list[Unread]]:
    """Decode `paths` (files, or images inside shards) into a (N, C, size, size) uint8 array, and
    the images that could not be read.

    With `out`, the array is a memory-mapped `.npy` file written there. Without `skip_unreadable`
    the first unreadable image is a UserError naming it; with it, its row stays zero and it is
    listed.
    """
    shape = (len(paths), channels, size, size)
    if out is None:
        batch = np.zeros(shape, dtype=np.uint8)
    else:
        batch = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=shape)

    def decode(path: Readable) -> np.ndarray | str:
        try:
            return load_pixels(path, size, channels)
        except FileNotFoundError:
            if skip_unreadable:
                return "not found"
            raise UserError(f"{shown_path(path)}: image not found; rerun the earlier stages (dvc repro)") from None
        except OSError as err:
            if skip_unreadable:
                return str(err) or type(err).__name__
            raise UserError(f"{shown_path(path)}: cannot read image ({err})") from None

    unread: list[Unread] = []
    workers = min(os.cpu_count() or 1, 8) if len(paths) >= DECODE_CHUNK else 1
    with ThreadPoolExecutor(workers) as pool, progress(None, desc=desc, total=len(paths)) as bar:
        for start in range(0, len(paths), DECODE_CHUNK):  # chunks bound the decoded images waiting
            for i, arr in enumerate(pool.map(decode, paths[start : start + DECODE_CHUNK]), start):
                if isinstance(arr, str):
                    unread.append(Unread(i, shown_path(paths[i]), arr))
                else:
                    batch[i] = arr
            bar.update(min(DECODE_CHUNK, len(paths) - start))
    if isinstance(batch, np.memmap):
        batch.flush()
    return batch, unread
