"""Decode image files into in-memory uint8 tensors, and normalise them for a model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from imgpipe.data.labelsets import is_multilabel, label_matrix
from imgpipe.data.readers import load_pixels
from imgpipe.errors import UserError
from imgpipe.progress import progress


def load_images(paths: Sequence[Path], size: int, channels: int, desc: str = "decode") -> torch.Tensor:
    """Decode `paths` once into a (N, C, size, size) uint8 tensor."""
    batch = np.empty((len(paths), channels, size, size), dtype=np.uint8)
    for i, path in enumerate(progress(paths, desc=desc)):
        try:
            batch[i] = load_pixels(path, size, channels)
        except FileNotFoundError:
            raise UserError(f"{path}: image not found; rerun the earlier stages (dvc repro)") from None
        except OSError as err:
            raise UserError(f"{path}: cannot read image ({err})") from None
    return torch.from_numpy(batch)


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, on the 0..1 scale."""
    x = images.float().div_(255).transpose(0, 1).flatten(1)  # (C, N*H*W)
    std = x.std(dim=1).clamp_min(1e-6)
    return x.mean(dim=1).tolist(), std.tolist()


def to_model_input(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float (B, C, H, W), scaled to 0..1 then standardised."""
    x = images.float().div_(255)
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


@dataclass(frozen=True)
class LabelledImages:
    images: torch.Tensor  # (N, C, H, W) uint8
    targets: torch.Tensor  # (N,) int64 class indices, or (N, K) float 0/1 for multi-label

    @property
    def multilabel(self) -> bool:
        return self.targets.dim() == 2


def load_split(
    table: pd.DataFrame, split: str, images_root: Path, classes: list[str], size: int, channels: int
) -> LabelledImages:
    """Decode the images of one split of the annotation table into memory."""
    rows = table[table["split"] == split]
    images = load_images([Path(images_root) / p for p in rows["path"]], size, channels, desc=split)
    if is_multilabel(table):
        targets = torch.from_numpy(label_matrix(rows)).float()  # (N, K), columns in `classes` order
        return LabelledImages(images, targets.reshape(len(rows), len(classes)))
    index = {name: i for i, name in enumerate(classes)}
    targets = torch.tensor([index[label] for label in rows["label"]], dtype=torch.long)
    return LabelledImages(images, targets)
