"""Download stage: materialise `data.source` as `<out>/<class>/<image>` folders, or (multi-label)
`<out>/images/...` plus `<out>/labels.csv` with one 0/1 column per label. Files that are not
usable images are skipped; the report lists each with its reason, and duplicates.

\b
    python stages/download.py --params params.yaml --out data/raw --metrics metrics/download
"""

import sys
from pathlib import Path
from typing import Annotated

import typer

from imgpipe.cli import make_app, reports_user_errors
from imgpipe.layout import REPORT_FILE
from imgpipe.data.sources import LabelOptions, download
from imgpipe.params import load_params

app = make_app()


@app.command(help=__doc__)
@reports_user_errors
def main(
    params: Annotated[Path, typer.Option(help="Params file; reads `data` and `task`.")] = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="Folder to write.")] = Path("data/raw"),
    metrics: Annotated[
        Path, typer.Option(help="Folder for report.json (every skipped file, duplicate, conversion) and metrics.json.")
    ] = Path("metrics/download"),
) -> None:
    p = load_params(params)
    options = LabelOptions(p.task, p.data.annotations, p.data.image_column, p.data.labels_column)
    done = download(
        p.data.source, out, p.data.sha256, p.data.limit, options, metrics, max_extract_gb=p.data.max_extract_gb
    )
    for note in done.notes:
        print(f"download: {note}", file=sys.stderr)
    print(f"download: {done.summary()} -> {out} (details: {metrics / REPORT_FILE})")


if __name__ == "__main__":
    app()
