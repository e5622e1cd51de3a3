"""The review's statistics: exact McNemar, paired bootstrap, and point estimates that are the
evaluate stage's own metrics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from imgpipe.review import stats
from imgpipe.review.stats import compare_paired, compare_unpaired, interval, mcnemar_exact, summarize_alone
from imgpipe.task.metrics import classification_metrics, multilabel_metrics
from imgpipe.task.outcomes import record_outcomes

CLASSES = [str(i) for i in range(10)]


def md5s(n: int) -> list[str]:
    return [f"{i:032x}" for i in range(n)]


def designed_pair(both: int, only_base: int, only_head: int, neither: int):
    """Base and head records with exactly these counts of right/wrong images."""
    n = both + only_base + only_head + neither
    actual = np.arange(n) % 10
    wrong = (actual + 1) % 10
    base_right = np.r_[np.ones(both + only_base, bool), np.zeros(only_head + neither, bool)]
    head_right = np.r_[np.ones(both, bool), np.zeros(only_base, bool), np.ones(only_head, bool), np.zeros(neither, bool)]
    return tuple(
        record_outcomes(md5s(n), CLASSES, actual, np.where(right, actual, wrong), "multiclass")
        for right in (base_right, head_right)
    )


@pytest.mark.parametrize(("only_base", "only_head"), [(0, 0), (1, 0), (3, 4), (0, 6), (1, 10), (12, 31), (250, 310)])
def test_exact_mcnemar_is_scipys_binomial_test(only_base: int, only_head: int):
    base, head = designed_pair(100, only_base, only_head, 20)
    result = compare_paired(base, head, resamples=200)
    assert (result.only_base, result.only_head) == (only_base, only_head)
    n = only_base + only_head
    expected = binomtest(min(only_base, only_head), n, 0.5).pvalue if n else 1.0
    assert result.p_value == pytest.approx(expected, rel=1e-9)
    assert mcnemar_exact(only_head, only_base) == result.p_value  # symmetric


def test_point_estimates_are_the_evaluate_stages_metrics():
    rng = np.random.default_rng(0)
    actual = rng.integers(0, 10, 179)
    base_pred = np.where(rng.random(179) < 0.9, actual, rng.integers(0, 10, 179))
    head_pred = np.where(rng.random(179) < 0.8, actual, rng.integers(0, 9, 179))  # never predicts 9 by mistake
    base, head = (record_outcomes(md5s(179), CLASSES, actual, p, "multiclass") for p in (base_pred, head_pred))
    result = compare_paired(base, head, resamples=500)
    for side, pred in enumerate((base_pred, head_pred)):
        expected = classification_metrics(actual, pred)
        assert result.accuracy[side] == pytest.approx(expected["accuracy"])
        assert result.f1_macro[side] == pytest.approx(expected["f1_macro"])
    assert result.accuracy_change.low < result.accuracy[1] - result.accuracy[0] < result.accuracy_change.high
    alone = summarize_alone(base, resamples=500)
    assert alone.accuracy == result.accuracy[0]
    assert alone.accuracy_interval.low < alone.accuracy < alone.accuracy_interval.high


def test_multilabel_uses_exact_match_and_the_stages_macro_f1():
    rng = np.random.default_rng(1)
    labels = [f"l{k}" for k in range(6)]
    actual = (rng.random((80, 6)) < 0.3).astype(np.uint8)
    actual[:, 5] = 0  # a label with no test example: left out of macro F1 unless predicted
    base_pred = np.where(rng.random((80, 6)) < 0.9, actual, 1 - actual).astype(np.uint8)
    head_pred = actual.copy()
    base, head = (record_outcomes(md5s(80), labels, actual, p, "multilabel") for p in (base_pred, head_pred))
    result = compare_paired(base, head, resamples=300)
    for side, pred in enumerate((base_pred, head_pred)):
        expected = multilabel_metrics(actual, pred)
        assert result.accuracy[side] == pytest.approx(expected["exact_match_accuracy"])
        assert result.f1_macro[side] == pytest.approx(expected["f1_macro"])
    assert result.only_base == 0 and result.only_head == int((base_pred != actual).any(axis=1).sum())
    assert result.significant


def test_only_the_class_that_changed_moves_beyond_noise():
    rng = np.random.default_rng(2)
    actual = np.repeat(np.arange(10), 40)
    base_pred = actual.copy()
    base_pred[rng.choice(400, 8, replace=False)] += 1  # a little noise everywhere
    base_pred %= 10
    head_pred = base_pred.copy()
    threes = np.flatnonzero(actual == 3)
    head_pred[threes[:30]] = 8  # the head reads most 3s as 8s
    base, head = (record_outcomes(md5s(400), CLASSES, actual, p, "multiclass") for p in (base_pred, head_pred))
    result = compare_paired(base, head)
    moved = {c.name for c in result.classes if c.change.excludes_zero()}
    assert moved == {"3", "8"}
    assert result.significant and result.p_value < 1e-6


def test_identical_models_have_zero_width_intervals():
    base, head = designed_pair(150, 0, 0, 29)
    result = compare_paired(base, head, resamples=200)
    assert result.changed_decisions == 0 and result.p_value == 1.0 and not result.significant
    assert result.accuracy_change.low == result.accuracy_change.high == 0
    assert not any(c.change.excludes_zero() for c in result.classes)


def test_one_image_is_not_significant():
    base, head = designed_pair(170, 0, 1, 8)  # 179 images, as the default test split
    result = compare_paired(base, head)
    assert result.accuracy[1] - result.accuracy[0] == pytest.approx(1 / 179)
    assert result.p_value == 1.0 and not result.significant
    assert result.accuracy_change.low <= 0 < result.accuracy_change.high


def test_different_test_sets_are_not_paired():
    base, _ = designed_pair(10, 1, 1, 1)
    other = record_outcomes(md5s(13)[1:] + ["f" * 32], CLASSES, base.actual, base.predicted, "multiclass")
    with pytest.raises(ValueError, match="different test sets"):
        compare_paired(base, other)


def test_classes_are_paired_by_name_not_index():
    actual = np.array([0, 1, 2, 0, 1, 2])  # a b c a b c
    base = record_outcomes(md5s(6), ["a", "b", "c"], actual, actual, "multiclass")
    # The head's model lists its classes in another order; it reads the last c as a b.
    head = record_outcomes(md5s(6), ["c", "a", "b"], np.array([1, 2, 0, 1, 2, 0]), np.array([1, 2, 0, 1, 2, 2]), "multiclass")
    assert head.test_set == base.test_set
    result = compare_paired(base, head, resamples=100)
    assert [c.name for c in result.classes] == ["a", "b", "c"]
    assert (result.only_base, result.only_head) == (1, 0)
    assert [c.head for c in result.classes] == pytest.approx([1.0, 0.8, 2 / 3])


def test_chunked_resampling_gives_the_same_intervals(monkeypatch):
    rng = np.random.default_rng(3)
    actual = rng.integers(0, 10, 300)
    base, head = (record_outcomes(md5s(300), CLASSES, actual, np.where(rng.random(300) < q, actual, 0), "multiclass")
                  for q in (0.9, 0.7))
    whole = compare_paired(base, head, resamples=250)
    monkeypatch.setattr(stats, "CHUNK", 300 * 7)  # 7 resamples per chunk: 36 chunks
    chunked = compare_paired(base, head, resamples=250)
    assert chunked == whole


def test_interval_is_the_central_percentiles_and_needs_defined_draws():
    assert interval(np.arange(1001, dtype=float)) == stats.Interval(25.0, 975.0)
    few_nans = np.r_[np.arange(1001, dtype=float), [np.nan] * 10]
    assert interval(few_nans) == stats.Interval(25.0, 975.0)
    mostly_nan = np.r_[np.arange(100, dtype=float), [np.nan] * 100]
    low, high = interval(mostly_nan).low, interval(mostly_nan).high
    assert np.isnan(low) and np.isnan(high) and not interval(mostly_nan).excludes_zero()


def test_different_test_sets_compare_each_side_and_the_change():
    rng = np.random.default_rng(4)
    actual = rng.integers(0, 10, 400)
    good = record_outcomes(md5s(400), CLASSES, actual, np.where(rng.random(400) < 0.95, actual, (actual + 1) % 10), "multiclass")
    other = [f"{i:032x}" for i in range(1000, 1400)]
    bad = record_outcomes(other, CLASSES, actual, np.where(rng.random(400) < 0.5, actual, (actual + 1) % 10), "multiclass")
    result = compare_unpaired(good, bad, resamples=500)
    assert result.base.accuracy > 0.9 and result.head.accuracy < 0.6
    assert result.accuracy_change.high < 0 and result.accuracy_change.excludes_zero()
    same = compare_unpaired(good, record_outcomes(other, CLASSES, good.actual, good.predicted, "multiclass"), resamples=500)
    assert same.accuracy_change.low < 0 < same.accuracy_change.high  # equal accuracy: within noise


def test_a_single_class_test_set():
    actual = np.zeros(20, dtype=int)
    base = record_outcomes(md5s(20), ["only"], actual, actual, "multiclass")
    result = compare_paired(base, base, resamples=100)
    assert result.accuracy == (1.0, 1.0) and result.f1_macro == (1.0, 1.0) and result.p_value == 1.0
