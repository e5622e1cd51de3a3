"""Classification metrics shared by training (validation) and the evaluate stage."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro precision/recall/F1 over the classes present in `y_true` or `y_pred`.

    A class that is never predicted has precision 0 (not NaN).
    """
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, average="macro", zero_division=0
    )
    return {
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
    }


def per_class_table(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> list[dict]:
    """One row per class: precision, recall, F1 and support on the given predictions."""
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=np.arange(len(classes)), average=None, zero_division=0
    )
    return [
        {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
    ]


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> list[dict]:
    """The confusion matrix as aggregated (actual, predicted, count) rows, all K x K pairs."""
    matrix = confusion_matrix(y_true, y_pred, labels=np.arange(len(classes)))
    return [
        {"actual": classes[i], "predicted": classes[j], "count": int(matrix[i, j])}
        for i in range(len(classes))
        for j in range(len(classes))
    ]
