"""Which test images a model got most wrong, for the evaluate stage's gallery
(`imgpipe.evaluate.gallery` draws them), ranked as each kind's `worst` asks:

- single-label: the highest loss, the cross-entropy of the true class (ties: test-split order);
- multi-label: the most wrong labels (the task's decisions against the truth), ties by the
  summed binary cross-entropy, then test-split order.

Each comes with its caption: actual, predicted, probability and loss. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Worst:
    """One test image among the worst, with what its tile says."""

    index: int  # row of the test split
    right: bool  # the model's decision is right (single-label: the class; multi-label: every label)
    caption: tuple[str, ...]  # CAPTION_LINES lines: actual, predicted, probability and loss


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



def _names(classes: list[str], bits: np.ndarray) -> str:
    return " ".join(classes[j] for j in np.flatnonzero(bits)) or "(none)"
