"""Download stage: materialise `data.source` as `<out>/<class>/<image>` folders.

\b
    python stages/download.py --params params.yaml --out data/raw
"""

from pathlib import Path
from typing import Annotated

import typer

from imgpipe.cli import make_app, reports_user_errors
from imgpipe.data.sources import download
from imgpipe.params import load_params

app = make_app()


@app.command(help=__doc__)
@reports_user_errors
def main(
    params: Annotated[Path, typer.Option(help="Params file; reads `data`.")] = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="Folder to write, one sub-folder per class.")] = Path("data/raw"),
) -> None:
    p = load_params(params)
    counts = download(p.data.source, out, sha256=p.data.sha256, limit=p.data.limit)
    print(f"download: {sum(counts.values())} images in {len(counts)} classes -> {out}")


if __name__ == "__main__":
    app()
