"""Classification metrics shared by training (validation) and the evaluate stage."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[int] | None = None
) -> dict[str, float]:
    """Accuracy and macro precision/recall/F1 over `classes` (class indices), by default those
    present in `y_true` or `y_pred`.

    A class that is never predicted has precision 0 (not NaN).
    """
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, average="macro", zero_division=0
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
    """The confusion matrix as aggregated (actual, predicted, count) rows (see `matrix_cells`)."""
    return matrix_cells(confusion_matrix(y_true, y_pred, labels=np.arange(len(classes))), classes)


def matrix_cells(matrix: np.ndarray, labels: Sequence[str]) -> list[dict]:
    """(actual, predicted, count) rows of a K x K matrix: the whole diagonal, zeros included, and
    the off-diagonal cells that are not zero.

    The file is committed with every run, so it must not hold K x K rows (1,000 classes would be
    a million); the plot template (.dvc/plots/confusion_counts.json) imputes the missing cells
    as 0, and the diagonal names every label on both axes.
    """
    return [
        {"actual": labels[i], "predicted": labels[j], "count": int(matrix[i, j])}
        for i in range(len(labels))
        for j in range(len(labels))
        if i == j or matrix[i, j]
    ]


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Exact-match and Hamming accuracy, micro and macro precision/recall/F1 of (N, K) 0/1 arrays.

    Macro averages skip only what is undefined (0/0): the recall of a label with no true
    example, the precision of a label never predicted. A false positive on a label absent from
    `y_true` still counts against macro precision and F1.
    """
    micro = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)[:3]
    macro = precision_recall_fscore_support(y_true, y_pred, average="macro", zero_division=np.nan)[:3]
    macro = tuple(0.0 if np.isnan(v) else v for v in macro)  # nothing defined at all
    n = len(y_true)
    return {
        "exact_match_accuracy": float((y_true == y_pred).all(axis=1).mean()) if n else 0.0,
        "hamming_accuracy": float((y_true == y_pred).mean()) if n else 0.0,
        "balanced_accuracy": multilabel_balanced_accuracy(y_true, y_pred),
        **{f"{name}_micro": float(v) for name, v in zip(("precision", "recall", "f1"), micro, strict=True)},
        **{f"{name}_macro": float(v) for name, v in zip(("precision", "recall", "f1"), macro, strict=True)},
    }


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Single-label: the mean recall over the classes in `y_true` (scikit-learn's
    `balanced_accuracy_score`): a model that always says the commonest class scores 1 / k."""
    classes = np.unique(y_true)
    return float(np.mean([(y_pred[y_true == c] == c).mean() for c in classes])) if len(classes) else 0.0


def multilabel_balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Multi-label: per label, the mean of its recall on the images that carry it and on those
    that do not ((TPR + TNR) / 2, binary balanced accuracy), averaged over the labels that have
    both kinds of image in `y_true`."""
    truth, pred = y_true.astype(bool), y_pred.astype(bool)
    positives, negatives = truth.sum(axis=0), (~truth).sum(axis=0)  # (K,)
    both = (positives > 0) & (negatives > 0)
    if not both.any():
        return 0.0
    tpr = (truth & pred).sum(axis=0)[both] / positives[both]
    tnr = (~truth & ~pred).sum(axis=0)[both] / negatives[both]
    return float(((tpr + tnr) / 2).mean())


def classes_without_examples(y_true: np.ndarray, classes: Sequence[str]) -> list[str]:
    """Single-label: the classes no index in `y_true` (N,) names."""
    return [name for k, name in enumerate(classes) if not (y_true == k).any()]


def labels_without_examples(y_true: np.ndarray, labels: Sequence[str]) -> list[str]:
    return [name for name, count in zip(labels, y_true.sum(axis=0), strict=True) if count == 0]


def per_label_table(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> list[dict]:
    """One row per label: precision, recall, F1, support and accuracy (of the 0/1 decision).

    Undefined values (0/0) are left empty (None), never 0: recall without a true example,
    precision without a prediction, F1 with neither.
    """
    rows = []
    for k, name in enumerate(labels):
        truth, pred = y_true[:, k], y_pred[:, k]
        tp, support, predicted = int((truth & pred).sum()), int(truth.sum()), int(pred.sum())
        precision = tp / predicted if predicted else None
        recall = tp / support if support else None
        f1 = 2 * tp / (support + predicted) if support + predicted else None
        rows.append({
            "class": name, "precision": precision, "recall": recall, "f1": f1, "support": support,
            "accuracy": float((truth == pred).mean()) if len(truth) else 0.0,
        })
    return rows


def label_confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> list[dict]:
    """A 2x2 confusion matrix per label as aggregated (label, actual, predicted, count) rows."""
    rows = []
    for k, name in enumerate(labels):
        for actual in (1, 0):
            for predicted in (1, 0):
                count = int(((y_true[:, k] == actual) & (y_pred[:, k] == predicted)).sum())
                rows.append({"label": name, "actual": _yes_no(actual), "predicted": _yes_no(predicted), "count": count})
    return rows


def _yes_no(value: int) -> str:
    return "positive" if value else "negative"


def cooccurrence_counts(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> list[dict]:
    """Multi-label confusion: how many images carry label i and were predicted label j.

    The diagonal holds true positives; `(actual p1=7, predicted p1=1)` counts a 7 read as a 1.
    """
    return matrix_cells(y_true.astype(np.int64).T @ y_pred.astype(np.int64), labels)  # (K, K)


def group_accuracy(y_true: np.ndarray, y_pred: np.ndarray, groups: dict[str, list[int]]) -> dict:
    """For one-of groups (`p1=...`): accuracy per group (position) and of all groups at once."""
    correct = {name: (y_true[:, m] == y_pred[:, m]).all(axis=1) for name, m in groups.items()}  # (N,) each
    return {
        "position_accuracy": {name: float(c.mean()) for name, c in correct.items()},
        "sequence_accuracy": float(np.all(list(correct.values()), axis=0).mean()),
    }
