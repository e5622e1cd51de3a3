"""Is a change in test results real? Paired tests on two models' per-image outcomes.

When both revisions scored the same test images (equal `Outcomes.test_set` keys), the images
pair up: an exact McNemar test on the images only one model gets right, and a paired bootstrap
(the same resampled images for both models) for the change in accuracy, macro F1, macro recall
(single-label: balanced accuracy) and each class's F1. When the test sets differ, each side gets its own bootstrap interval instead.
Accuracy is exact match for multi-label data; F1 is computed from one-hot (multi-label: label)
counts exactly as the evaluate stage does, so the point estimates equal its metrics.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import sparse, stats

from imgpipe.review.defaults import RESAMPLES
from imgpipe.task.outcomes import Outcomes

ALPHA = 0.05  # a change is significant when p < ALPHA; intervals are 1 - ALPHA
LEVEL = f"{100 * (1 - ALPHA):g}%"  # of the intervals, as the report names it
SEED = 0  # the review is the same every time it is run
CHUNK = 2_000_000  # resampled image weights held at once


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class ClassChange:
    name: str
    base: float  # F1; NaN when undefined (no image of the class, none predicted)
    head: float
    change: Interval


@dataclass(frozen=True)
class Paired:
    """Two models scored on the same test images."""

    images: int
    only_base: int  # images the base model gets right and the head model wrong
    only_head: int  # and the other way round
    changed_decisions: int  # images whose predicted class (label set) differs
    p_value: float  # exact McNemar on (only_base, only_head)
    accuracy: tuple[float, float]  # base, head
    accuracy_change: Interval
    f1_macro: tuple[float, float]
    f1_macro_change: Interval
    recall_macro: tuple[float, float]  # single-label: balanced accuracy
    recall_macro_change: Interval
    classes: list[ClassChange]

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


@dataclass(frozen=True)
class Alone:
    """One model on its own test images."""

    images: int
    accuracy: float
    accuracy_interval: Interval
    f1_macro: float
    f1_macro_interval: Interval
    recall_macro: float
    recall_macro_interval: Interval


@dataclass(frozen=True)
class Unpaired:
    """Two models on different test images: each alone, and the change between independent
    bootstrap resamples of each side."""

    base: Alone
    head: Alone
    accuracy_change: Interval
    f1_macro_change: Interval
    recall_macro_change: Interval


def mcnemar_exact(only_base: int, only_head: int) -> float:
    """Two-sided exact McNemar p-value: twice the smaller discordant count's tail under
    Binomial(n, 1/2), at most 1."""
    n = only_base + only_head
    return 1.0 if n == 0 else min(1.0, 2 * float(stats.binom.cdf(min(only_base, only_head), n, 0.5)))


def compare_paired(base: Outcomes, head: Outcomes, resamples: int = RESAMPLES, seed: int = SEED) -> Paired:
    """Pair two records of the same test set (`base.test_set == head.test_set`)."""
    if base.test_set != head.test_set:
        raise ValueError("the records score different test sets; use each side alone")
    classes, truth, (base_dec, head_dec) = aligned(base, head)
    right = base.correct(), head.correct()  # (N,) each
    scorers = [Scorer(truth, decided, ok) for decided, ok in zip((base_dec, head_dec), right, strict=True)]
    n = len(truth)
    (acc0, f10, per0, r0), (acc1, f11, per1, r1) = (score(np.ones((1, n))) for score in scorers)
    draws = [], [], [], []  # accuracy, macro F1, per-class F1 and macro recall changes, an array per chunk
    for weights in bootstrap_weights(n, resamples, seed):
        base_scores, head_scores = (score(weights) for score in scorers)
        for store, b, h in zip(draws, base_scores, head_scores, strict=True):
            store.append(h - b)
    acc_change, f1_change, per_class, recall_change = (np.concatenate(d) for d in draws)
    only_base, only_head = int((right[0] & ~right[1]).sum()), int((right[1] & ~right[0]).sum())
    return Paired(
        images=n,
        only_base=only_base,
        only_head=only_head,
        changed_decisions=int((base_dec != head_dec).any(axis=1).sum()),
        p_value=mcnemar_exact(only_base, only_head),
        accuracy=(float(acc0[0]), float(acc1[0])),
        accuracy_change=interval(acc_change),
        f1_macro=(float(f10[0]), float(f11[0])),
        f1_macro_change=interval(f1_change),
        recall_macro=(float(r0[0]), float(r1[0])),
        recall_macro_change=interval(recall_change),
        classes=[
            ClassChange(name, float(per0[0, k]), float(per1[0, k]), interval(per_class[:, k]))
            for k, name in enumerate(classes)
        ],
    )


def compare_unpaired(base: Outcomes, head: Outcomes, resamples: int = RESAMPLES, seed: int = SEED) -> Unpaired:
    """Two records of different test sets: each side's own intervals, and the change in accuracy,
    macro F1 and macro recall between independent resamples of the two sides."""
    (base_alone, base_draws), (head_alone, head_draws) = (
        _alone(record, resamples, seed + side) for side, record in enumerate((base, head))
    )
    changes = [interval(h - b) for b, h in zip(base_draws, head_draws, strict=True)]
    return Unpaired(base_alone, head_alone, *changes)


def summarize_alone(outcomes: Outcomes, resamples: int = RESAMPLES, seed: int = SEED) -> Alone:
    """Accuracy, macro F1 and macro recall of one record, each with its own bootstrap interval."""
    return _alone(outcomes, resamples, seed)[0]


def _alone(outcomes: Outcomes, resamples: int, seed: int) -> tuple[Alone, tuple[np.ndarray, ...]]:
    score = Scorer(*outcomes.one_hot(), outcomes.correct())
    n = len(outcomes)
    (acc,), (f1,), _, (recall,) = score(np.ones((1, n)))
    draws = [(a, f, r) for a, f, _, r in (score(weights) for weights in bootstrap_weights(n, resamples, seed))]
    accs, f1s, recalls = (np.concatenate(d) for d in zip(*draws, strict=True))
    alone = Alone(n, float(acc), interval(accs), float(f1), interval(f1s), float(recall), interval(recalls))
    return alone, (accs, f1s, recalls)


def aligned(base: Outcomes, head: Outcomes) -> tuple[list[str], np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The classes of both records (base's first), the truth and both models' decisions as
    (N, K) bool arrays over them."""
    classes = base.classes + [c for c in head.classes if c not in base.classes]
    wide = []
    for record in (base, head):
        columns = [classes.index(c) for c in record.classes]
        pair = np.zeros((2, len(record), len(classes)), dtype=bool)  # truth, decisions
        pair[0][:, columns], pair[1][:, columns] = record.one_hot()
        wide.append(pair)
    return classes, wide[0][0], (wide[0][1], wide[1][1])


def bootstrap_weights(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Resamples of n images with replacement, as (B, N) counts of each image, in chunks."""
    rng = np.random.default_rng(seed)
    per_chunk = max(1, CHUNK // max(n, 1))
    for start in range(0, resamples, per_chunk):
        b = min(per_chunk, resamples - start)
        picks = rng.integers(0, n, size=(b, n)) + np.arange(b)[:, None] * n  # (B, N) flat indices
        yield np.bincount(picks.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)


class Scorer:
    """Accuracy, macro F1, per-class F1 and macro recall of one model's decisions on weighted images."""

    def __init__(self, truth: np.ndarray, decided: np.ndarray, right: np.ndarray):
        # (N, K) indicators, sparse: most images carry one class (a few labels) of K
        self.indicators = [sparse.csr_array(m.astype(np.float64)) for m in (truth & decided, truth, decided)]
        self.right = right.astype(np.float64)  # (N,)

    def __call__(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For (B, N) image weights: accuracy (B,), macro F1 (B,), F1 per class (B, K), NaN
        where a class has no true and no predicted image (left out of the macro average), and
        macro recall (B,) over the classes with a true image (single-label: balanced accuracy)."""
        tp, support, predicted = ((m.T @ weights.T).T for m in self.indicators)  # (B, K) each
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = 2 * tp / (support + predicted)
            recall = tp / support
        return weights @ self.right / weights.sum(axis=1), _nan_mean(f1), f1, _nan_mean(recall)


def _nan_mean(values: np.ndarray) -> np.ndarray:
    """(B, K) -> (B,): the mean of each row's defined values, 0 where none is."""
    defined = (~np.isnan(values)).sum(axis=1)
    return np.divide(np.nansum(values, axis=1), defined, out=np.zeros(len(values)), where=defined > 0)


def interval(draws: np.ndarray) -> Interval:
    """The central 1 - ALPHA percentile interval of bootstrap draws. NaN draws (a class with
    no image in that resample) are left out; when more than ALPHA of them are NaN, so is the
    interval: too few resamples say anything about that class."""
    defined = draws[~np.isnan(draws)]
    if not len(defined) or len(defined) < (1 - ALPHA) * len(draws):
        return Interval(math.nan, math.nan)
    draws = defined
    low, high = np.percentile(draws, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return Interval(float(low), float(high))
