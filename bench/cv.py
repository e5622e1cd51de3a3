"""What k-fold cross-validation costs, and how well its label issues find known wrong labels,
measured with the pipeline as DVC runs it.

    .venv/bin/python bench/cv.py [--folds 5] [--part cost,labels] [--workdir DIR]

cost: a git + DVC copy of this repo's pipeline with the default params. `dvc repro` (the whole
default pipeline), then `dvc repro -f -s train` (one training, as DVC starts the stage), then
`dvc exp run -S cv.folds=[0..K-1] -S cv.summary=[K]`, which must run only the K cv_fold stages
and the summary. Prints each one's seconds, the folds' cost in trainings, and the folds' mean and
spread of accuracy and macro F1.

labels: `dvc repro cv_summary@K` on `builtin:digits-mislabelled` (5% of the scans filed under a
wrong digit, `imgpipe.data.sources.mislabelled_digits` is the answer key) with the default
params otherwise (augmentation and epochs as params.yaml has them). Prints how many wrong labels
fell in train+val, how many issues were flagged, precision and recall at N = the number wrong,
and how often the suggested label is the true digit.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import pandas as pd
from common import BIN, make_project, run

from imgpipe.core.layout import ANNOTATIONS, CV_METRICS, LABEL_ISSUES, METRICS_FILE
from imgpipe.data.sources import mislabelled_digits


def cv_params(k: int) -> dict:
    return {"cv": {"folds": list(range(k)), "summary": [k]}}


def timed(args: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    out = run(args, cwd).stdout
    return time.perf_counter() - start, out


def ran(out: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", out)


def spread(summary: dict, name: str) -> str:
    s = summary["metrics"][name]
    return f"{s['mean']:.4f} ± {s['std']:.4f} ({s['min']:.4f} to {s['max']:.4f})"


def cost(root: Path, k: int) -> None:
    project = make_project(root / "cost", {})
    dvc = str(BIN / "dvc")
    pipeline, _ = timed([dvc, "repro"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "default run"], project)
    training, _ = timed([dvc, "repro", "-f", "-s", "train"], project)
    sets = [a for key, value in cv_params(k)["cv"].items() for a in ("-S", f"cv.{key}={json.dumps(value).replace(' ', '')}")]
    folds, out = timed([dvc, "exp", "run", *sets], project)
    stages = ran(out)
    expected = [*(f"cv_fold@{f}" for f in range(k)), f"cv_summary@{k}"]
    if sorted(stages) != sorted(expected):
        raise SystemExit(f"dvc exp run ran {stages}, not only the cross-validation stages {expected}")
    summary = json.loads((project / CV_METRICS / METRICS_FILE).read_text())
    print(f"cost, default digits, {k} folds ({summary['images']} held-out images):")
    print(f"  dvc repro, the whole default pipeline:  {pipeline:7.1f} s")
    print(f"  dvc repro -f -s train, one training:    {training:7.1f} s")
    print(f"  dvc exp run, {k} folds and the summary:   {folds:7.1f} s = {folds / training:.2f} trainings "
          f"({folds / k / training:.2f} per fold; each trains on {k - 1}/{k} of train+val)")
    print(f"  accuracy {spread(summary, 'accuracy')}, macro F1 {spread(summary, 'f1_macro')}")


def labels(root: Path, k: int) -> None:
    project = make_project(root / "labels", {"data": {"source": "builtin:digits-mislabelled"}, **cv_params(k)})
    seconds, out = timed([str(BIN / "dvc"), "repro", f"cv_summary@{k}"], project)
    truth = {name: str(digit) for name, digit in mislabelled_digits().items()}
    table = pd.read_csv(project / ANNOTATIONS, dtype=str, keep_default_na=False)
    held_out = table[(table["split"] != "test") & (table["transform"] == "original")]  # what the folds score
    in_folds = {p.rsplit("/", 1)[-1] for p in held_out["path"]}
    wrong = {name for name in truth if name in in_folds}
    issues = pd.read_csv(project / CV_METRICS / LABEL_ISSUES, sep="\t", dtype=str, keep_default_na=False)
    names = issues["path"].str.rsplit("/", n=1).str[-1]
    top = set(names.head(len(wrong)))
    found = top & wrong
    suggested = dict(zip(names, issues["suggested"], strict=True))
    right = sum(suggested[name] == truth[name] for name in found)
    flagged_wrong = len(set(names) & wrong)
    summary = json.loads((project / CV_METRICS / METRICS_FILE).read_text())
    print(f"labels, builtin:digits-mislabelled at the default params, {k} folds ({seconds:.0f} s for "
          f"{len(ran(out))} stages):")
    print(f"  {len(truth)} scans filed under a wrong digit, {len(wrong)} of them in train+val; "
          f"{len(issues)} issues flagged, {flagged_wrong} of them wrong labels")
    shown = min(len(wrong), len(issues))  # the top N rows, or every row when fewer are flagged
    print(f"  top {shown} (N = {len(wrong)}): recall {len(found) / len(wrong):.3f}, precision {len(found) / max(shown, 1):.3f}; "
          f"all flagged: precision {flagged_wrong / max(len(issues), 1):.3f}, recall {flagged_wrong / len(wrong):.3f}")
    print(f"  the suggested label is the true digit for {right} of the {len(found)} found")
    print(f"  held-out accuracy {spread(summary, 'accuracy')} (against the labels as filed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--part", default="cost,labels", help="comma-separated: cost, labels")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the projects here (default: a temporary folder)")
    args = parser.parse_args()
    parts = {"cost": cost, "labels": labels}
    chosen = args.part.split(",")
    if unknown := set(chosen) - parts.keys():
        raise SystemExit(f"--part: unknown {sorted(unknown)}; choose from {sorted(parts)}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for name in chosen:
            parts[name](root, args.folds)


if __name__ == "__main__":
    main()
