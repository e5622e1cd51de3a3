"""The `imgpipe` command, installed with the package.

\b
    imgpipe review --base main                               # Markdown to stdout
    imgpipe review --base origin/main --out review/review.md # plus PNG plots in review/review_files/
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from imgpipe.cli import make_app, reports_user_errors
from imgpipe.errors import UserError
from imgpipe.review import review as build_review
from imgpipe.review.report import plots_folder
from imgpipe.review.revisions import WORKSPACE
from imgpipe.review.stats import RESAMPLES

app = make_app()


@app.callback(help=__doc__)
def main() -> None:
    """Subcommands of imgpipe."""


@app.command(help="Compare the committed results of two revisions: what changed, and is it more than noise?")
@reports_user_errors
def review(
    base: Annotated[str, typer.Option(help="Revision to compare against: the pull request's target (main, origin/main, a SHA).")],
    head: Annotated[str, typer.Option(help="Revision under review; `workspace` is the working tree.")] = WORKSPACE,
    out: Annotated[Path | None, typer.Option(help="Write the Markdown here, and the plots as PNG files into <stem>_files/ beside it.")] = None,
    fail_stale: Annotated[bool, typer.Option(help="Exit 1 after writing the report when the head's results are stale.")] = False,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples for the intervals.")] = RESAMPLES,
) -> None:
    result = build_review(Path.cwd(), base, head, out, resamples)
    if out is None:
        sys.stdout.write(result.markdown)
    else:
        print(f"review: {out}, {len(result.plots)} plots in {plots_folder(out)}", file=sys.stderr)
    if fail_stale and result.stale:
        raise UserError(f"the head's committed results are stale ({', '.join(result.stale)}): rerun dvc repro and commit dvc.lock and metrics/")


if __name__ == "__main__":
    app()
