"""Decode image files once into uint8 tensors (in memory, or a memory-mapped file), and normalise
batches of them for a model.

Training reads every image once per epoch. Decoding a JPEG each time would cost more than the
model on a small machine, so each image is decoded exactly once, by `imgpipe.data.readers` (the
same pixels everywhere), into a (N, C, H, W) uint8 array. Given a file path the array lives in a
memory-mapped `.npy` file instead of RAM, so the process never holds the decoded dataset itself:
the kernel pages it in and out like any file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from imgpipe.data.decoding import decode_images
from imgpipe.data.readers import Readable
from imgpipe.data.shards import members

if TYPE_CHECKING:
    from imgpipe.task.tasks import Task

STATS_CHUNK = 4096  # images per step when computing channel statistics


def load_images(
    paths: Sequence[Readable], size: int, channels: int, desc: str = "decode", out: Path | None = None
) -> torch.Tensor:
    """Decode `paths` (files, or images inside shards) once into a (N, C, size, size) uint8 tensor
    (`imgpipe.data.decoding`); with `out`, backed by a memory-mapped `.npy` file written there.
    The first unreadable image is a UserError naming it."""
    return torch.from_numpy(decode_images(paths, size, channels, desc, out)[0])


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
