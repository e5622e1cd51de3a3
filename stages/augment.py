"""Augment stage: copy every original image and add rotated, inverted and sheared variants; a
sample sheet of a few sources beside their variants goes to the metrics folder.

\b
    python stages/augment.py --params params.yaml --raw data/raw --out data/augmented \\
        --metrics metrics/augment
"""

from pathlib import Path
from typing import Annotated

import typer

from imgpipe.core.layout import AUGMENT_METRICS, AUGMENTED, RAW
from imgpipe.core.params import load_params
from imgpipe.core.stage_app import make_app, reports_user_errors
from imgpipe.data.augment import augment_dataset

app = make_app()


@app.command(help=__doc__)
@reports_user_errors
def main(
    params: Annotated[Path, typer.Option(help="Params file; reads `seed` and `augment`.")] = Path("params.yaml"),
    raw: Annotated[Path, typer.Option(help="Images from the download stage.")] = RAW,
    out: Annotated[Path, typer.Option(help="Folder for the variants' shards and manifest.csv.")] = AUGMENTED,
    metrics: Annotated[Path, typer.Option(help="Folder for the sample sheet, plots/images/samples.png.")] = AUGMENT_METRICS,
) -> None:
    p = load_params(params)
    manifest = augment_dataset(raw, out, p.augment, seed=p.seed, samples=metrics)
    originals = int((manifest["transform"] == "original").sum())
    print(f"augment: {originals} originals -> {len(manifest)} images in {out}")


if __name__ == "__main__":
    app()
