"""Multi-label decision rule: per-label thresholds, and one value per `group=value` group.

Labels named like `p1=7`, `p1=blank` form a one-of group when every training image carries
exactly one of them; such a group is decoded by argmax, so a predicted sequence is always
well-formed. Every other label is positive when its probability reaches its threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from imgpipe.data.labelsets import label_groups, natural_key


@dataclass(frozen=True)
class DecisionRule:
    thresholds: list[float]  # (K,) one per label
    groups: list[list[int]]  # one-of groups of label indices, decoded by argmax

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """(N, K) probabilities -> (N, K) 0/1 predictions."""
        pred = (probs >= np.asarray(self.thresholds)[None, :]).astype(np.uint8)  # (N, K)
        for members in self.groups:
            pred[:, members] = 0
            winner = np.asarray(members)[probs[:, members].argmax(axis=1)]  # (N,)
            pred[np.arange(len(probs)), winner] = 1
        return pred


def one_of_groups(labels: Sequence[str], targets: np.ndarray) -> tuple[list[list[int]], list[str]]:
    """The `group=value` groups with exactly one positive per training image, and the names of
    groups that break that rule (decoded per label by threshold instead)."""
    kept, broken = [], []
    for name, members in sorted(label_groups(labels).items(), key=lambda item: natural_key(item[0])):
        if len(targets) and (targets[:, members].sum(axis=1) == 1).all():
            kept.append(members)
        else:
            broken.append(name)
    return kept, broken


def tune_thresholds(probs: np.ndarray, targets: np.ndarray, default: float = 0.5) -> list[float]:
    """Per label, the threshold that maximises that label's F1 on (probs, targets).

    Labels with no positive example keep `default`: there is no F1 to maximise.
    """
    return [_best_threshold(probs[:, k], targets[:, k], default) for k in range(probs.shape[1])]


def _best_threshold(scores: np.ndarray, truth: np.ndarray, default: float) -> float:
    positives = int(truth.sum())
    if positives == 0:
        return default
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], truth[order].astype(np.int64)
    # Cutting after position i predicts the top i+1 scores positive; only cuts between distinct
    # scores are realisable by a threshold.
    last_of_run = np.append(ranked[1:] < ranked[:-1], True)  # (N,)
    tp = np.cumsum(hits)[last_of_run]
    predicted = (np.arange(len(ranked)) + 1)[last_of_run]
    f1 = 2 * tp / (predicted + positives)
    best = int(np.argmax(f1))  # first maximum: the highest threshold among ties
    cut = np.flatnonzero(last_of_run)[best]
    below = float(ranked[cut + 1]) if cut + 1 < len(ranked) else 0.0
    # Midway to the next lower score, in float64: a float32 mean of two neighbouring scores can
    # round onto one of them and move the cut.
    return (float(ranked[cut]) + below) / 2
