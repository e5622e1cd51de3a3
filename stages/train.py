"""Train stage: fit `model` on the train split and keep the best epoch on `train.monitor`.

Single-label or multi-label, as the annotation file says; multi-label models also store their
decision rule (per-label thresholds, one-of label groups). With `train.nproc_per_node` or
`train.nnodes` above 1 it launches itself as that many ranks under torchrun
(docs/distributed.md); started by torchrun, it trains as one of them.

\b
    python stages/train.py --params params.yaml --annotations data/annotations.csv \\
        --images data/augmented --out models/model.pt --metrics metrics/train
"""

from pathlib import Path
from typing import Annotated

import typer

from imgpipe.core.layout import ANNOTATIONS, AUGMENTED, MODEL, TRAIN_METRICS
from imgpipe.core.params import load_params
from imgpipe.core.stage_app import make_app, reports_user_errors
from imgpipe.train.distributed import rank_argv, run_or_launch
from imgpipe.train.stage import train

app = make_app()


@app.command(help=__doc__)
@reports_user_errors
def main(
    params: Annotated[Path, typer.Option(help="Params file; reads `seed`, `model`, `model_args`, `image`, `train`.")] = Path("params.yaml"),
    annotations: Annotated[Path, typer.Option(help="Annotation file from the split stage.")] = ANNOTATIONS,
    images: Annotated[Path, typer.Option(help="The augment stage's folder: the annotation file's `file` column is relative to it.")] = AUGMENTED,
    out: Annotated[Path, typer.Option(help="Model file to write.")] = MODEL,
    metrics: Annotated[Path, typer.Option(help="dvclive folder for training metrics.")] = TRAIN_METRICS,
) -> None:
    p = load_params(params)
    argv = rank_argv(__file__, params=params, annotations=annotations, images=images, out=out, metrics=metrics)
    best = run_or_launch(p.train, argv, lambda ranks: train(
        p.model, p.image, p.train, p.seed, annotations, images, out, metrics, model_args=p.model_args, ranks=ranks))
    if best:  # rank 0, or the only process
        print(f"train: best epoch {best['epoch']} (val/accuracy {best['val/accuracy']:.4f}) -> {out}")


if __name__ == "__main__":
    app()
