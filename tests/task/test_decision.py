"""The multi-label decision rule: thresholds, one-of groups, per-label threshold tuning."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from imgpipe.task.decision import DecisionRule, one_of_groups, tune_thresholds

LABELS = ["p1=1", "p1=2", "p1=blank", "p2=1", "p2=2", "p2=blank", "cat"]


def test_threshold_per_label_and_argmax_per_group():
    probs = np.array([
        [0.2, 0.3, 0.1, 0.9, 0.8, 0.0, 0.6],  # p1 all below threshold, p2 two above: argmax wins
        [0.1, 0.1, 0.4, 0.1, 0.1, 0.7, 0.4],
    ])
    rule = DecisionRule([0.5] * 6 + [0.45], groups=[[0, 1, 2], [3, 4, 5]])
    assert rule.decide(probs).tolist() == [
        [0, 1, 0, 1, 0, 0, 1],
        [0, 0, 1, 0, 0, 1, 0],
    ]


def test_every_group_gets_exactly_one_value():
    rng = np.random.default_rng(0)
    rule = DecisionRule([0.5] * 7, groups=[[0, 1, 2], [3, 4, 5]])
    decided = rule.decide(rng.random((200, 7)))
    assert (decided[:, :3].sum(1) == 1).all() and (decided[:, 3:6].sum(1) == 1).all()


def test_one_of_groups_needs_exactly_one_positive_per_training_image():
    targets = np.array([[1, 0, 0, 0, 0, 1, 1], [0, 1, 0, 1, 0, 0, 0]])
    assert one_of_groups(LABELS, targets) == ([[0, 1, 2], [3, 4, 5]], [])
    broken = targets.copy()
    broken[0, 3] = 1  # two p2 values on one image
    assert one_of_groups(LABELS, broken) == ([[0, 1, 2]], ["p2"])
    # A name with '=' but no siblings is an ordinary label.
    assert one_of_groups(["size=big", "cat"], np.array([[1, 0]])) == ([], [])


def test_groups_come_in_natural_order():
    labels = [f"p{i}={v}" for i in (1, 10, 2) for v in ("a", "b")]
    targets = np.tile([1, 0], 3)[None, :]
    groups, _ = one_of_groups(labels, targets)
    assert [labels[m[0]].split("=")[0] for m in groups] == ["p1", "p2", "p10"]


def test_tuned_threshold_separates_scores_a_float32_mean_would_merge():
    probs = np.array([[0.50000006], [0.5]], dtype=np.float32)
    truth = np.array([[1], [0]])
    (threshold,) = tune_thresholds(probs, truth)
    rule = DecisionRule([threshold], [])
    assert rule.decide(probs).ravel().tolist() == [1, 0]


def test_tuned_threshold_maximises_each_labels_f1():
    rng = np.random.default_rng(1)
    truth = (rng.random((300, 3)) < [0.5, 0.2, 0.05]).astype(np.uint8)
    # Label scores shifted differently: the best threshold differs per label.
    probs = np.clip(truth * [0.3, 0.15, 0.1] + rng.random((300, 3)) * 0.6, 0, 1)
    thresholds = tune_thresholds(probs, truth)
    for k, t in enumerate(thresholds):
        best = f1_score(truth[:, k], probs[:, k] >= t)
        grid = max(f1_score(truth[:, k], probs[:, k] >= g) for g in np.unique(probs[:, k]))
        assert best == pytest.approx(grid)
        assert 0 < t < 1


def test_label_without_positives_keeps_the_default():
    probs = np.array([[0.9, 0.2], [0.1, 0.8]])
    truth = np.array([[1, 0], [0, 0]])
    thresholds = tune_thresholds(probs, truth)
    assert thresholds[1] == 0.5
    assert 0.1 < thresholds[0] <= 0.9  # between the negative's and the positive's score
