"""Download stage: materialise `data.source` as `<out>/<class>/<image>` folders, or (multi-label)
`<out>/images/...` plus `<out>/labels.csv` with one 0/1 column per label.

\b
    python stages/download.py --params params.yaml --out data/raw
"""

from pathlib import Path
from typing import Annotated

import typer

from imgpipe.cli import make_app, reports_user_errors
from imgpipe.data.sources import LabelOptions, download
from imgpipe.params import load_params

app = make_app()


@app.command(help=__doc__)
@reports_user_errors
def main(
    params: Annotated[Path, typer.Option(help="Params file; reads `data` and `task`.")] = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="Folder to write.")] = Path("data/raw"),
) -> None:
    p = load_params(params)
    options = LabelOptions(p.task, p.data.annotations, p.data.image_column, p.data.labels_column)
    summary = download(p.data.source, out, sha256=p.data.sha256, limit=p.data.limit, labels=options)
    kind = "labels (multi-label)" if summary.multilabel else "classes"
    print(f"download: {summary.images} images, {len(summary.counts)} {kind} -> {out}")


if __name__ == "__main__":
    app()
