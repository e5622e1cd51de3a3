"""cv_fold stage: train fold `--fold` of `cv.folds` on the other folds' images, with the run's
params, and score its held-out images (docs/cross-validation.md).

The training is the train stage's, memory check, progress and torchrun launch included
(`train.nproc_per_node`); an interrupted fold resumes from cv/.work/<fold>.

\b
    python stages/cv_fold.py --params params.yaml --annotations data/annotations.csv \\
        --images data/augmented --fold 0 --out cv/folds/0
"""

from pathlib import Path
from typing import Annotated

import typer

from imgpipe.core.layout import ANNOTATIONS, AUGMENTED, CV_FOLDS
from imgpipe.core.params import load_params
from imgpipe.core.stage_app import in_worker, make_app, reports_user_errors
from imgpipe.cv.fold import prepare, score_fold, train_fold, work_dir
from imgpipe.train.distributed import rank_argv, run_or_launch

app = make_app()


@app.command(help=__doc__)
@reports_user_errors
def main(
    fold: Annotated[int, typer.Option(help="The fold to hold out: one of `cv.folds`.")],
    params: Annotated[Path, typer.Option(help="Params file; reads `seed`, `model`, `model_args`, `image`, `train`, `cv`.")] = Path("params.yaml"),
    annotations: Annotated[Path, typer.Option(help="Annotation file from the split stage.")] = ANNOTATIONS,
    images: Annotated[Path, typer.Option(help="The augment stage's folder: the annotation file's `file` column is relative to it.")] = AUGMENTED,
    out: Annotated[Path, typer.Option(help="Folder for the fold's scores, metrics and training log.")] = CV_FOLDS / "0",
) -> None:
    p = load_params(params)
    work = work_dir(fold)
    table, digest = prepare(p, annotations, fold, work)
    if not in_worker():
        print(f"cv_fold: fold {fold} of {p.cv.k}: training on the other {p.cv.k - 1} folds")
    argv = rank_argv(__file__, fold=fold, params=params, annotations=annotations, images=images, out=out)
    run_or_launch(p.train, argv, lambda ranks: train_fold(p, table, images, work, ranks))
    if in_worker():  # the launcher scores, once the ranks are done
        return
    metrics = score_fold(fold, p.cv.k, digest, table, images, work, out)
    print(f"cv_fold: fold {fold}: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)) + f" -> {out}")


if __name__ == "__main__":
    app()
