"""The test images the model got most wrong, for people to look at (the evaluate stage, like
fastai's `plot_top_losses`); small enough for git.

Which test images are the worst is the task's to say (`imgpipe.task.mistakes`).
Always the top `MAX_MISTAKES` (fewer only when the test split is smaller), right or not, so a
run has a fixed set of file names (`mistake_01.png` is the worst) and a rerun overwrites them;
an image the model got right is captioned in green.

Each tile is drawn by `imgpipe.data.pictures` (which also draws the augment stage's sheet): a
palette PNG of a few KB even for photos (docs/pipeline.md gives the sizes). numpy and Pillow only.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from imgpipe.data.pictures import draw_tile, to_image
from imgpipe.task.kinds import MulticlassKind, MultilabelKind
from imgpipe.task.mistakes import Worst

MAX_MISTAKES = 12  # tiles the evaluate stage writes, at most


def mistake_name(rank: int) -> str:
    """The file name of the `rank`-th worst test image (1 = the worst)."""
    return f"mistake_{rank:02d}.png"


def worst_images(
    task: MulticlassKind | MultilabelKind, logits: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, k: int = MAX_MISTAKES
) -> list[Worst]:
    """The `k` test images the model got most wrong, the worst first, as the task ranks them
    (`imgpipe.task.mistakes`). `logits` (N, K); `y_true`, `y_pred` as the task decides them:
    (N,) indices or (N, K) 0/1."""
    return task.worst(np.asarray(logits, dtype=np.float64), y_true, y_pred, k)


def mistake_tiles(
    task: MulticlassKind | MultilabelKind, images, logits: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, k: int = MAX_MISTAKES
) -> dict[str, Image.Image]:
    """File name -> tile of each of the `k` worst test images; `images` (N, C, H, W) uint8, the
    pixels the model was given (before normalisation)."""
    return {
        mistake_name(rank): draw_tile(to_image(np.asarray(images[w.index])), w.caption, w.right)
        for rank, w in enumerate(worst_images(task, logits, y_true, y_pred, k), 1)
    }
