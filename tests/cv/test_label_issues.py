"""Label issues from out-of-fold probabilities find labels known to be wrong: 5% of the
built-in digits are filed under another digit (`builtin:digits-mislabelled`), the cv stages run,
and most of the moved scans head metrics/cv/label_issues.tsv."""

from __future__ import annotations

import json

import pandas as pd
from support.project import prepare, run_stages, stage_in_process

from imgpipe.data.sources import mislabelled_digits

FOLDS = 5


def test_flipped_digits_head_the_label_issues(tmp_path):
    flipped = {name: str(digit) for name, digit in mislabelled_digits().items()}
    overrides = {
        "data": {"source": "builtin:digits-mislabelled"},
        "augment": {"rotations": [], "shear": 0},  # originals only: a quick run
        "train": {"epochs": 6},
        "cv": {"folds": list(range(FOLDS)), "summary": [FOLDS]},
    }
    work = prepare(tmp_path / "work", overrides)
    annotations = pd.read_csv(work / "data/annotations.csv", dtype=str, keep_default_na=False)
    in_folds = {p.rsplit("/", 1)[-1] for p in annotations.loc[annotations["split"] != "test", "path"]}
    wrong = {name for name in flipped if name in in_folds}  # a flipped test image is in no fold
    for fold in range(FOLDS):
        stage_in_process("cv_fold", "--fold", str(fold), "--out", f"cv/folds/{fold}", cwd=work, check=True)
    run_stages(work, ("cv_summary",))

    issues = pd.read_csv(work / "metrics/cv/label_issues.tsv", sep="\t", dtype=str, keep_default_na=False)
    top = {p.rsplit("/", 1)[-1] for p in issues["path"].head(len(wrong))}
    precision = recall = len(top & wrong) / len(wrong)  # at N = the number flipped, the two are equal
    print(f"label issues: {len(wrong)} flipped in train+val, {len(issues)} flagged; at N={len(wrong)}: "
          f"precision {precision:.3f}, recall {recall:.3f}")
    assert recall >= 0.6
    suggested = issues.set_index(issues["path"].str.rsplit("/", n=1).str[-1])["suggested"]
    right_digit = sum(suggested.get(name) == flipped[name] for name in top & wrong)
    assert right_digit >= 0.8 * len(top & wrong)  # the suggestion is mostly the true digit

    summary = json.loads((work / "metrics/cv/metrics.json").read_text())
    assert summary["folds"] == FOLDS and summary["images"] == len(in_folds)
    assert 0.8 < summary["metrics"]["accuracy"]["mean"] < 1.0 and summary["metrics"]["accuracy"]["std"] > 0
    per_fold = pd.read_csv(work / "metrics/cv/folds.csv")
    assert list(per_fold["fold"]) == list(range(FOLDS))
    assert summary["metrics"]["accuracy"]["mean"] == per_fold["accuracy"].mean()
    assert sorted(p.name for p in (work / "metrics/cv/plots/images").iterdir()) == [f"suspect_{r:02d}.png" for r in range(1, 13)]
