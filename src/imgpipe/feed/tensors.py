"""Decode image files once into uint8 tensors (in memory, or a memory-mapped file), and normalise
batches of them for a model.

Training reads every image once per epoch. Decoding a JPEG each time would cost more than the
model on a small machine, so each image is decoded exactly once, by `imgpipe.data.readers` (the
same pixels everywhere), into a (N, C, H, W) uint8 array. Given a file path the array lives in a
memory-mapped `.npy` file instead of RAM, so the process never holds the decoded dataset itself:
the kernel pages it in and out like any file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from imgpipe.core.errors import UserError
from imgpipe.core.layout import SHARDS_DIR
from imgpipe.core.progress import progress
from imgpipe.data.readers import Readable, load_pixels, shown_path
from imgpipe.data.shards import Member

if TYPE_CHECKING:
    from imgpipe.task.tasks import Task

STATS_CHUNK = 4096  # images per step when computing channel statistics
DECODE_CHUNK = 256  # images handed to the decoding threads at a time


def load_images(
    paths: Sequence[Readable], size: int, channels: int, desc: str = "decode", out: Path | None = None
) -> torch.Tensor:
    """Decode `paths` (files, or images inside shards) once into a (N, C, size, size) uint8 tensor.

    With `out`, the tensor is backed by a memory-mapped `.npy` file written there. Decoding runs
    on one thread per core: Pillow releases the GIL while it decodes and resizes.
    """
    shape = (len(paths), channels, size, size)
    if out is None:
        batch = np.empty(shape, dtype=np.uint8)
    else:
        batch = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=shape)

    def decode(path: Readable) -> np.ndarray:
        try:
            return load_pixels(path, size, channels)
        except FileNotFoundError:
            raise UserError(f"{shown_path(path)}: image not found; rerun the earlier stages (dvc repro)") from None
        except OSError as err:
            raise UserError(f"{shown_path(path)}: cannot read image ({err})") from None

    workers = min(os.cpu_count() or 1, 8) if len(paths) >= DECODE_CHUNK else 1
    with ThreadPoolExecutor(workers) as pool, progress(None, desc=desc, total=len(paths)) as bar:
        for start in range(0, len(paths), DECODE_CHUNK):  # chunks bound the decoded images waiting
            for i, arr in enumerate(pool.map(decode, paths[start : start + DECODE_CHUNK]), start):
                batch[i] = arr
            bar.update(min(DECODE_CHUNK, len(paths) - start))
    if isinstance(batch, np.memmap):
        batch.flush()
    return torch.from_numpy(batch)


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and (sample) std of uint8 images, on the 0..1 scale.

    Accumulated in float64 over chunks, so a memory-mapped dataset is never converted whole.
    """
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(images), STATS_CHUNK):
        x = images[start : start + STATS_CHUNK].transpose(0, 1).reshape(channels, -1).double()
        total += x.sum(dim=1)
        squares += x.square().sum(dim=1)
    n = images.numel() // channels
    mean = total / n
    var = (squares - n * mean.square()) / max(n - 1, 1)
    std = var.clamp_min(0).sqrt().div(255).clamp_min(1e-6)
    return mean.div(255).tolist(), std.tolist()


def to_model_input(
    images: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float (B, C, H, W), scaled to 0..1 then standardised. Pass `mean`
    and `std` as tensors on the images' device to spare a host-to-device copy per batch."""
    x = images.float().div_(255)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def members(rows: pd.DataFrame, images_root: Path) -> list[Member]:
    """Where each row's image is: `file` (relative to the augment stage's folder), `offset`, `size`."""
    root = Path(images_root)
    return [
        Member(root / file, int(offset), int(size), path if file.startswith(f"{SHARDS_DIR}/") else "")
        for path, file, offset, size in zip(rows["path"], rows["file"], rows["offset"], rows["size"], strict=True)
    ]


@dataclass(frozen=True)
class LabelledImages:
    images: torch.Tensor  # (N, C, H, W) uint8, in memory or memory-mapped
    targets: torch.Tensor  # (N,) int64 class indices, or (N, K) float 0/1 for multi-label


def load_split(
    table: pd.DataFrame,
    split: str,
    images_root: Path,
    task: Task,
    size: int,
    channels: int,
    cache_dir: Path | None = None,
) -> LabelledImages:
    """Decode the images of one split of the annotation table, with the task's targets; into
    `cache_dir/<split>.npy` (memory-mapped) when given, else into memory."""
    rows = table[table["split"] == split]
    out = None if cache_dir is None else Path(cache_dir) / f"{split}.npy"
    images = load_images(members(rows, images_root), size, channels, desc=split, out=out)
    return LabelledImages(images, task.targets(rows))


def map_split(table: pd.DataFrame, split: str, task: Task, cache_dir: Path) -> LabelledImages:
    """One split as `load_split` decoded it into `cache_dir` (another process, on this machine),
    memory-mapped copy-on-write: shared pages, never written back."""
    images = np.load(Path(cache_dir) / f"{split}.npy", mmap_mode="c")
    return LabelledImages(torch.from_numpy(images), task.targets(table[table["split"] == split]))
