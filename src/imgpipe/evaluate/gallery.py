"""The test images the model got most wrong, for people to look at (the evaluate stage, like
fastai's `plot_top_losses`); small enough for git.

Which test images are the worst:
- single-label: the highest loss, the cross-entropy of the true class (ties: test-split order);
- multi-label: the most wrong labels (the task's decisions against the truth), ties by the
  summed binary cross-entropy, then test-split order.
Always the top `MAX_MISTAKES` (fewer only when the test split is smaller), right or not, so a
run has a fixed set of file names (`mistake_01.png` is the worst) and a rerun overwrites them;
an image the model got right is captioned in green.

Each tile is drawn by `imgpipe.data.pictures` (which also draws the augment stage's sheet): a
palette PNG of a few KB even for photos (docs/pipeline.md gives the sizes). numpy and Pillow only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from imgpipe.data.pictures import draw_tile, to_image
from imgpipe.task.kinds import LabelSets, SingleLabel

MAX_MISTAKES = 12  # tiles the evaluate stage writes, at most


def mistake_name(rank: int) -> str:
    """The file name of the `rank`-th worst test image (1 = the worst)."""
    return f"mistake_{rank:02d}.png"


@dataclass(frozen=True)
class Worst:
    """One test image among the worst, with what its tile says."""

    index: int  # row of the test split
    right: bool  # the model's decision is right (single-label: the class; multi-label: every label)
    caption: tuple[str, ...]  # CAPTION_LINES lines: actual, predicted, probability and loss


def worst_images(
    task: SingleLabel | LabelSets, logits: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, k: int = MAX_MISTAKES
) -> list[Worst]:
    """The `k` test images the model got most wrong, the worst first (see the module docstring).
    `logits` (N, K); `y_true`, `y_pred` as the task decides them: (N,) indices or (N, K) 0/1."""
    return WORST[task.name](list(task.classes), np.asarray(logits, dtype=np.float64), y_true, y_pred, k)


def highest_first(*keys: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` largest entries by `keys` (the first decides, the next break ties),
    then by index: a stable, deterministic order."""
    n = len(keys[0])
    return np.lexsort([np.arange(n), *(-np.asarray(key, dtype=np.float64) for key in reversed(keys))])[:k]


def worst_single_label(
    classes: list[str], logits: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, k: int
) -> list[Worst]:
    """Highest cross-entropy of the true class first."""
    log_probs = logits - logits.max(axis=1, keepdims=True)  # (N, K), log-softmax, stable
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    rows = np.arange(len(logits))
    losses = -log_probs[rows, y_true]  # (N,)
    probs = np.exp(log_probs)
    worst = []
    for i in highest_first(losses, k=k):
        actual, predicted = int(y_true[i]), int(y_pred[i])
        worst.append(Worst(int(i), actual == predicted, (
            f"actual: {classes[actual]} ({probs[i, actual]:.2f})",
            f"predicted: {classes[predicted]} ({probs[i, predicted]:.2f})",
            f"loss {losses[i]:.2f}",
        )))
    return worst


def worst_label_sets(
    classes: list[str], logits: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, k: int
) -> list[Worst]:
    """Most wrong labels first; ties: the higher summed binary cross-entropy."""
    truth, chosen = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)  # (N, K)
    wrong = truth != chosen
    losses = (np.maximum(logits, 0) - logits * truth + np.log1p(np.exp(-np.abs(logits)))).sum(axis=1)  # (N,)
    probs = 1 / (1 + np.exp(-logits))
    worst = []
    for i in highest_first(wrong.sum(axis=1), losses, k=k):
        shown = ", ".join(f"{classes[j]} {probs[i, j]:.2f}" for j in np.flatnonzero(wrong[i]))  # with p(label)
        worst.append(Worst(int(i), not wrong[i].any(), (
            f"actual: {_names(classes, truth[i])}",
            f"predicted: {_names(classes, chosen[i])}",
            f"{wrong[i].sum()} wrong: {shown}" if shown else f"all right, loss {losses[i]:.2f}",
        )))
    return worst


WORST: dict[str, Callable[..., list[Worst]]] = {SingleLabel.name: worst_single_label, LabelSets.name: worst_label_sets}


def _names(classes: list[str], bits: np.ndarray) -> str:
    return " ".join(classes[j] for j in np.flatnonzero(bits)) or "(none)"


def mistake_tiles(
    task: SingleLabel | LabelSets, images, logits: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, k: int = MAX_MISTAKES
) -> dict[str, Image.Image]:
    """File name -> tile of each of the `k` worst test images; `images` (N, C, H, W) uint8, the
    pixels the model was given (before normalisation)."""
    return {
        mistake_name(rank): draw_tile(to_image(np.asarray(images[w.index])), w.caption, w.right)
        for rank, w in enumerate(worst_images(task, logits, y_true, y_pred, k), 1)
    }
