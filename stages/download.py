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

from imgpipe.core.layout import DOWNLOAD_METRICS, RAW, REPORT_FILE
from imgpipe.core.params import load_params
from imgpipe.core.stage_app import make_app, reports_user_errors
from imgpipe.data.sources import LabelOptions, download

app = make_app()


@app.command(help=__doc__)
@reports_user_errors
def main(
    params: Annotated[Path, typer.Option(help="Params file; reads `data` and `task`.")] = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="Folder to write.")] = RAW,
    metrics: Annotated[
        Path, typer.Option(help="Folder for report.json (every skipped file, duplicate, conversion) and metrics.json.")
    ] = DOWNLOAD_METRICS,
) -> None:
    p = load_params(params)
    d = p.data
    options = LabelOptions(p.task, d.annotations, d.image_column, d.labels_column, d.labels_from, d.filename_pattern)
    done = download(d.source, out, d.sha256, d.limit, options, metrics, max_extract_gb=d.max_extract_gb)
    for note in done.notes:
        print(f"download: {note}", file=sys.stderr)
    print(f"download: {done.summary()} -> {out} (details: {metrics / REPORT_FILE})")


if __name__ == "__main__":
    app()
