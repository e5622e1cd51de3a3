"""The review's cross-validation section: each side's fold means with their spread, and, when
both sides held out the same images fold by fold (equal fold digests), the per-fold paired
differences with a corrected resampled t interval.

K-fold differences are not independent: any two folds' training sets share (K-2)/(K-1) of their
images, so the plain paired t interval over folds is too narrow. Nadeau & Bengio ("Inference for
the Generalization Error", Machine Learning 52, 2003) inflate the variance of the mean
difference from s²/K to (1/K + n_test/n_train)·s², n_test/n_train = 1/(K-1) for K folds
(Bouckaert & Frank, 2004, use the same correction for cross-validation).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from scipy import stats

from imgpipe.core.layout import CV_METRICS, FOLDS_TABLE, METRICS_FILE
from imgpipe.review.markdown import table
from imgpipe.review.revisions import Revision, read_text
from imgpipe.review.stats import ALPHA, LEVEL, Interval

# The metrics the section shows, in this order, when a side has them (single-label, multi-label).
SHOWN = ("accuracy", "exact_match_accuracy", "f1_macro", "balanced_accuracy", "calibration.ece")


@dataclass(frozen=True)
class Folds:
    summary: dict  # metrics/cv/metrics.json
    per_fold: pd.DataFrame  # metrics/cv/folds.csv: a row per fold

    @property
    def k(self) -> int:
        return int(self.summary["folds"])


@dataclass(frozen=True)
class FoldChange:
    name: str
    differences: list[float]  # head - base, fold by fold
    mean: float
    interval: Interval  # corrected resampled t, LEVEL


def load_folds(repo: Path, revision: Revision) -> Folds | None:
    """The revision's committed cross-validation results, or None when it has none."""
    summary = read_text(repo, revision, (CV_METRICS / METRICS_FILE).as_posix())
    per_fold = read_text(repo, revision, (CV_METRICS / FOLDS_TABLE).as_posix())
    if summary is None or per_fold is None:
        return None
    return Folds(json.loads(summary), pd.read_csv(io.StringIO(per_fold)))


def corrected_interval(differences: list[float], k: int) -> Interval:
    """The LEVEL interval for the mean of K fold differences, Nadeau & Bengio's correction."""
    n = len(differences)
    mean = sum(differences) / n
    sd = pd.Series(differences).std(ddof=1)
    half = stats.t.ppf(1 - ALPHA / 2, n - 1) * math.sqrt((1 / n + 1 / (k - 1)) * sd**2)
    return Interval(mean - half, mean + half)


def fold_changes(base: Folds, head: Folds) -> list[FoldChange]:
    """Per shown metric both sides have, the head's minus the base's score on each fold."""
    found = []
    for name in SHOWN:
        if name in base.per_fold and name in head.per_fold:
            differences = (head.per_fold[name] - base.per_fold[name]).tolist()
            found.append(FoldChange(name, differences, sum(differences) / len(differences), corrected_interval(differences, head.k)))
    return found


def folds_section(base: Folds | None, head: Folds | None) -> str:
    """Markdown: nothing when neither side cross-validated."""
    if base is None and head is None:
        return ""
    title = "### Cross-validation\n\n"
    sides = [(name, side) for name, side in (("base", base), ("head", head)) if side is not None]
    names = [n for n in SHOWN if all(n in side.summary["metrics"] for _, side in sides)]
    rows = [[n] + [spread_text(side.summary["metrics"][n]) for _, side in sides] for n in names]
    header = ["metric"] + [f"{name} ({side.k} folds): mean ± sd (min to max)" for name, side in sides]
    text = title + table(header, rows)
    if len(sides) == 1:
        return text + f"\n\nOnly the {sides[0][0]} has cross-validation results (`cv.folds`); nothing to pair."
    if base.summary.get("digest") != head.summary.get("digest"):
        return text + ("\n\nThe folds differ (other data, `cv.folds` or `seed`): the fold means are not paired, "
                       "compare them with their spread.")
    changes = fold_changes(base, head)
    lines = [f"- **{c.name}** {signed(c.mean)}; {LEVEL} interval {signed(c.interval.low)} to {signed(c.interval.high)} "
             f"({'beyond noise' if c.interval.excludes_zero() else 'within noise'}); by fold: "
             + ", ".join(signed(d) for d in c.differences) for c in changes]
    return (text + "\n\nThe same images held out fold by fold on both sides: the change in each fold's score "
            "(head − base), with a t interval over the folds whose variance is corrected for their overlapping "
            "training sets (Nadeau & Bengio, 2003):\n\n" + "\n".join(lines))


def spread_text(s: dict) -> str:
    return f"{s['mean']:.4f} ± {s['std']:.4f} ({s['min']:.4f} to {s['max']:.4f})"


def signed(x: float) -> str:
    return f"{x:+.4f}"
