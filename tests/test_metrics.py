"""Classification metrics on small hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from imgpipe.metrics import classification_metrics, confusion_counts, per_class_table

# Three classes, six samples:
#   class 0: predicted at 0, 4 -> TP 1, precision 1/2; actual 2 -> recall 1/2; F1 1/2
#   class 1: predicted at 1, 2, 3 -> TP 2, precision 2/3; actual 2 -> recall 1; F1 4/5
#   class 2: predicted at 5 -> TP 1, precision 1; actual 2 -> recall 1/2; F1 2/3
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 0, 2])


def test_classification_metrics_hand_computed():
    m = classification_metrics(Y_TRUE, Y_PRED)
    assert set(m) == {"accuracy", "precision_macro", "recall_macro", "f1_macro"}
    assert all(type(v) is float for v in m.values())
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision_macro"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)  # 13/18
    assert m["recall_macro"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)  # 2/3
    assert m["f1_macro"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)  # 59/90


def test_perfect_predictions():
    y = np.array([2, 0, 1, 1])
    assert classification_metrics(y, y) == {
        "accuracy": 1.0,
        "precision_macro": 1.0,
        "recall_macro": 1.0,
        "f1_macro": 1.0,
    }


def test_never_predicted_class_has_precision_zero_not_nan():
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 0]))
    # class 0: P 1/2, R 1, F1 2/3; class 1: never predicted -> P 0, R 0, F1 0
    assert m == pytest.approx({"accuracy": 0.5, "precision_macro": 0.25, "recall_macro": 0.5, "f1_macro": 1 / 3})
    assert not any(np.isnan(v) for v in m.values())


def test_class_only_in_predictions_counts_in_the_macro_average():
    m = classification_metrics(np.array([0, 0]), np.array([0, 2]))
    # class 0: P 1, R 1/2, F1 2/3; class 2 (predicted, never true): P 0, R 0, F1 0
    assert m == pytest.approx({"accuracy": 0.5, "precision_macro": 0.5, "recall_macro": 0.25, "f1_macro": 1 / 3})


def test_per_class_table_hand_computed():
    rows = per_class_table(Y_TRUE, Y_PRED, ["zero", "one", "two"])
    assert [r["class"] for r in rows] == ["zero", "one", "two"]
    assert [r["support"] for r in rows] == [2, 2, 2]
    assert [r["precision"] for r in rows] == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert [r["recall"] for r in rows] == pytest.approx([1 / 2, 1.0, 1 / 2])
    assert [r["f1"] for r in rows] == pytest.approx([1 / 2, 4 / 5, 2 / 3])


def test_per_class_table_includes_absent_classes():
    rows = per_class_table(np.array([0, 0]), np.array([0, 0]), ["a", "b", "c"])
    assert rows[1:] == [
        {"class": "b", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},
        {"class": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},
    ]


def test_confusion_counts_hand_computed():
    classes = ["zero", "one", "two"]
    rows = confusion_counts(Y_TRUE, Y_PRED, classes)
    assert len(rows) == len(classes) ** 2
    assert sum(r["count"] for r in rows) == len(Y_TRUE)
    assert all(type(r["count"]) is int for r in rows)
    table = {(r["actual"], r["predicted"]): r["count"] for r in rows}
    assert len(table) == 9
    assert table == {
        ("zero", "zero"): 1, ("zero", "one"): 1, ("zero", "two"): 0,
        ("one", "zero"): 0, ("one", "one"): 2, ("one", "two"): 0,
        ("two", "zero"): 1, ("two", "one"): 0, ("two", "two"): 1,
    }


def test_confusion_counts_has_every_pair_even_for_unseen_classes():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, size=50)  # class 3 never occurs
    y_pred = rng.integers(0, 3, size=50)
    classes = ["a", "b", "c", "d"]
    rows = confusion_counts(y_true, y_pred, classes)
    assert len(rows) == 16
    assert [(r["actual"], r["predicted"]) for r in rows] == [(a, p) for a in classes for p in classes]
    assert sum(r["count"] for r in rows) == 50
    assert all(r["count"] == 0 for r in rows if "d" in (r["actual"], r["predicted"]))
    diagonal = sum(r["count"] for r in rows if r["actual"] == r["predicted"])
    assert diagonal == int((y_true == y_pred).sum())
