"""Training images whose labels look wrong, from out-of-fold probabilities: confident learning
(Northcutt, Jiang & Chuang, "Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021)
through cleanlab's `find_label_issues`, and its multi-label variant for multi-label data.

Each image's probabilities must come from a model that never trained on it (the cv_fold stages'
held-out scores): a model's probabilities on its own training images mostly repeat the labels,
wrong ones included. numpy and cleanlab (scikit-learn) only, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelIssues:
    ranked: np.ndarray  # (M,) indices of the images cleanlab flags, the most suspect first
    quality: np.ndarray  # (N,) self-confidence: the probability given to the given label (multi-label: cleanlab's per-image aggregate over labels)


def single_label(targets: np.ndarray, probs: np.ndarray) -> LabelIssues:
    """`targets` (N,) class indices as labelled, `probs` (N, K) out-of-fold probabilities."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    targets, probs = np.asarray(targets, dtype=int), _rows_sum_to_one(probs)
    ranked = find_label_issues(targets, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    return LabelIssues(np.asarray(ranked, dtype=int), get_label_quality_scores(targets, probs, method="self_confidence"))


def multi_label(targets: np.ndarray, probs: np.ndarray) -> LabelIssues:
    """`targets` (N, K) 0/1 as labelled, `probs` (N, K) out-of-fold per-label probabilities."""
    from cleanlab.multilabel_classification.filter import find_label_issues
    from cleanlab.multilabel_classification.rank import get_label_quality_scores

    labels = [np.flatnonzero(row).tolist() for row in np.asarray(targets)]
    probs = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    ranked = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    return LabelIssues(np.asarray(ranked, dtype=int), get_label_quality_scores(labels, probs))


def _rows_sum_to_one(probs: np.ndarray) -> np.ndarray:
    """Probabilities rounded to 6 places in a table, renormalised: cleanlab checks each row sums to 1."""
    probs = np.clip(np.asarray(probs, dtype=np.float64), 0.0, None)
    return probs / probs.sum(axis=1, keepdims=True)
