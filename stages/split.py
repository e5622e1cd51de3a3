"""Split stage: write the annotation file (path, label, source, transform, split).

\b
    python stages/split.py --params params.yaml --augmented data/augmented \\
        --out data/annotations.csv --metrics metrics/split
"""

from pathlib import Path
from typing import Annotated

import typer

from imgpipe.core.layout import ANNOTATIONS, AUGMENTED, SPLIT_METRICS
from imgpipe.core.params import load_params
from imgpipe.core.stage_app import make_app, reports_user_errors
from imgpipe.data.split import write_split

app = make_app()


@app.command(help=__doc__)
@reports_user_errors
def main(
    params: Annotated[Path, typer.Option(help="Params file; reads `seed` and `split`.")] = Path("params.yaml"),
    augmented: Annotated[Path, typer.Option(help="Output of the augment stage.")] = AUGMENTED,
    out: Annotated[Path, typer.Option(help="Annotation file to write.")] = ANNOTATIONS,
    metrics: Annotated[Path, typer.Option(help="Folder for class counts per split.")] = SPLIT_METRICS,
) -> None:
    p = load_params(params)
    table = write_split(augmented, out, metrics, p.split, seed=p.seed)
    sizes = table["split"].value_counts()
    print("split: " + ", ".join(f"{s} {sizes.get(s, 0)}" for s in ("train", "val", "test")) + f" -> {out}")


if __name__ == "__main__":
    app()
