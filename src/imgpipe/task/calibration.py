"""Do the probabilities mean what they say? Calibration scores, the reliability diagram's bins,
and temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks").

Everything works on logits (N, K) as float64, already divided by the model's temperature, so a
log-probability never underflows to log(0):

- single-label: the top-label confidence (the largest softmax probability) against whether the
  argmax is right; NLL is the cross-entropy of the true class; Brier is the squared distance of
  the probability vector from the one-hot truth, summed over classes (0 best, 2 worst);
- multi-label: every label's sigmoid probability against whether the label is present, pooled
  over the labels (and per label for `per_class.csv`); NLL and Brier are means over images and
  labels of the binary cross-entropy and of (p - y)^2.

ECE is the count-weighted mean |accuracy - confidence| over `BINS` equal-width bins of (0, 1].
A temperature T divides the logits before the softmax (sigmoid); it is fitted on the val split
by minimising NLL, one for single-label, one per label for multi-label. T > 0 changes no argmax,
so single-label decisions stay exactly as they were. numpy and scipy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BINS = 15
# The temperatures a fit may choose: probabilities at most 20x sharper or flatter than trained.
LOWEST, HIGHEST = 0.05, 20.0


@dataclass(frozen=True)
class Calibration:
    """One split's calibration: the scores, the reliability diagram's bins, per-label ECE."""

    scores: dict[str, float]  # ece, nll, brier
    bins: list[dict]  # reliability diagram rows: bin, confidence, accuracy, count (non-empty bins)
    per_label_ece: list[float | None]  # multi-label: one per label (None: no probability at all); single-label: empty


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def log_sigmoid(logits: np.ndarray) -> np.ndarray:
    """log(sigmoid(z)), stable for large |z|."""
    return -np.logaddexp(0.0, -logits)


def reliability_bins(confidence: np.ndarray, hit: np.ndarray, bins: int = BINS) -> list[dict]:
    """Rows of the non-empty bins of (0, 1]: `bin` (1-based), the bin's mean `confidence`, its
    `accuracy` (the fraction right, or present), and `count`."""
    index = bin_index(confidence, bins)
    counts = np.bincount(index, minlength=bins)
    conf = np.bincount(index, weights=confidence, minlength=bins)
    right = np.bincount(index, weights=hit.astype(np.float64), minlength=bins)
    return [
        {"bin": b + 1, "low": round(b / bins, 6), "high": round((b + 1) / bins, 6),
         "confidence": round(float(conf[b] / counts[b]), 6), "accuracy": round(float(right[b] / counts[b]), 6),
         "count": int(counts[b])}
        for b in range(bins) if counts[b]
    ]


def bin_index(confidence: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Bin b holds (b / bins, (b + 1) / bins]; 0 goes in the first."""
    return np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)


def expected_calibration_error(confidence: np.ndarray, hit: np.ndarray, bins: int = BINS) -> float:
    if not len(confidence):
        return math.nan
    index = bin_index(confidence, bins)
    counts = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, weights=hit.astype(np.float64) - confidence, minlength=bins))
    return float(gap.sum() / counts.sum())


def single_label(logits: np.ndarray, targets: np.ndarray) -> Calibration:
    """`logits` (N, K) float64, `targets` (N,) class indices."""
    log_p = log_softmax(logits)
    probs = np.exp(log_p)
    rows = np.arange(len(targets))
    confidence, hit = probs.max(axis=1), probs.argmax(axis=1) == targets
    probs[rows, targets] -= 1  # now p - one-hot
    scores = {
        "ece": expected_calibration_error(confidence, hit),
        "nll": float(-log_p[rows, targets].mean()),
        "brier": float((probs**2).sum(axis=1).mean()),
    }
    return Calibration(scores, reliability_bins(confidence, hit), [])


def multi_label(logits: np.ndarray, targets: np.ndarray) -> Calibration:
    """`logits` (N, K) float64, `targets` (N, K) 0/1."""
    truth = targets.astype(bool)
    probs = 1 / (1 + np.exp(-logits))
    nll = -(np.where(truth, log_sigmoid(logits), log_sigmoid(-logits)))
    scores = {
        "ece": expected_calibration_error(probs.ravel(), truth.ravel()),
        "nll": float(nll.mean()),
        "brier": float(((probs - truth) ** 2).mean()),
    }
    per_label = [expected_calibration_error(probs[:, k], truth[:, k]) for k in range(probs.shape[1])]
    return Calibration(scores, reliability_bins(probs.ravel(), truth.ravel()), [None if math.isnan(e) else e for e in per_label])


def fit_single_label(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature that minimises the cross-entropy of `targets` under softmax(logits / T).

    Val data whose every argmax is right has no minimum: its NLL falls without end as T -> 0,
    and a fit would only find the bound, 20x more certain than trained, which the first test
    mistake pays for. Such a split says nothing about how unsure the model is, so T stays 1."""
    if (logits.argmax(axis=1) == targets).all():
        return 1.0
    rows = np.arange(len(targets))
    return _fit(lambda t: -log_softmax(logits / t)[rows, targets].mean())


def fit_multi_label(logits: np.ndarray, targets: np.ndarray) -> list[float]:
    """One temperature per label, each minimising that label's binary cross-entropy. A label that
    val shows only present or only absent has nothing to calibrate against, and one whose every
    probability is on the right side of 0.5 has no minimum (see `fit_single_label`): both keep 1."""
    truth = targets.astype(bool)
    temperatures = []
    for k in range(logits.shape[1]):
        z, y = logits[:, k], truth[:, k]
        if y.all() or not y.any() or ((z > 0) == y).all():
            temperatures.append(1.0)
            continue
        temperatures.append(_fit(lambda t, z=z, y=y: -np.where(y, log_sigmoid(z / t), log_sigmoid(-z / t)).mean()))
    return temperatures


def _fit(nll) -> float:
    """Minimise a function of T over [LOWEST, HIGHEST], searched on log T (Brent, bounded)."""
    # imported here: the predict path reads kinds without fitting, and scipy costs it 0.3 s
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(lambda u: nll(math.exp(u)), bounds=(math.log(LOWEST), math.log(HIGHEST)),
                            method="bounded", options={"xatol": 1e-5})
    return round(math.exp(float(found.x)), 6)
