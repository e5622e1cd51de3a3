"""Predict stage: the class name and its probability for every image in `predict.input`.

\b
    python stages/predict.py --params params.yaml --model models/model.pt \\
        --out predictions/predictions.tsv
"""

from pathlib import Path
from typing import Annotated

import typer

from imgpipe.core.layout import ANNOTATIONS, AUGMENTED, MODEL, PREDICTIONS
from imgpipe.core.params import load_params
from imgpipe.core.stage_app import make_app, reports_user_errors
from imgpipe.predict.stage import images_to_predict, predict

app = make_app()


@app.command(help=__doc__)
@reports_user_errors
def main(
    params: Annotated[Path, typer.Option(help="Params file; reads `predict`.")] = Path("params.yaml"),
    model: Annotated[Path, typer.Option(help="Model file from the train stage.")] = MODEL,
    annotations: Annotated[Path, typer.Option(help="Annotation file (used when predict.input is null).")] = ANNOTATIONS,
    images: Annotated[Path, typer.Option(help="The augment stage's folder: the annotation file's `file` column is relative to it.")] = AUGMENTED,
    out: Annotated[Path, typer.Option(help="TSV file to write.")] = PREDICTIONS,
) -> None:
    p = load_params(params)
    paths = images_to_predict(p.predict.input, annotations, images)
    table = predict(model, paths, out)
    print(f"predict: {len(table)} images -> {out}")


if __name__ == "__main__":
    app()
