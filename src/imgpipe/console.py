"""The `imgpipe` command, installed with the package.

\b
    imgpipe review --base main                               # Markdown to stdout
    imgpipe review --base origin/main --out review/review.md # plus PNG plots in review/review_files/
    imgpipe train-worker --rdzv-endpoint head-host:29400     # on each other machine of a multi-machine run
    imgpipe predict photos/ extra.jpg --top-k 3              # classes and probabilities, TSV to stdout
    imgpipe evaluate --data holdout/ --out results/          # evaluate's metrics on a labelled folder
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from imgpipe.core.errors import UserError
from imgpipe.core.layout import ANNOTATIONS, AUGMENTED, MODEL, TRAIN_METRICS
from imgpipe.core.stage_app import make_app, reports_user_errors
from imgpipe.review.defaults import RESAMPLES, WORKSPACE

# Each command imports what it runs when it runs: `imgpipe predict` with an ONNX model starts
# without torch, scipy or the review's modules (docs/inference.md times it).

app = make_app()


@app.callback(help=__doc__)
def main() -> None:
    """Subcommands of imgpipe."""


@app.command(help="Compare the committed results of two revisions: what changed, and is it more than noise?")
@reports_user_errors
def review(
    base: Annotated[str, typer.Option(help="Revision to compare against: the pull request's target (main, origin/main, a SHA).")],
    head: Annotated[str, typer.Option(help="Revision under review; `workspace` is the working tree.")] = WORKSPACE,
    out: Annotated[Path | None, typer.Option(help="Write the Markdown here, and the plots as PNG files into <stem>_files/ beside it.")] = None,
    fail_stale: Annotated[bool, typer.Option(help="Exit 1 after writing the report when the head's results are stale.")] = False,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples for the intervals.")] = RESAMPLES,
) -> None:
    from imgpipe.review.report import plots_folder
    from imgpipe.review.report import review as build_review

    result = build_review(Path.cwd(), base, head, out, resamples)
    if out is None:
        sys.stdout.write(result.markdown)
    else:
        print(f"review: {out}, {len(result.plots)} plots in {plots_folder(out)}", file=sys.stderr)
    if fail_stale and result.stale:
        raise UserError(f"the head's committed results are stale ({', '.join(result.stale)}): rerun dvc repro and commit dvc.lock and metrics/")


@app.command(name="train-worker")
@reports_user_errors
def train_worker(
    rdzv_endpoint: Annotated[str | None, typer.Option(help="host:port where the head machine's run waits (default: train.rdzv_endpoint).")] = None,
    nnodes: Annotated[int | None, typer.Option(min=2, help="Machines in the run, the head's train.nnodes (default: train.nnodes).")] = None,
    nproc_per_node: Annotated[str | None, typer.Option(help="Ranks on this machine: N or auto (default: train.nproc_per_node).")] = None,
    params: Annotated[Path, typer.Option(help="The params file, the same as the head's.")] = Path("params.yaml"),
    annotations: Annotated[Path, typer.Option(help="As the train stage's option.")] = ANNOTATIONS,
    images: Annotated[Path, typer.Option(help="As the train stage's option.")] = AUGMENTED,
    out: Annotated[Path, typer.Option(help="As the train stage's option (only the head writes it; decoded images go beside it).")] = MODEL,
    metrics: Annotated[Path, typer.Option(help="As the train stage's option (only the head writes it).")] = TRAIN_METRICS,
) -> None:
    """Join a multi-machine training run whose head machine runs `dvc repro` (or `dvc exp run`)
    with train.nnodes > 1: starts this machine's ranks under torchrun. Run it in the project's
    root, at the head's commit, after `dvc pull` (docs/distributed.md). The options override
    params.yaml's launch keys, which are not part of what is trained, so an `exp run -S` on the
    head needs no edit here."""
    from imgpipe.core.params import load_params
    from imgpipe.train.distributed import join, rank_argv

    script = Path("stages/train.py")
    if not script.is_file():
        raise UserError(f"{script} not found: run imgpipe train-worker in the project's root, at the head's commit")
    argv = rank_argv(str(script), params=params, annotations=annotations, images=images, out=out, metrics=metrics)
    join(load_params(params).train, argv, rdzv_endpoint=rdzv_endpoint, nnodes=nnodes, nproc_per_node=nproc_per_node)


@app.command()
@reports_user_errors
def predict(
    paths: Annotated[list[Path], typer.Argument(metavar="IMAGE_OR_FOLDER", help="Image files, and folders searched recursively.", show_default=False)],
    model: Annotated[Path, typer.Option(help="Model file from the train stage, or its ONNX export (models/model.onnx: runs without torch).")] = MODEL,
    top_k: Annotated[int, typer.Option(help="How many of the most probable classes (labels) to list per image.")] = 3,
    output_format: Annotated[str, typer.Option("--format", help="tsv (a header, one row per image) or json (a list of objects).")] = "tsv",
) -> None:
    """Classify new images as the predict stage does (same reader, same decision rule) and list the
    top-k classes with their probabilities; to stdout, progress to stderr (docs/inference.md).
    An image that cannot be read is skipped and named on stderr; the exit status is then 3."""
    from imgpipe.core.notes import say
    from imgpipe.predict.rows import FORMATS, SOME_SKIPPED, images_named, prediction_rows
    from imgpipe.predict.stage import open_model

    if top_k < 1:
        raise UserError(f"--top-k {top_k}: give an integer >= 1")
    if output_format not in FORMATS:
        raise UserError(f"--format '{output_format}' is not one of: {', '.join(FORMATS)}")
    images = images_named(paths)
    result = prediction_rows(open_model(model), images, top_k=top_k)
    try:
        FORMATS[output_format](result.rows, sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:  # `imgpipe predict ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return
    say("predict", result.notes())
    print(f"predict: {result.summary()}", file=sys.stderr)
    if result.unread:
        raise typer.Exit(SOME_SKIPPED)


@app.command()
@reports_user_errors
def evaluate(
    data: Annotated[str, typer.Option(help="Labelled images never seen by the pipeline: a folder (class sub-folders, or images and an annotation file), an archive, or an archive's URL.", show_default=False)],
    model: Annotated[Path, typer.Option(help="Model file from the train stage.")] = MODEL,
    out: Annotated[Path | None, typer.Option(help="Keep the evaluate stage's files here (metrics.json, per_class.csv, ...); default: printed only.")] = None,
) -> None:
    """Score the model on a labelled folder with the evaluate stage's metrics: the data is read
    as the download stage reads data.source, every image counts as test (docs/inference.md)."""
    from imgpipe.evaluate.on_data import evaluate_data

    metrics = evaluate_data(model, data, out)
    shown = {k: f"{v:.4f}" if isinstance(v, float) else v for k, v in metrics.items() if isinstance(v, int | float)}
    print("evaluate: " + " ".join(f"{k} {v}" for k, v in shown.items()))
    if out is not None:
        print(f"evaluate: files in {out}", file=sys.stderr)


if __name__ == "__main__":
    app()
