"""The review's cross-validation section: Nadeau & Bengio's corrected interval, and what the
section says for one side, unpaired folds and paired folds."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from imgpipe.review.folds import Folds, corrected_interval, folds_section


def folds(scores: list[float], digest: str = "d1") -> Folds:
    per_fold = pd.DataFrame({"fold": range(len(scores)), "accuracy": scores, "f1_macro": scores})
    spread = {name: {"mean": per_fold[name].mean(), "std": per_fold[name].std(), "min": per_fold[name].min(),
                     "max": per_fold[name].max()} for name in ("accuracy", "f1_macro")}
    return Folds({"folds": len(scores), "digest": digest, "metrics": spread}, per_fold)


def test_the_corrected_interval_is_wider_than_the_plain_t_by_the_overlap():
    differences = [0.02, 0.01, 0.03, 0.00, 0.02]
    found = corrected_interval(differences, 5)
    plain = stats.ttest_1samp(differences, 0).confidence_interval(0.95)
    ratio = (found.high - found.low) / (plain.high - plain.low)
    assert ratio == pytest.approx(math.sqrt((1 / 5 + 1 / 4) / (1 / 5)))  # sqrt(9/4) = 1.5
    assert (found.low + found.high) / 2 == pytest.approx(0.016)


def test_the_section_pairs_only_equal_folds():
    assert folds_section(None, None) == ""
    alone = folds_section(None, folds([0.9, 0.92, 0.91]))
    assert "Only the head has cross-validation results" in alone and "0.9100 ± 0.0100" in alone
    other = folds_section(folds([0.9, 0.92, 0.91], "d1"), folds([0.95, 0.96, 0.97], "d2"))
    assert "The folds differ" in other and "by fold" not in other
    same = folds_section(folds([0.90, 0.92, 0.91]), folds([0.95, 0.96, 0.97]))
    assert "by fold: +0.0500, +0.0400, +0.0600" in same and "beyond noise" in same
