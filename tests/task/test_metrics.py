"""Classification metrics on small hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from imgpipe.task.metrics import classification_metrics, confusion_counts, per_class_table

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
    assert sum(r["count"] for r in rows) == len(Y_TRUE)
    assert all(type(r["count"]) is int for r in rows)
    table = {(r["actual"], r["predicted"]): r["count"] for r in rows}
    assert table == {  # the diagonal and the non-zero cells; the plot template imputes the zeros
        ("zero", "zero"): 1, ("zero", "one"): 1,
        ("one", "one"): 2,
        ("two", "zero"): 1, ("two", "two"): 1,
    }


def test_confusion_counts_name_every_class_on_the_diagonal_and_skip_zeros():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, size=50)  # class 3 never occurs
    y_pred = rng.integers(0, 3, size=50)
    classes = ["a", "b", "c", "d"]
    rows = confusion_counts(y_true, y_pred, classes)
    assert [(r["actual"], r["predicted"]) for r in rows if r["actual"] == r["predicted"]] == [(c, c) for c in classes]
    assert all(r["count"] > 0 for r in rows if r["actual"] != r["predicted"])
    assert sum(r["count"] for r in rows) == 50
    assert [r["count"] for r in rows if "d" in (r["actual"], r["predicted"])] == [0]
    diagonal = sum(r["count"] for r in rows if r["actual"] == r["predicted"])
    assert diagonal == int((y_true == y_pred).sum())


def test_confusion_counts_stay_small_with_many_classes():
    y = np.arange(1000)  # 1,000 classes, one test image each, all right
    assert len(confusion_counts(y, y, [str(k) for k in range(1000)])) == 1000  # not 1,000,000


# Multi-label: four images, three labels (the last never true in this "test split").
ML_TRUE = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=np.uint8)
ML_PRED = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=np.uint8)


def test_multilabel_metrics_hand_computed():
    from imgpipe.task.metrics import multilabel_metrics

    m = multilabel_metrics(ML_TRUE, ML_PRED)
    assert m["exact_match_accuracy"] == pytest.approx(2 / 4)  # rows 0 and 3
    assert m["hamming_accuracy"] == pytest.approx(10 / 12)
    # micro: TP 3, predicted 4, actual 4
    assert (m["precision_micro"], m["recall_micro"], m["f1_micro"]) == pytest.approx((3 / 4, 3 / 4, 3 / 4))
    # Label 2 has no true example: its recall is undefined and skipped, but its false positive
    # counts: P (1, 1, 0), R (1, 1/2, -), F1 (1, 2/3, 0).
    assert m["precision_macro"] == pytest.approx(2 / 3)
    assert m["recall_macro"] == pytest.approx(0.75)
    assert m["f1_macro"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_per_label_table_leaves_recall_empty_without_examples():
    from imgpipe.task.metrics import labels_without_examples, per_label_table

    rows = per_label_table(ML_TRUE, ML_PRED, ["a", "b", "c"])
    assert rows[1] == {"class": "b", "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2,
                       "accuracy": 0.75}
    assert rows[2]["support"] == 0 and rows[2]["recall"] is None
    assert rows[2]["precision"] == 0.0 and rows[2]["f1"] == 0.0  # predicted once, wrongly
    never = per_label_table(ML_TRUE, np.zeros_like(ML_PRED), ["a", "b", "c"])
    assert never[2]["precision"] is None and never[2]["f1"] is None  # 0/0 stays empty
    assert labels_without_examples(ML_TRUE, ["a", "b", "c"]) == ["c"]


def test_label_confusion_is_aggregated_two_by_two_per_label():
    from imgpipe.task.metrics import label_confusion_counts

    rows = label_confusion_counts(ML_TRUE, ML_PRED, ["a", "b", "c"])
    assert len(rows) == 12
    b = {(r["actual"], r["predicted"]): r["count"] for r in rows if r["label"] == "b"}
    assert b == {("positive", "positive"): 1, ("positive", "negative"): 1,
                 ("negative", "positive"): 0, ("negative", "negative"): 2}
    assert sum(r["count"] for r in rows) == 3 * len(ML_TRUE)


def test_cooccurrence_counts_diagonal_is_true_positives():
    from imgpipe.task.metrics import cooccurrence_counts

    counts = {(r["actual"], r["predicted"]): r["count"] for r in cooccurrence_counts(ML_TRUE, ML_PRED, ["a", "b", "c"])}
    assert [counts[(x, x)] for x in "abc"] == [2, 1, 0]
    assert counts[("b", "a")] == 1 and counts[("b", "c")] == 1


def test_group_accuracy_per_position_and_sequence():
    from imgpipe.task.metrics import group_accuracy

    # Two positions with values {1, blank}: label order p1=1, p1=blank, p2=1, p2=blank.
    truth = np.array([[1, 0, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]])
    pred = np.array([[1, 0, 0, 1], [1, 0, 0, 1], [1, 0, 0, 1]])
    scores = group_accuracy(truth, pred, {"p1": [0, 1], "p2": [2, 3]})
    assert scores == {"position_accuracy": {"p1": pytest.approx(2 / 3), "p2": pytest.approx(2 / 3)},
                      "sequence_accuracy": pytest.approx(1 / 3)}


def test_balanced_accuracy_is_scikit_learns_and_sees_a_majority_class_model():
    from sklearn.metrics import balanced_accuracy_score

    from imgpipe.task.metrics import balanced_accuracy

    rng = np.random.default_rng(0)
    y_true = rng.choice(3, 300, p=[0.8, 0.15, 0.05])
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 3, 300))
    assert balanced_accuracy(y_true, y_pred) == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    majority = np.zeros(300, dtype=np.int64)
    assert balanced_accuracy(y_true, majority) == pytest.approx(1 / 3)  # accuracy would read ~0.8


def test_multilabel_balanced_accuracy_averages_each_labels_two_recalls():
    from imgpipe.task.metrics import multilabel_balanced_accuracy

    y_true = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])
    y_pred = np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1], [0, 1, 1]])
    # label 0: TPR 1/2, TNR 1/2; label 1 has no positive and label 2 no negative: left out
    assert multilabel_balanced_accuracy(y_true, y_pred) == pytest.approx(0.5)
