"""Evaluate stage: test-split accuracy, macro precision/recall/F1, per-class table, confusion
matrix, and the test images the model got most wrong (plots/images/mistake_01.png is the worst).

\b
    python stages/evaluate.py --model models/model.pt --annotations data/annotations.csv \\
        --images data/augmented --out metrics/evaluate
"""

from pathlib import Path
from typing import Annotated

import typer

from imgpipe.core.layout import ANNOTATIONS, AUGMENTED, EVALUATE_METRICS, MODEL
from imgpipe.core.stage_app import make_app, reports_user_errors
from imgpipe.evaluate.stage import evaluate

app = make_app()


@app.command(help=__doc__)
@reports_user_errors
def main(
    model: Annotated[Path, typer.Option(help="Model file from the train stage.")] = MODEL,
    annotations: Annotated[Path, typer.Option(help="Annotation file from the split stage.")] = ANNOTATIONS,
    images: Annotated[Path, typer.Option(help="The augment stage's folder: the annotation file's `file` column is relative to it.")] = AUGMENTED,
    out: Annotated[Path, typer.Option(help="Folder for metrics.json, per_class.csv, confusion.json, plots/images/mistake_*.png.")] = EVALUATE_METRICS,
) -> None:
    metrics = evaluate(model, annotations, images, out)
    print("evaluate: " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))


if __name__ == "__main__":
    app()
