"""Predict stage: the class name and its probability for every image in `predict.input` (null:
the test split), with the trained model (`predict.model: pt`) or its ONNX export (`onnx`, no
torch). An image that cannot be read is left out and named on stderr; the others get their rows.

\b
    python stages/predict.py --params params.yaml --model models/model.pt --onnx-model models/model.onnx \\
        --out predictions/predictions.tsv
"""

from pathlib import Path
from typing import Annotated

import typer

from imgpipe.core.layout import ANNOTATIONS, AUGMENTED, MODEL, ONNX_MODEL, PREDICTIONS
from imgpipe.core.notes import say
from imgpipe.core.params import load_params
from imgpipe.core.stage_app import make_app, reports_user_errors
from imgpipe.predict.stage import predict_stage

app = make_app()


@app.command(help=__doc__)
@reports_user_errors
def main(
    params: Annotated[Path, typer.Option(help="Params file; reads `predict`.")] = Path("params.yaml"),
    model: Annotated[Path, typer.Option(help="Model file from the train stage (predict.model: pt).")] = MODEL,
    onnx_model: Annotated[Path, typer.Option(help="ONNX file from the export stage (predict.model: onnx).")] = ONNX_MODEL,
    annotations: Annotated[Path, typer.Option(help="Annotation file (used when predict.input is null).")] = ANNOTATIONS,
    images: Annotated[Path, typer.Option(help="The augment stage's folder: the annotation file's `file` column is relative to it.")] = AUGMENTED,
    out: Annotated[Path, typer.Option(help="TSV file to write.")] = PREDICTIONS,
) -> None:
    result = predict_stage(load_params(params), model, onnx_model, annotations, images, out)
    say("predict", result.notes())
    print(f"predict: {result.summary()} -> {out}")


if __name__ == "__main__":
    app()
