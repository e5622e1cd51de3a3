"""Export stage: models/model.onnx (uint8 images in, probabilities out, preprocessing inside),
gated on parity with torch over the test split, timed, and described in a model card.

\b
    python stages/export.py --params params.yaml --model models/model.pt --annotations data/annotations.csv \\
        --images data/augmented --out models/model.onnx --metrics metrics/export
"""

from pathlib import Path
from typing import Annotated

import typer

from imgpipe.core.layout import (
    ANNOTATIONS,
    AUGMENTED,
    DOWNLOAD_METRICS,
    EVALUATE_METRICS,
    EXPORT_METRICS,
    MODEL,
    ONNX_MODEL,
)
from imgpipe.core.params import load_params
from imgpipe.core.stage_app import make_app, reports_user_errors
from imgpipe.export.stage import EarlierResults, export_stage

app = make_app()


@app.command(help=__doc__)
@reports_user_errors
def main(
    params: Annotated[Path, typer.Option(help="Params file; reads `export`, and the params the card reports.")] = Path("params.yaml"),
    model: Annotated[Path, typer.Option(help="Model file from the train stage.")] = MODEL,
    annotations: Annotated[Path, typer.Option(help="Annotation file from the split stage (the test split is the parity set).")] = ANNOTATIONS,
    images: Annotated[Path, typer.Option(help="The augment stage's folder: the annotation file's `file` column is relative to it.")] = AUGMENTED,
    out: Annotated[Path, typer.Option(help="ONNX file to write.")] = ONNX_MODEL,
    metrics: Annotated[Path, typer.Option(help="Folder for metrics.json (parity, speed) and model_card.md.")] = EXPORT_METRICS,
    download_metrics: Annotated[Path, typer.Option(help="The download stage's results (the card's data section).")] = DOWNLOAD_METRICS,
    evaluate_metrics: Annotated[Path, typer.Option(help="The evaluate stage's results (the card's test metrics).")] = EVALUATE_METRICS,
) -> None:
    result = export_stage(load_params(params), model, annotations, images, out, metrics, EarlierResults(download_metrics, evaluate_metrics))
    gate, speed = result["parity"], result["speed"]
    print(f"export: {out} ({result['file_mb']:.2f} MiB), agreement {gate['agreement']:.4f} on {gate['images']} test images, "
          f"max probability difference {gate['max_abs_diff']:.1e}; batch 1: torch {speed['batch_1']['torch_ms']:.3f} ms, "
          f"ONNX Runtime {speed['batch_1']['onnx_ms']:.3f} ms per image")


if __name__ == "__main__":
    app()
