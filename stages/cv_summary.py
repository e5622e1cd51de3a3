"""cv_summary stage: every fold's held-out metrics as mean, spread and range (metrics.json), a
row per fold (folds.csv, for `dvc plots`), and the training images whose labels look wrong,
found from the out-of-fold probabilities with cleanlab (label_issues.tsv, the 12 most suspect
drawn in plots/images/suspect_01.png ..); docs/cross-validation.md.

\b
    python stages/cv_summary.py --params params.yaml --annotations data/annotations.csv \\
        --images data/augmented --folds cv/folds --out metrics/cv
"""

from pathlib import Path
from typing import Annotated

import typer

from imgpipe.core.layout import ANNOTATIONS, AUGMENTED, CV_FOLDS, CV_METRICS, LABEL_ISSUES
from imgpipe.core.params import load_params
from imgpipe.core.stage_app import make_app, reports_user_errors
from imgpipe.cv.summary import summarize

app = make_app()


@app.command(help=__doc__)
@reports_user_errors
def main(
    params: Annotated[Path, typer.Option(help="Params file; reads `seed` and `cv`.")] = Path("params.yaml"),
    annotations: Annotated[Path, typer.Option(help="Annotation file from the split stage.")] = ANNOTATIONS,
    images: Annotated[Path, typer.Option(help="The augment stage's folder (the suspect images are drawn from it).")] = AUGMENTED,
    folds: Annotated[Path, typer.Option(help="The cv_fold stages' folder: one sub-folder per fold.")] = CV_FOLDS,
    out: Annotated[Path, typer.Option(help="Folder for metrics.json, folds.csv, label_issues.tsv, plots/images/.")] = CV_METRICS,
) -> None:
    p = load_params(params)
    summary = summarize(p.cv, p.seed, annotations, images, folds, out)
    shown = ", ".join(f"{name} {s['mean']:.4f} ± {s['std']:.4f} ({s['min']:.4f} to {s['max']:.4f})"
                      for name, s in summary["metrics"].items() if name in ("accuracy", "f1_macro", "exact_match_accuracy"))
    print(f"cv_summary: {summary['folds']} folds, {summary['images']} held-out images: {shown}")
    print(f"cv_summary: {summary['label_issues']} label issue(s) -> {out / LABEL_ISSUES}")


if __name__ == "__main__":
    app()
